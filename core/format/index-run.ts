import { InvalidArgumentError } from "../errors.ts";
import type { ObjectStore } from "../ports/object-store.ts";
import type { BlockRef, IndexEntry } from "./block-ref.ts";
import { Codec } from "./codec.ts";
import * as columnar from "./columnar-run.ts";

/*
 * Index run (docs/format.md, "Index runs"): an immutable, sorted, paged table block → ref, in the
 * columnar run layout of core/format/columnar-run.ts with:
 *   page       "CGPG" …, entries of 47 bytes:
 *              block:u32 seg:u16(0xFFFF = none) offset:u32 length:u32 codec:u8 sha256[32]
 *   directory  per page: firstBlock:u32 lastBlock:u32 offset:u64 length:u32 count:u32 sha256[32] (56 B)
 *   trailer    see core/format/run-trailer.ts (kind 1; its checksum seals the directory and itself)  (64 B)
 */
export { RUN_FORMAT, RUN_MAGIC, RUN_TRAILER_BYTES } from "./run-trailer.ts";
export const RUN_KIND_BLOCK_INDEX = 1;
export const DEFAULT_PAGE_ENTRIES = 32_768;

/** Block numbers: one u32 (little-endian) per entry, ordered numerically. */
const BLOCK_KEY: columnar.RunKey<number, Uint32Array> = {
  bytes: 4,
  column: (count) => new Uint32Array(count),
  load: (col, i, _src, dv, at) => {
    col[i] = dv.getUint32(at, true);
  },
  store: (block, _dst, dv, at) => dv.setUint32(at, block, true),
  compare: (a, i, b, j) => a[i]! - b[j]!,
  compareTo: (col, i, block) => col[i]! - block,
  copy: (src, i, dst, j) => {
    dst[j] = src[i]!;
  },
};

/** A decoded page, column-wise (no object per entry). */
export class IndexPage extends columnar.Page<number, Uint32Array> {
  /** The block numbers (the key column). */
  readonly blocks: Uint32Array;

  constructor(columns: columnar.PageColumns<Uint32Array>) {
    super(BLOCK_KEY, columns);
    this.blocks = columns.keys;
  }

  entry(i: number): IndexEntry {
    return { block: this.blocks[i]!, ref: this.ref(i) };
  }
}

const INDEX_RUN: columnar.RunType<number, Uint32Array, IndexPage> = {
  what: "index",
  kind: RUN_KIND_BLOCK_INDEX,
  pageMagic: 0x47504743, // "CGPG" read as little-endian u32
  magicName: "CGPG",
  key: BLOCK_KEY,
  blockHash: true,
  zeroRefs: true,
  objectKind: "index-run",
  tailGuess: 64 * 1024,
  page: (columns) => new IndexPage(columns),
};

export type RunInfo = columnar.RunInfo;

export interface IndexRunWriterOptions extends columnar.RunWriterOptions {
  /** @default 32768 */
  readonly pageEntries?: number;
}

/**
 * Streams strictly ascending entries into a new run object. Memory: one page plus one part.
 */
export class IndexRunWriter extends columnar.RunWriter<number, Uint32Array> {
  #last = -1;

  constructor(store: ObjectStore, key: string, options: IndexRunWriterOptions = {}) {
    super(INDEX_RUN, store, key, DEFAULT_PAGE_ENTRIES, options);
  }

  /** Appends one entry; returns a promise only when a part is being uploaded (await it). */
  append(block: number, ref: BlockRef): Promise<void> | undefined {
    return this.appendRaw(block, ref.segment, ref.offset, ref.length, ref.codec, ref.sha256);
  }

  /** Appends entry `i` of `page` without materialising a ref. */
  appendFrom(page: IndexPage, i: number): Promise<void> | undefined {
    return this.appendRaw(
      page.blocks[i]!,
      page.segmentOf(i),
      page.offsets[i]!,
      page.lengths[i]!,
      page.codecs[i]!,
      page.hashes.subarray(i * 32, i * 32 + 32),
    );
  }

  appendRaw(
    block: number,
    segment: string | null,
    offset: number,
    length: number,
    codec: number,
    hash: Uint8Array,
  ): Promise<void> | undefined {
    if (!Number.isInteger(block) || block <= this.#last || block > 0xffffffff) {
      throw new InvalidArgumentError(
        `index entries must be strictly ascending u32 blocks; got ${block} after ${this.#last}`,
      );
    }
    if ((segment === null) !== (codec === Codec.zero)) {
      throw new InvalidArgumentError(`block ${block}: codec zero must come without a segment and vice versa`);
    }
    this.#last = block;
    return this.add(block, segment, offset, length, codec, hash);
  }

  /** Writes the directory and trailer and completes the object. */
  finish(): Promise<RunInfo> {
    return this.finishRun();
  }
}

/** Random access to one run: reads trailer + directory on open, pages on demand (ranged GETs). */
export class IndexRunReader extends columnar.RunReader<number, Uint32Array, IndexPage> {
  /**
   * Opens a run: trailer, directory and their checksum. `expected` (from the pointer: the index
   * root) detects a truncated, replaced or swapped object.
   */
  static async open(
    store: ObjectStore,
    key: string,
    expected: columnar.RunPin = {},
  ): Promise<IndexRunReader> {
    return new IndexRunReader(INDEX_RUN, store, key, await columnar.openRun(INDEX_RUN, store, key, expected));
  }
}

/**
 * K-way merge of runs ordered oldest → newest: for each block the newest run's entry wins.
 * Calls `emit(page, i)` in ascending block order; awaits it only when it returns a promise.
 */
export const mergeRuns = (
  readers: readonly IndexRunReader[],
  emit: columnar.PageEmit<IndexPage>,
): Promise<number> => columnar.mergeRuns(BLOCK_KEY, readers, emit);

/** Writes sorted in-memory entries as a run (entries must be strictly ascending by block). */
export async function writeRun(
  store: ObjectStore,
  key: string,
  entries: Iterable<IndexEntry>,
  options?: IndexRunWriterOptions,
): Promise<RunInfo> {
  const w = new IndexRunWriter(store, key, options);
  for (const e of entries) {
    const p = w.append(e.block, e.ref);
    if (p) await p;
  }
  return w.finish();
}
