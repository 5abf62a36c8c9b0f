import {
  brotliCompressSync,
  brotliDecompressSync,
  constants,
  gunzipSync,
  gzipSync,
  zstdCompressSync,
  zstdDecompressSync,
} from "node:zlib";
import { InvalidArgumentError } from "../errors.ts";

/**
 * Per-block codecs. The numeric ids are part of the on-disk format (docs/format.md).
 * `zero` is never stored in a segment: it marks an all-zero (or trimmed) block in the index.
 */
export const Codec = { raw: 0, zstd: 1, brotli: 2, gzip: 3, zero: 255 } as const;
export type CodecId = (typeof Codec)[keyof typeof Codec];
export type CodecName = keyof typeof Codec;

const NAMES = new Map<number, CodecName>(Object.entries(Codec).map(([k, v]) => [v, k as CodecName]));

export function codecName(id: number): CodecName | undefined {
  return NAMES.get(id);
}

export function isKnownCodec(id: number): id is CodecId {
  return NAMES.has(id);
}

/** Compression used when writing. `none` stores blocks raw. */
export type CompressionChoice = "none" | "zstd" | "brotli" | "gzip";

/**
 * Compresses `raw` with `choice` at a fast level. Returns the raw bytes with codec `raw` when
 * compression is off or would not make the block smaller (a block is never expanded).
 */
export function encodeBlock(
  raw: Uint8Array,
  choice: CompressionChoice,
): { codec: CodecId; data: Uint8Array } {
  if (choice === "none") return { codec: Codec.raw, data: raw };
  if (choice !== "zstd" && choice !== "brotli" && choice !== "gzip") {
    throw new InvalidArgumentError(`expected compression none|zstd|brotli|gzip, got ${String(choice)}`);
  }
  // An output that reaches the input's size is useless (the block is stored raw): let zlib give up as
  // soon as it gets there instead of finishing and concatenating it (measured: −35 % CPU on an
  // incompressible 512 KiB block with zstd-1).
  const maxOutputLength = Math.max(1, raw.byteLength - 1);
  let out: Uint8Array;
  let codec: CodecId;
  // The give-up is an exception (ERR_BUFFER_TOO_LARGE) on most incompressible blocks; its stack trace
  // is pure cost. Synchronous section: the limit is restored before anything else runs.
  const stackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    switch (choice) {
      case "zstd":
        out = zstdCompressSync(raw, {
          params: { [constants.ZSTD_c_compressionLevel]: 1 },
          maxOutputLength,
        });
        codec = Codec.zstd;
        break;
      case "brotli":
        out = brotliCompressSync(raw, {
          params: {
            [constants.BROTLI_PARAM_QUALITY]: 1,
            [constants.BROTLI_PARAM_SIZE_HINT]: raw.byteLength,
          },
          maxOutputLength,
        });
        codec = Codec.brotli;
        break;
      default:
        out = gzipSync(raw, { level: 1, maxOutputLength });
        codec = Codec.gzip;
        break;
    }
  } catch (error) {
    if ((error as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") return { codec: Codec.raw, data: raw };
    throw error;
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
  if (out.byteLength >= raw.byteLength) return { codec: Codec.raw, data: raw };
  return { codec, data: new Uint8Array(out.buffer, out.byteOffset, out.byteLength) };
}

/**
 * Decodes a stored block to its raw bytes (`rawLength` bounds the output so that a corrupt stream
 * cannot balloon memory). Throws on an unknown codec or a corrupt stream.
 */
export function decodeBlock(codec: number, data: Uint8Array, rawLength: number): Uint8Array {
  switch (codec) {
    case Codec.raw:
      return data;
    // One output chunk (zlib's default is 16 KiB chunks, concatenated at the end): see `oneChunk`.
    case Codec.zstd:
      return toU8(zstdDecompressSync(data, { maxOutputLength: rawLength, chunkSize: oneChunk(rawLength) }));
    case Codec.brotli:
      return toU8(brotliDecompressSync(data, { maxOutputLength: rawLength, chunkSize: oneChunk(rawLength) }));
    case Codec.gzip:
      return toU8(gunzipSync(data, { maxOutputLength: rawLength, chunkSize: oneChunk(rawLength) }));
    case Codec.zero:
      return new Uint8Array(rawLength);
    default:
      throw new InvalidArgumentError(`unknown block codec ${codec}`);
  }
}

/**
 * The zlib `chunkSize` that decodes `rawLength` bytes in one pass: room for the whole output plus a
 * little, so that zlib sees the stream end without a second, empty output chunk. zlib's default (16 KiB)
 * takes 32 passes and a concatenation per 512 KiB block: measured 0.43 → 0.23–0.31 ms (sync) and
 * 1.2–2.1 → 0.35–0.62 ms (async) of CPU per zstd block (docs/performance.md).
 */
export function oneChunk(rawLength: number): number {
  return rawLength + 64;
}

function toU8(b: Buffer): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Slices of a block whose byte histogram `looksIncompressible` reads, and their size. */
const SAMPLE_SLICES = 4;
const SAMPLE_SLICE_BYTES = 4096;
/**
 * Bits per byte at or above which a sample counts as random. Uniform random bytes give ≈ 7.989 on a
 * 16 KiB sample (8 minus the plug-in estimator's bias, 255 / (2 · 16384 · ln 2)); text, code, logs and
 * database pages stay far below 7.5; compressed or encrypted data sits at the top.
 */
const RANDOM_BITS_PER_BYTE = 7.97;

/**
 * True when a block is almost surely incompressible: the bytes of four 4 KiB slices spread over it
 * (16 KiB, ≈ 15 µs to count) have an order-0 entropy of at least 7.97 bits per byte, as encrypted or
 * compressed data has. A zstd-1 attempt that gives up on such a block costs ≈ 0.4 ms (docs/performance.md);
 * the check costs a few percent of that, and a compressible block pays only the check. What it cannot
 * see: repeats of random data longer apart than a slice, within one block (zstd would find them);
 * such a block is stored raw. Blocks under 32 KiB are never judged (always attempted).
 */
export function looksIncompressible(raw: Uint8Array): boolean {
  const n = raw.byteLength;
  if (n < 2 * SAMPLE_SLICES * SAMPLE_SLICE_BYTES) return false;
  const counts = new Uint32Array(256);
  const step = Math.floor((n - SAMPLE_SLICE_BYTES) / (SAMPLE_SLICES - 1));
  for (let s = 0; s < SAMPLE_SLICES; s++) {
    const start = s * step;
    for (let i = start, end = start + SAMPLE_SLICE_BYTES; i < end; i++) counts[raw[i]!]!++;
  }
  const total = SAMPLE_SLICES * SAMPLE_SLICE_BYTES;
  let bits = 0;
  for (let b = 0; b < 256; b++) {
    const c = counts[b]!;
    if (c > 0) bits -= c * Math.log2(c / total);
  }
  return bits / total >= RANDOM_BITS_PER_BYTE;
}

export interface CompressionProbeOptions {
  /** Consecutive blocks that did not shrink before compression attempts are thinned. @default 16 */
  readonly streak?: number;
  /** Then only every `every`-th block is tried, until one shrinks again. @default 8 */
  readonly every?: number;
}

/**
 * Decides block by block whether a compression attempt is worth its CPU. zstd on an incompressible
 * block (encrypted, already compressed) is pure cost (≈ 0.7 CPU-s per GiB at level 1), and such data
 * comes in runs (a file, a region of a database). After `streak` consecutive blocks that did not
 * shrink, only every `every`-th block is tried; the first one that shrinks restores attempts on every
 * block. Deterministic: the decisions depend only on the sequence of outcomes (no clock, no randomness).
 *
 * Usage per block: `if (probe.shouldTry()) { …compress…; probe.record(shrank) }`.
 */
export class CompressionProbe {
  readonly #streak: number;
  readonly #every: number;
  /** Consecutive attempts whose block did not shrink. */
  #misses = 0;
  /** Blocks passed over since the last attempt (while thinning). */
  #skipped = 0;
  /** Attempts skipped in total (stats). */
  skippedTotal = 0;

  constructor(options: CompressionProbeOptions = {}) {
    const streak = options.streak ?? 16;
    const every = options.every ?? 8;
    if (!Number.isInteger(streak) || streak < 1) {
      throw new InvalidArgumentError(`expected compression probe streak as an integer >= 1, got ${streak}`);
    }
    if (!Number.isInteger(every) || every < 1) {
      throw new InvalidArgumentError(`expected compression probe every as an integer >= 1, got ${every}`);
    }
    this.#streak = streak;
    this.#every = every;
  }

  /** True when this block should be compressed; a false counts the block as skipped. */
  shouldTry(): boolean {
    if (this.#misses < this.#streak || this.#skipped + 1 >= this.#every) return true;
    this.#skipped++;
    this.skippedTotal++;
    return false;
  }

  /** The outcome of an attempt that `shouldTry` allowed. */
  record(shrank: boolean): void {
    this.#skipped = 0;
    this.#misses = shrank ? 0 : this.#misses + 1;
  }
}
