import { createHash } from "node:crypto";
import { crc32 } from "node:zlib";
import {
  BlockIntegrityError,
  CorruptObjectError,
  InvalidArgumentError,
  UnsupportedFormatError,
} from "../errors.ts";
import type { ObjectStore } from "../ports/object-store.ts";
import type { BlockRef } from "./block-ref.ts";
import { ZERO_REF } from "./block-ref.ts";
import { BLOCK_SIZE, equalBytes, isAllZero, randomId, sha256, toHex } from "./bytes.ts";
import {
  Codec,
  type CodecId,
  type CompressionChoice,
  CompressionProbe,
  type CompressionProbeOptions,
  decodeBlock,
  encodeBlock,
  isKnownCodec,
  looksIncompressible,
} from "./codec.ts";
import { keys, type Repo } from "./layout.ts";

/*
 * Segment object (docs/format.md, "Segments"), little-endian:
 *   data      stored blocks back to back
 *   footer    segmentId[16] blockCount:u32 then per block: sha256[32] offset:u32 length:u32 codec:u8
 *   trailer   magic "CGMSEG\0\0"[8] major:u16 minor:u16 footerLength:u32 dataLength:u32
 *             reserved:u32(0) sha256[32] of (footer ‖ the trailer's first 24 bytes)   = 56 bytes
 */
export const SEGMENT_MAGIC = new TextEncoder().encode("CGMSEG\0\0");
export const SEGMENT_FORMAT = { major: 2, minor: 0 } as const;
/** Bytes of the trailer covered by its checksum (everything before the checksum). */
const TRAILER_SEALED = 24;
export const SEGMENT_TRAILER_BYTES = 56;
const FOOTER_HEAD = 20;
const FOOTER_ENTRY = 41;

export const MiB = 1024 * 1024;
export const DEFAULT_SEGMENT_BYTES = 32 * MiB;
export const MIN_SEGMENT_BYTES = 8 * MiB;
export const MAX_SEGMENT_BYTES = 128 * MiB;

export interface SegmentFooterEntry {
  readonly sha256: Uint8Array;
  readonly offset: number;
  readonly length: number;
  readonly codec: CodecId;
}

export interface SegmentFooter {
  readonly segmentId: string;
  readonly dataLength: number;
  readonly entries: readonly SegmentFooterEntry[];
}

/** Encodes footer + trailer for a segment whose data region is `dataLength` bytes. */
export function encodeSegmentTail(
  segmentId: string,
  dataLength: number,
  entries: readonly SegmentFooterEntry[],
): Uint8Array {
  const footerLength = FOOTER_HEAD + entries.length * FOOTER_ENTRY;
  const out = new Uint8Array(footerLength + SEGMENT_TRAILER_BYTES);
  const dv = new DataView(out.buffer);
  out.set(Buffer.from(segmentId, "hex"), 0);
  dv.setUint32(16, entries.length, true);
  let at = FOOTER_HEAD;
  for (const e of entries) {
    out.set(e.sha256, at);
    dv.setUint32(at + 32, e.offset, true);
    dv.setUint32(at + 36, e.length, true);
    dv.setUint8(at + 40, e.codec);
    at += FOOTER_ENTRY;
  }
  out.set(SEGMENT_MAGIC, at);
  dv.setUint16(at + 8, SEGMENT_FORMAT.major, true);
  dv.setUint16(at + 10, SEGMENT_FORMAT.minor, true);
  dv.setUint32(at + 12, footerLength, true);
  dv.setUint32(at + 16, dataLength, true);
  dv.setUint32(at + 20, 0, true);
  out.set(sha256(out.subarray(0, at + TRAILER_SEALED)), at + TRAILER_SEALED);
  return out;
}

export interface SegmentTrailer {
  readonly footerLength: number;
  readonly dataLength: number;
  /** The trailer's checksum: SHA-256 of footer ‖ the trailer's first 24 bytes. */
  readonly sha256: Uint8Array;
  /** The trailer's first 24 bytes (covered by the checksum with the footer). */
  readonly sealed: Uint8Array;
}

export function parseSegmentTrailer(bytes: Uint8Array, key: string, objectSize: number): SegmentTrailer {
  if (bytes.byteLength !== SEGMENT_TRAILER_BYTES) {
    throw new CorruptObjectError(key, undefined, `segment trailer is ${bytes.byteLength} bytes, expected 56`);
  }
  if (!equalBytes(bytes.subarray(0, 8), SEGMENT_MAGIC)) {
    throw new CorruptObjectError(key, undefined, "segment trailer magic is not CGMSEG");
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = dv.getUint16(8, true);
  const minor = dv.getUint16(10, true);
  if (major !== SEGMENT_FORMAT.major) {
    throw new UnsupportedFormatError(key, `segment ${major}.${minor}`, `segment ${SEGMENT_FORMAT.major}.x`);
  }
  const footerLength = dv.getUint32(12, true);
  const dataLength = dv.getUint32(16, true);
  if (dv.getUint32(20, true) !== 0) {
    throw new CorruptObjectError(key, undefined, "segment trailer's reserved field is not 0");
  }
  if (dataLength + footerLength + SEGMENT_TRAILER_BYTES !== objectSize) {
    throw new CorruptObjectError(
      key,
      undefined,
      `segment is ${objectSize} bytes but its trailer describes ${dataLength + footerLength + SEGMENT_TRAILER_BYTES}`,
    );
  }
  return {
    footerLength,
    dataLength,
    sha256: bytes.slice(TRAILER_SEALED, SEGMENT_TRAILER_BYTES),
    sealed: bytes.slice(0, TRAILER_SEALED),
  };
}

export function parseSegmentFooter(bytes: Uint8Array, key: string, trailer: SegmentTrailer): SegmentFooter {
  const digest = createHash("sha256").update(bytes).update(trailer.sealed).digest();
  if (bytes.byteLength !== trailer.footerLength || !equalBytes(digest, trailer.sha256)) {
    throw new CorruptObjectError(key, undefined, "segment footer and trailer fail their SHA-256 check");
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = dv.getUint32(16, true);
  if (FOOTER_HEAD + count * FOOTER_ENTRY !== bytes.byteLength) {
    throw new CorruptObjectError(key, undefined, `segment footer length does not match ${count} blocks`);
  }
  const entries: SegmentFooterEntry[] = [];
  let end = 0;
  for (let i = 0, at = FOOTER_HEAD; i < count; i++, at += FOOTER_ENTRY) {
    const codec = dv.getUint8(at + 40);
    const offset = dv.getUint32(at + 32, true);
    const length = dv.getUint32(at + 36, true);
    if (
      !isKnownCodec(codec) ||
      codec === Codec.zero ||
      offset !== end ||
      offset + length > trailer.dataLength
    ) {
      throw new CorruptObjectError(key, undefined, `segment footer entry ${i} is invalid`);
    }
    end = offset + length;
    entries.push({ sha256: bytes.slice(at, at + 32), offset, length, codec });
  }
  if (end !== trailer.dataLength) {
    throw new CorruptObjectError(
      key,
      undefined,
      `segment footer covers ${end} of ${trailer.dataLength} data bytes`,
    );
  }
  return { segmentId: toHex(bytes.subarray(0, 16)), dataLength: trailer.dataLength, entries };
}

/** Reads and checks a segment's footer with one or two ranged GETs. */
export async function readSegmentFooter(store: ObjectStore, key: string): Promise<SegmentFooter> {
  const guess = 64 * 1024;
  const tail = await store.get(key, { range: { suffix: guess } });
  if (tail.body.byteLength < SEGMENT_TRAILER_BYTES) {
    throw new CorruptObjectError(key, tail.versionId, `segment is only ${tail.body.byteLength} bytes`);
  }
  const trailer = parseSegmentTrailer(
    tail.body.subarray(tail.body.byteLength - SEGMENT_TRAILER_BYTES),
    key,
    tail.size,
  );
  let footerBytes: Uint8Array;
  if (trailer.footerLength + SEGMENT_TRAILER_BYTES <= tail.body.byteLength) {
    const end = tail.body.byteLength - SEGMENT_TRAILER_BYTES;
    footerBytes = tail.body.subarray(end - trailer.footerLength, end);
  } else {
    const start = trailer.dataLength;
    footerBytes = (await store.get(key, { range: { start, end: start + trailer.footerLength } })).body;
  }
  return parseSegmentFooter(footerBytes, key, trailer);
}

/** Checks a stored block read from `key` and returns its raw bytes. */
export function openStoredBlock(
  key: string,
  ref: BlockRef,
  stored: Uint8Array,
  blockIndex?: number,
): Uint8Array {
  let raw: Uint8Array;
  try {
    raw = decodeBlock(ref.codec, stored, BLOCK_SIZE);
  } catch (cause) {
    throw new BlockIntegrityError(key, blockIndex, `codec ${ref.codec} cannot decode it`, { cause });
  }
  if (raw.byteLength !== BLOCK_SIZE) {
    throw new BlockIntegrityError(key, blockIndex, `decoded to ${raw.byteLength} bytes`);
  }
  if (!equalBytes(sha256(raw), ref.sha256)) {
    throw new BlockIntegrityError(key, blockIndex, `expected ${toHex(ref.sha256)}`);
  }
  return raw;
}

/** Looks up blocks the group already stores, by SHA-256 of the raw block. */
export interface DedupLookup {
  lookup(hashes: readonly Uint8Array[]): Promise<readonly (BlockRef | undefined)[]>;
  /**
   * Called by the writer for every block it stored, and only once the segment holding it was
   * uploaded and the store confirmed it (never for a block of a failed upload).
   */
  record?(hash: Uint8Array, ref: BlockRef): void;
}

export interface SegmentWriterOptions {
  readonly repo: Repo;
  /** Segment size at which the writer seals a segment. @default 32 MiB (allowed 8–128 MiB) */
  readonly targetBytes?: number;
  /** Allow targets below 8 MiB (tests only). @default false */
  readonly allowSmallSegments?: boolean;
  /** @default "zstd" */
  readonly compression?: CompressionChoice;
  /** Multipart part size for segments larger than it. @default 8 MiB */
  readonly partBytes?: number;
  /** Blocks the group already stores, consulted before storing a block. @default none */
  readonly dedup?: DedupLookup;
  /** When to stop trying to compress runs of incompressible blocks (core/format/codec.ts). */
  readonly compressionProbe?: CompressionProbeOptions;
  /**
   * More user metadata for every segment object (lower-case keys, ASCII values), e.g. the run that
   * writes it (`SEGMENT_RUN_ID_METADATA`: Revert deletes only segments that name the reverted run).
   */
  readonly metadata?: Readonly<Record<string, string>>;
  /**
   * Called before each segment upload starts; a rejection fails the upload (nothing is written) and
   * the writer: the next `add` or `close` throws it. Transfer checks here that its run still holds
   * the group (core/run-guard.ts), so a zombie of a run that lost the group uploads nothing more.
   */
  readonly beforeUpload?: (segment: { readonly segmentId: string; readonly key: string }) => Promise<void>;
}

/** User metadata key naming the run whose Transfer wrote a segment (docs/format.md, "Segments"). */
export const SEGMENT_RUN_ID_METADATA = "cgmirror-run-id";

export interface SegmentInfo {
  readonly segmentId: string;
  readonly key: string;
  readonly bytes: number;
  readonly blocks: number;
}

export interface SegmentWriterStats {
  blocks: number;
  zeroBlocks: number;
  dedupedBlocks: number;
  storedBlocks: number;
  rawBytes: number;
  storedBytes: number;
  segments: number;
  /** Stored blocks written raw without a compression attempt (CompressionProbe, or random-looking bytes). */
  compressionSkipped: number;
}

/** Room kept after target + one block for the footer and trailer (≈ 6,300 footer entries). */
const TAIL_RESERVE = 256 * 1024;

/**
 * Packs verified 512 KiB blocks into immutable segments and uploads them. Holds at most two segments
 * in memory (one filling, one uploading). Refs returned by `add` are durable only after `close()`.
 * Blocks with the same SHA-256 are stored once per writer (and not at all if `dedup` knows them).
 *
 * Buffers: each segment is assembled in one preallocated buffer (target + one block + footer room),
 * written in place and uploaded as it is (no chunk list, no concatenation); the writer owns two such
 * buffers and reuses them, so segment memory is allocated (and page-faulted) once per writer. `add`
 * copies what it stores before it resolves: the caller may reuse or recycle its block buffer as soon
 * as `add` has resolved. The segment's CRC-32 is accumulated block by block while the bytes are hot
 * and sent as the PUT's full-object checksum (S3 verifies it); the per-block SHA-256 (the block's
 * identity) is the only SHA-256 pass.
 */
export class SegmentWriter {
  readonly #repo: Repo;
  readonly #target: number;
  readonly #compression: CompressionChoice;
  readonly #probe: CompressionProbe;
  readonly #partBytes: number;
  readonly #dedup: DedupLookup | undefined;
  readonly #metadata: Readonly<Record<string, string>>;
  readonly #beforeUpload: SegmentWriterOptions["beforeUpload"];
  /** The first failed upload (or beforeUpload): every later add/close throws it. */
  #failure: { error: unknown } | undefined;
  readonly #seen = new Map<string, BlockRef>();
  readonly #written: SegmentInfo[] = [];
  readonly #capacity: number;
  #id = randomId();
  /** The segment being filled (allocated on the first stored block). */
  #buf: Buffer | undefined;
  /** A buffer whose upload finished, ready for the next segment. */
  #spare: Buffer | undefined;
  #crc = 0;
  #entries: SegmentFooterEntry[] = [];
  #refs: BlockRef[] = [];
  #size = 0;
  #uploading: Promise<void> | undefined;
  #closed = false;
  readonly stats: SegmentWriterStats = {
    blocks: 0,
    zeroBlocks: 0,
    dedupedBlocks: 0,
    storedBlocks: 0,
    rawBytes: 0,
    storedBytes: 0,
    segments: 0,
    compressionSkipped: 0,
  };

  constructor(options: SegmentWriterOptions) {
    const target = options.targetBytes ?? DEFAULT_SEGMENT_BYTES;
    const min = options.allowSmallSegments ? 1 : MIN_SEGMENT_BYTES;
    if (!Number.isInteger(target) || target < min || target > MAX_SEGMENT_BYTES) {
      throw new InvalidArgumentError(`expected a segment target of 8–128 MiB in bytes, got ${target}`);
    }
    this.#repo = options.repo;
    this.#target = target;
    this.#capacity = target + BLOCK_SIZE + TAIL_RESERVE;
    this.#compression = options.compression ?? "zstd";
    this.#probe = new CompressionProbe(options.compressionProbe);
    this.#partBytes = options.partBytes ?? 8 * MiB;
    this.#dedup = options.dedup;
    this.#metadata = { ...options.metadata, "cgmirror-kind": "segment" };
    this.#beforeUpload = options.beforeUpload;
  }

  /**
   * Adds one raw block. `expectedSha256` (e.g. the checksum GetSnapshotBlock returned) is verified.
   * Returns where the block will live once `close()` resolves. The writer keeps no reference to
   * `raw` once this resolves.
   */
  async add(raw: Uint8Array, expectedSha256?: Uint8Array): Promise<BlockRef> {
    if (this.#closed) throw new InvalidArgumentError("SegmentWriter.add after close()");
    if (this.#failure) throw this.#failure.error;
    if (raw.byteLength !== BLOCK_SIZE) {
      throw new InvalidArgumentError(`expected a block of ${BLOCK_SIZE} bytes, got ${raw.byteLength}`);
    }
    const hash = sha256(raw);
    if (expectedSha256 && !equalBytes(hash, expectedSha256)) {
      throw new BlockIntegrityError(
        "(source)",
        undefined,
        `source checksum ${toHex(expectedSha256)} does not match`,
      );
    }
    this.stats.blocks++;
    this.stats.rawBytes += raw.byteLength;
    if (isAllZero(raw)) {
      this.stats.zeroBlocks++;
      return ZERO_REF;
    }
    const hex = toHex(hash);
    const known = this.#seen.get(hex) ?? (this.#dedup ? (await this.#dedup.lookup([hash]))[0] : undefined);
    if (known) {
      this.#seen.set(hex, known);
      this.stats.dedupedBlocks++;
      return known;
    }
    const { codec, data } = this.#encode(raw);
    const ref: BlockRef = {
      segment: this.#id,
      offset: this.#size,
      length: data.byteLength,
      codec,
      sha256: hash,
    };
    // Copy into the segment buffer: the caller may reuse its buffer once add() resolves.
    this.#buf ??= this.#takeBuffer();
    this.#buf.set(data, this.#size);
    this.#crc = crc32(this.#buf.subarray(this.#size, this.#size + data.byteLength), this.#crc);
    this.#entries.push({ sha256: hash, offset: ref.offset, length: ref.length, codec });
    this.#size += data.byteLength;
    this.#seen.set(hex, ref);
    this.#refs.push(ref);
    this.stats.storedBlocks++;
    this.stats.storedBytes += data.byteLength;
    if (this.#size >= this.#target) await this.#seal();
    return ref;
  }

  /** Seals and uploads the last segment and waits for every upload. Returns the segments written. */
  async close(): Promise<readonly SegmentInfo[]> {
    if (!this.#closed) {
      this.#closed = true;
      if (this.#entries.length > 0) await this.#seal();
      await this.#uploading;
      this.#spare = undefined;
    }
    return this.#written;
  }

  #encode(raw: Uint8Array): { codec: CodecId; data: Uint8Array } {
    if (this.#compression === "none") return { codec: Codec.raw, data: raw };
    if (!this.#probe.shouldTry()) {
      this.stats.compressionSkipped++;
      return { codec: Codec.raw, data: raw };
    }
    if (looksIncompressible(raw)) {
      // Random-looking bytes (encrypted, compressed): no attempt, and a miss for the probe's streak.
      this.stats.compressionSkipped++;
      this.#probe.record(false);
      return { codec: Codec.raw, data: raw };
    }
    const out = encodeBlock(raw, this.#compression);
    this.#probe.record(out.codec !== Codec.raw);
    return out;
  }

  #takeBuffer(): Buffer {
    const b = this.#spare ?? Buffer.allocUnsafeSlow(this.#capacity);
    this.#spare = undefined;
    return b;
  }

  async #seal(): Promise<void> {
    const id = this.#id;
    const tail = encodeSegmentTail(id, this.#size, this.#entries);
    let buf = this.#buf ?? this.#takeBuffer();
    const bytes = this.#size + tail.byteLength;
    if (bytes > buf.byteLength) {
      // A footer beyond the reserve (thousands of tiny compressed blocks): one bigger buffer, once.
      const bigger = Buffer.allocUnsafeSlow(bytes);
      buf.copy(bigger, 0, 0, this.#size);
      buf = bigger;
    }
    buf.set(tail, this.#size);
    const crc = crc32(tail, this.#crc);
    const blocks = this.#entries.length;
    const refs = this.#refs;
    this.#id = randomId();
    this.#buf = undefined;
    this.#crc = 0;
    this.#entries = [];
    this.#refs = [];
    this.#size = 0;
    await this.#uploading; // at most one segment uploading while the next one fills
    const key = keys.segment(this.#repo, id);
    // A plain Uint8Array view: a store that keeps `body.slice()` then copies (on a Buffer it would be
    // a view of a buffer this writer reuses).
    const body = new Uint8Array(buf.buffer, buf.byteOffset, bytes);
    const before = this.#beforeUpload;
    const upload = before
      ? before({ segmentId: id, key }).then(() => this.#upload(key, body, crc))
      : this.#upload(key, body, crc);
    this.#uploading = upload.then(() => {
      this.#written.push({ segmentId: id, key, bytes, blocks });
      this.stats.segments++;
      if (buf.byteLength === this.#capacity && !this.#closed) this.#spare = buf;
      // Durable now: only from here may other writers of this attempt reference these blocks.
      for (const ref of refs) this.#dedup?.record?.(ref.sha256, ref);
    });
    // Surface an upload failure on the next add/close rather than as an unhandled rejection.
    this.#uploading.catch((error: unknown) => {
      this.#failure ??= { error };
    });
  }

  async #upload(key: string, body: Uint8Array, crc: number): Promise<void> {
    const store = this.#repo.store;
    const metadata = this.#metadata;
    if (body.byteLength <= this.#partBytes) {
      const checksumCrc32 = new Uint8Array(4);
      new DataView(checksumCrc32.buffer).setUint32(0, crc >>> 0, false);
      // No If-None-Match: the key is a fresh random id, and an SDK retry of a PUT that did land
      // would otherwise fail with 412.
      await store.put(key, body, { checksumCrc32, metadata });
      return;
    }
    const upload = await store.createMultipartUpload(key, { metadata, checksumSha256: true });
    try {
      let part = 1;
      for (let at = 0; at < body.byteLength; at += this.#partBytes) {
        // Parts are views of the segment buffer (all of partBytes but the last); nothing is copied.
        await upload.uploadPart(part++, body.subarray(at, Math.min(body.byteLength, at + this.#partBytes)));
      }
      await upload.complete();
    } catch (error) {
      await upload.abort().catch(() => {});
      throw error;
    }
  }
}
