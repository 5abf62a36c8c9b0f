import { InvalidArgumentError } from "../errors.ts";
import type { ObjectStore } from "../ports/object-store.ts";
import type { BlockRef } from "./block-ref.ts";
import { toHex } from "./bytes.ts";
import * as columnar from "./columnar-run.ts";

/*
 * Dedup run (docs/format.md, "Dedup runs"): an immutable table SHA-256 → stored ref, sorted by hash.
 * The columnar run layout of core/format/columnar-run.ts (pages | directory | trailer, trailer kind 2) with:
 *   page       "CGHP" count:u32 segCount:u16 reserved:u16 segTable[segCount×16]
 *              then count entries of 43 bytes: sha256[32] seg:u16 offset:u32 length:u32 codec:u8
 *   directory  per page: firstKey[32] lastKey[32] offset:u64 length:u32 count:u32 sha256[32] (112 B)
 */
export const RUN_KIND_HASH_INDEX = 2;
export const DEFAULT_HASH_PAGE_ENTRIES = 2048; // ≈ 88 KiB: a lookup that hits reads little

/** Byte-wise order of two 32-byte keys (views are fine). */
export function compareKeys(a: Uint8Array, b: Uint8Array): number {
  return compareAt(a, 0, b, 0);
}

/** Byte-wise order of the 32-byte keys at `a[ao..]` and `b[bo..]` (no allocation). */
export function compareAt(a: Uint8Array, ao: number, b: Uint8Array, bo: number): number {
  for (let i = 0; i < 32; i++) {
    const d = a[ao + i]! - b[bo + i]!;
    if (d !== 0) return d;
  }
  return 0;
}

/** SHA-256 keys: 32 bytes per entry, ordered byte-wise. */
const HASH_KEY: columnar.RunKey<Uint8Array, Uint8Array> = {
  bytes: 32,
  column: (count) => new Uint8Array(count * 32),
  load: (col, i, src, _dv, at) => col.set(src.subarray(at, at + 32), i * 32),
  store: (hash, dst, _dv, at) => dst.set(hash.subarray(0, 32), at),
  compare: (a, i, b, j) => compareAt(a, i * 32, b, j * 32),
  compareTo: (col, i, hash) => compareAt(col, i * 32, hash, 0),
  copy: (src, i, dst, j) => dst.set(src.subarray(i * 32, i * 32 + 32), j * 32),
};

/** A decoded dedup page, column-wise. `keys` (count × 32) are the blocks' hashes. */
export class HashPage extends columnar.Page<Uint8Array, Uint8Array> {
  constructor(columns: columnar.PageColumns<Uint8Array>) {
    super(HASH_KEY, columns);
  }

  key(i: number): Uint8Array {
    return this.keys.subarray(i * 32, i * 32 + 32);
  }
}

const HASH_RUN: columnar.RunType<Uint8Array, Uint8Array, HashPage> = {
  what: "dedup",
  kind: RUN_KIND_HASH_INDEX,
  pageMagic: 0x50484743, // "CGHP" little-endian
  magicName: "CGHP",
  key: HASH_KEY,
  blockHash: false,
  zeroRefs: false,
  objectKind: "dedup-run",
  tailGuess: 256 * 1024,
  page: (columns) => new HashPage(columns),
};

export interface HashRunInfo {
  readonly key: string;
  readonly entries: number;
  readonly bytes: number;
  /** The run's checksum (trailer SHA-256, hex). */
  readonly sha256: string;
}

/** Streams strictly ascending (by hash) entries into a new dedup run. Memory: one page + one part. */
export class HashRunWriter extends columnar.RunWriter<Uint8Array, Uint8Array> {
  readonly #last = new Uint8Array(32);

  constructor(store: ObjectStore, key: string, options: { pageEntries?: number; partBytes?: number } = {}) {
    super(HASH_RUN, store, key, DEFAULT_HASH_PAGE_ENTRIES, options);
  }

  append(hash: Uint8Array, ref: BlockRef): Promise<void> | undefined {
    if (ref.segment === null)
      throw new InvalidArgumentError("dedup runs hold stored blocks only (no zero refs)");
    return this.appendRaw(hash, ref.segment, ref.offset, ref.length, ref.codec);
  }

  appendRaw(
    hash: Uint8Array,
    segment: string,
    offset: number,
    length: number,
    codec: number,
  ): Promise<void> | undefined {
    if (this.entries > 0 && compareKeys(this.#last, hash) >= 0) {
      throw new InvalidArgumentError(
        `dedup entries must be strictly ascending by hash; got ${toHex(hash.subarray(0, 32))}`,
      );
    }
    this.#last.set(hash.subarray(0, 32));
    return this.add(hash, segment, offset, length, codec);
  }

  /** Appends entry `i` of `page` without materialising a ref. */
  appendFrom(page: HashPage, i: number): Promise<void> | undefined {
    return this.appendRaw(
      page.key(i),
      page.segmentOf(i)!,
      page.offsets[i]!,
      page.lengths[i]!,
      page.codecs[i]!,
    );
  }

  /** Writes the directory and trailer and completes the object. */
  async finish(): Promise<HashRunInfo> {
    const { key, entries, bytes, sha256 } = await this.finishRun();
    return { key, entries, bytes, sha256 };
  }
}

export class HashRunReader extends columnar.RunReader<Uint8Array, Uint8Array, HashPage> {
  /** Opens a dedup run: trailer, directory and their checksum (pinned by `expected.sha256`). */
  static async open(store: ObjectStore, key: string, expected: columnar.RunPin = {}): Promise<HashRunReader> {
    return new HashRunReader(HASH_RUN, store, key, await columnar.openRun(HASH_RUN, store, key, expected));
  }
}

/** K-way merge of dedup runs (oldest → newest; on equal hashes the newest wins). Emits (page, i). */
export const mergeHashRuns = (
  readers: readonly HashRunReader[],
  emit: columnar.PageEmit<HashPage>,
): Promise<number> => columnar.mergeRuns(HASH_KEY, readers, emit);
