/**
 * Shard lists: the changed blocks of one shard, written by the planner and read by the transfer
 * worker (docs/transfer.md, "Shard list format"). Compact binary, little-endian:
 *
 *   header  magic "CGMSHRD\0"[8] major:u16 minor:u16 count:u32 first:u32 end:u32
 *           payloadLength:u32 payloadSha256[32]                                    = 60 bytes
 *   payload count unsigned LEB128 varints; for entry i with block b_i (b_-1 = first - 1):
 *           v_i = (b_i - b_(i-1) - 1) × 2 + absent_i
 *
 * `absent` marks a changed block that the new snapshot does not hold (ListChangedBlocks without a
 * SecondBlockToken): it restores as zeros and is not read. Contiguous runs cost one byte a block.
 */

import { CorruptObjectError, InvalidArgumentError, UnsupportedFormatError } from "../errors.ts";
import { equalBytes, sha256 } from "../format/bytes.ts";
import { keys, type Repo } from "../format/layout.ts";

export const SHARD_LIST_MAGIC = new TextEncoder().encode("CGMSHRD\0");
export const SHARD_LIST_FORMAT = { major: 1, minor: 0 } as const;
export const SHARD_LIST_HEADER_BYTES = 60;
const MAX_BLOCK = 0xffffffff;

/** Appends unsigned LEB128 of `value` (0 ≤ value < 2^53) at `at`; returns the new end. */
export function writeVarint(out: Uint8Array, at: number, value: number): number {
  let v = value;
  while (v >= 0x80) {
    out[at++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  out[at++] = v;
  return at;
}

/** Reads an unsigned LEB128 varint; returns [value, next position]. Throws on truncation / overflow. */
export function readVarint(bytes: Uint8Array, at: number): [number, number] {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 8; i++) {
    if (at >= bytes.byteLength) throw new RangeError("varint is truncated");
    const b = bytes[at++]!;
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, at];
    scale *= 0x80;
  }
  throw new RangeError("varint is longer than 8 bytes");
}

/** Decoded shard list: blocks ascending, `absent[i]` = 1 when block i is not in the new snapshot. */
export interface ShardList {
  readonly first: number;
  readonly end: number;
  readonly blocks: Uint32Array;
  readonly absent: Uint8Array;
}

/** Builds one shard list, entry by entry (ascending). Memory: ~1–2 bytes per entry. */
export class ShardListBuilder {
  readonly first: number;
  #buf = new Uint8Array(4096);
  #len = 0;
  #prev: number;
  #count = 0;
  #absent = 0;

  constructor(first: number) {
    if (!Number.isInteger(first) || first < 0 || first > MAX_BLOCK) {
      throw new InvalidArgumentError(`expected a first block index 0..${MAX_BLOCK}, got ${first}`);
    }
    this.first = first;
    this.#prev = first - 1;
  }

  get count(): number {
    return this.#count;
  }

  get absentCount(): number {
    return this.#absent;
  }

  /** Index of the last block added (first - 1 when empty). */
  get last(): number {
    return this.#prev;
  }

  add(block: number, absent = false): void {
    if (!Number.isInteger(block) || block <= this.#prev || block > MAX_BLOCK) {
      throw new InvalidArgumentError(
        `shard list blocks must be ascending integers ≤ ${MAX_BLOCK}; got ${block} after ${this.#prev}`,
      );
    }
    if (this.#len + 10 > this.#buf.byteLength) {
      const grown = new Uint8Array(this.#buf.byteLength * 2);
      grown.set(this.#buf.subarray(0, this.#len));
      this.#buf = grown;
    }
    this.#len = writeVarint(this.#buf, this.#len, (block - this.#prev - 1) * 2 + (absent ? 1 : 0));
    this.#prev = block;
    this.#count++;
    if (absent) this.#absent++;
  }

  /** Encodes the list covering [first, end). `end` must be above the last block. */
  encode(end: number): Uint8Array {
    if (!Number.isInteger(end) || end <= this.#prev || end > MAX_BLOCK + 1 || end <= this.first) {
      throw new InvalidArgumentError(`shard end ${end} must be above the last block ${this.#prev}`);
    }
    const payload = this.#buf.subarray(0, this.#len);
    const out = new Uint8Array(SHARD_LIST_HEADER_BYTES + this.#len);
    const dv = new DataView(out.buffer);
    out.set(SHARD_LIST_MAGIC, 0);
    dv.setUint16(8, SHARD_LIST_FORMAT.major, true);
    dv.setUint16(10, SHARD_LIST_FORMAT.minor, true);
    dv.setUint32(12, this.#count, true);
    dv.setUint32(16, this.first, true);
    // end may be 2^32 (past the last u32 block): stored as end - 1
    dv.setUint32(20, end - 1, true);
    dv.setUint32(24, this.#len, true);
    out.set(sha256(payload), 28);
    out.set(payload, SHARD_LIST_HEADER_BYTES);
    return out;
  }
}

/** Decodes and checks a shard list; `key` names the object in errors. */
export function decodeShardList(bytes: Uint8Array, key: string): ShardList {
  const fail = (detail: string) => new CorruptObjectError(key, undefined, `shard list ${detail}`);
  if (bytes.byteLength < SHARD_LIST_HEADER_BYTES) throw fail("is truncated");
  if (!equalBytes(bytes.subarray(0, 8), SHARD_LIST_MAGIC)) throw fail("magic is not CGMSHRD");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = dv.getUint16(8, true);
  if (major !== SHARD_LIST_FORMAT.major) {
    throw new UnsupportedFormatError(key, `shard list ${major}.${dv.getUint16(10, true)}`, "shard list 1.x");
  }
  const count = dv.getUint32(12, true);
  const first = dv.getUint32(16, true);
  const end = dv.getUint32(20, true) + 1;
  const len = dv.getUint32(24, true);
  if (SHARD_LIST_HEADER_BYTES + len !== bytes.byteLength) throw fail(`payload is not ${len} bytes`);
  const payload = bytes.subarray(SHARD_LIST_HEADER_BYTES);
  if (!equalBytes(sha256(payload), bytes.subarray(28, 60))) throw fail("payload fails its SHA-256 check");
  const blocks = new Uint32Array(count);
  const absent = new Uint8Array(count);
  let at = 0;
  let prev = first - 1;
  try {
    for (let i = 0; i < count; i++) {
      const [v, next] = readVarint(payload, at);
      at = next;
      const b = prev + 1 + Math.floor(v / 2);
      if (b >= end) throw fail(`entry ${i} (block ${b}) is not below end ${end}`);
      blocks[i] = b;
      absent[i] = v % 2;
      prev = b;
    }
  } catch (error) {
    if (error instanceof RangeError) throw fail(`payload: ${error.message}`);
    throw error;
  }
  if (at !== payload.byteLength) throw fail("payload has trailing bytes");
  return { first, end, blocks, absent };
}

/** Object keys of a run's plan, progress and shard summaries (all under `keys.runPrefix`). */
export const planKeys = {
  /** Per volume plan manifest (JSON): totals, snapshot ids, shard descriptors. */
  manifest: (repo: Repo, runId: string, volumeId: string) =>
    `${keys.runPrefix(repo, runId)}plan/${volumeId}.json`,
  /** All shard descriptors of a volume as one JSON array (for a distributed Map ItemReader). */
  shardIndex: (repo: Repo, runId: string, volumeId: string) =>
    `${keys.runPrefix(repo, runId)}plan/${volumeId}/shards.json`,
  shardList: (repo: Repo, runId: string, volumeId: string, shard: number) =>
    `${keys.runPrefix(repo, runId)}plan/${volumeId}/${pad(shard)}.blocks`,
  /** Written last by a shard's transfer: its summary. Present ⇒ the shard is done. */
  shardSummary: (repo: Repo, runId: string, volumeId: string, shard: number) =>
    `${keys.runPrefix(repo, runId)}shards/${volumeId}/${pad(shard)}.done.json`,
  shardSummaryPrefix: (repo: Repo, runId: string, volumeId: string) =>
    `${keys.runPrefix(repo, runId)}shards/${volumeId}/`,
  progress: (repo: Repo, runId: string, volumeId: string, shard: number) =>
    `${keys.runPrefix(repo, runId)}progress/${volumeId}/${pad(shard)}.json`,
  progressPrefix: (repo: Repo, runId: string) => `${keys.runPrefix(repo, runId)}progress/`,
};

function pad(shard: number): string {
  if (!Number.isInteger(shard) || shard < 0 || shard > 999_999) {
    throw new InvalidArgumentError(`expected a shard number 0..999999, got ${shard}`);
  }
  return String(shard).padStart(6, "0");
}
