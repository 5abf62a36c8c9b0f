import { CorruptObjectError, InvalidArgumentError } from "../errors.ts";
import type { MultipartUpload, ObjectStore } from "../ports/object-store.ts";
import type { BlockRef, IndexEntry } from "./block-ref.ts";
import { equalBytes, sha256, toHex } from "./bytes.ts";
import { Codec, type CodecId, isKnownCodec } from "./codec.ts";
import { encodeRunTrailer, openRunTail, RUN_TRAILER_BYTES } from "./run-trailer.ts";

/*
 * Index run (docs/format.md, "Index runs"): an immutable, sorted, paged table block → ref.
 * Little-endian throughout.
 *   pages      page*  (each: "CGPG" count:u32 segCount:u16 reserved:u16 segTable[segCount×16]
 *                      then count entries of 47 bytes:
 *                      block:u32 seg:u16(0xFFFF = none) offset:u32 length:u32 codec:u8 sha256[32])
 *   directory  per page: firstBlock:u32 lastBlock:u32 offset:u64 length:u32 count:u32 sha256[32] (56 B)
 *   trailer    see core/format/run-trailer.ts (kind 1; its checksum seals the directory and itself)  (64 B)
 */
export { RUN_FORMAT, RUN_MAGIC, RUN_TRAILER_BYTES } from "./run-trailer.ts";
export const RUN_KIND_BLOCK_INDEX = 1;
const PAGE_MAGIC = 0x47504743; // "CGPG" read as little-endian u32
const PAGE_HEAD = 12;
const ENTRY = 47;
const DIR_ENTRY = 56;
const NO_SEGMENT = 0xffff;
const MAX_SEGMENTS_PER_PAGE = 0xfffe;
export const DEFAULT_PAGE_ENTRIES = 32_768;

/** A decoded page, column-wise (no object per entry). */
export class IndexPage {
  readonly count: number;
  readonly blocks: Uint32Array;
  readonly seg: Uint16Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  readonly codecs: Uint8Array;
  /** count × 32 bytes of SHA-256. */
  readonly hashes: Uint8Array;
  readonly segTable: readonly string[];

  constructor(fields: {
    count: number;
    blocks: Uint32Array;
    seg: Uint16Array;
    offsets: Uint32Array;
    lengths: Uint32Array;
    codecs: Uint8Array;
    hashes: Uint8Array;
    segTable: readonly string[];
  }) {
    this.count = fields.count;
    this.blocks = fields.blocks;
    this.seg = fields.seg;
    this.offsets = fields.offsets;
    this.lengths = fields.lengths;
    this.codecs = fields.codecs;
    this.hashes = fields.hashes;
    this.segTable = fields.segTable;
  }

  segmentOf(i: number): string | null {
    const s = this.seg[i]!;
    return s === NO_SEGMENT ? null : this.segTable[s]!;
  }

  ref(i: number): BlockRef {
    return {
      segment: this.segmentOf(i),
      offset: this.offsets[i]!,
      length: this.lengths[i]!,
      codec: this.codecs[i]! as CodecId,
      sha256: this.hashes.slice(i * 32, i * 32 + 32),
    };
  }

  entry(i: number): IndexEntry {
    return { block: this.blocks[i]!, ref: this.ref(i) };
  }

  /** Position of `block` in this page, or -1. */
  find(block: number): number {
    let lo = 0;
    let hi = this.count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const b = this.blocks[mid]!;
      if (b === block) return mid;
      if (b < block) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }
}

export function decodePage(bytes: Uint8Array, key: string, versionId?: string): IndexPage {
  const fail = (detail: string) => new CorruptObjectError(key, versionId, `index page ${detail}`);
  if (bytes.byteLength < PAGE_HEAD) throw fail("is truncated");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint32(0, true) !== PAGE_MAGIC) throw fail("magic is not CGPG");
  const count = dv.getUint32(4, true);
  const segCount = dv.getUint16(8, true);
  const entriesAt = PAGE_HEAD + segCount * 16;
  if (entriesAt + count * ENTRY !== bytes.byteLength) throw fail(`length does not match ${count} entries`);
  const segTable: string[] = [];
  for (let s = 0; s < segCount; s++)
    segTable.push(toHex(bytes.subarray(PAGE_HEAD + s * 16, PAGE_HEAD + s * 16 + 16)));
  const blocks = new Uint32Array(count);
  const seg = new Uint16Array(count);
  const offsets = new Uint32Array(count);
  const lengths = new Uint32Array(count);
  const codecs = new Uint8Array(count);
  const hashes = new Uint8Array(count * 32);
  let prev = -1;
  for (let i = 0, at = entriesAt; i < count; i++, at += ENTRY) {
    const b = dv.getUint32(at, true);
    if (b <= prev) throw fail(`entry ${i} is out of order`);
    prev = b;
    blocks[i] = b;
    const s = dv.getUint16(at + 4, true);
    const codec = dv.getUint8(at + 14);
    if (
      !isKnownCodec(codec) ||
      (s !== NO_SEGMENT && s >= segCount) ||
      (s === NO_SEGMENT) !== (codec === Codec.zero)
    ) {
      throw fail(`entry ${i} has an invalid segment or codec`);
    }
    seg[i] = s;
    offsets[i] = dv.getUint32(at + 6, true);
    lengths[i] = dv.getUint32(at + 10, true);
    codecs[i] = codec;
    hashes.set(bytes.subarray(at + 15, at + 47), i * 32);
  }
  return new IndexPage({ count, blocks, seg, offsets, lengths, codecs, hashes, segTable });
}

/** Accumulates sorted entries into one page. */
class PageBuilder {
  readonly #max: number;
  readonly #segIndex = new Map<string, number>();
  readonly #segTable: string[] = [];
  #buf: Uint8Array;
  #dv: DataView;
  count = 0;
  first = 0;
  last = -1;

  constructor(maxEntries: number) {
    this.#max = maxEntries;
    this.#buf = new Uint8Array(Math.min(maxEntries, 1024) * ENTRY);
    this.#dv = new DataView(this.#buf.buffer);
  }

  get full(): boolean {
    return this.count >= this.#max || this.#segTable.length >= MAX_SEGMENTS_PER_PAGE;
  }

  add(
    block: number,
    segment: string | null,
    offset: number,
    length: number,
    codec: number,
    hash: Uint8Array,
  ): void {
    let s = NO_SEGMENT;
    if (segment !== null) {
      let idx = this.#segIndex.get(segment);
      if (idx === undefined) {
        idx = this.#segTable.length;
        this.#segTable.push(segment);
        this.#segIndex.set(segment, idx);
      }
      s = idx;
    }
    const need = (this.count + 1) * ENTRY;
    if (need > this.#buf.byteLength) {
      const grown = new Uint8Array(Math.min(this.#max * ENTRY, this.#buf.byteLength * 2));
      grown.set(this.#buf);
      this.#buf = grown;
      this.#dv = new DataView(grown.buffer);
    }
    const at = this.count * ENTRY;
    this.#dv.setUint32(at, block, true);
    this.#dv.setUint16(at + 4, s, true);
    this.#dv.setUint32(at + 6, offset, true);
    this.#dv.setUint32(at + 10, length, true);
    this.#dv.setUint8(at + 14, codec);
    this.#buf.set(hash, at + 15);
    if (this.count === 0) this.first = block;
    this.last = block;
    this.count++;
  }

  encode(): Uint8Array {
    const segBytes = this.#segTable.length * 16;
    const out = new Uint8Array(PAGE_HEAD + segBytes + this.count * ENTRY);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, PAGE_MAGIC, true);
    dv.setUint32(4, this.count, true);
    dv.setUint16(8, this.#segTable.length, true);
    dv.setUint16(10, 0, true);
    this.#segTable.forEach((id, i) => {
      out.set(Buffer.from(id, "hex"), PAGE_HEAD + i * 16);
    });
    out.set(this.#buf.subarray(0, this.count * ENTRY), PAGE_HEAD + segBytes);
    return out;
  }
}

export interface RunInfo {
  readonly key: string;
  readonly entries: number;
  readonly bytes: number;
  readonly pages: number;
  /** The run's checksum (trailer SHA-256, hex): what a pointer to the run pins. */
  readonly sha256: string;
}

export interface IndexRunWriterOptions {
  /** @default 32768 */
  readonly pageEntries?: number;
  /** Multipart part size; runs up to this size are one PUT. @default 8 MiB */
  readonly partBytes?: number;
  readonly metadata?: Readonly<Record<string, string>>;
}

/**
 * Streams strictly ascending entries into a new run object. Memory: one page plus one part.
 */
export class IndexRunWriter {
  readonly #store: ObjectStore;
  readonly key: string;
  readonly #pageEntries: number;
  readonly #partBytes: number;
  readonly #metadata: Readonly<Record<string, string>>;
  #page: PageBuilder;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #offset = 0;
  #entries = 0;
  #last = -1;
  readonly #directory: Uint8Array[] = [];
  #upload: MultipartUpload | undefined;
  #part = 1;

  constructor(store: ObjectStore, key: string, options: IndexRunWriterOptions = {}) {
    this.#store = store;
    this.key = key;
    this.#pageEntries = options.pageEntries ?? DEFAULT_PAGE_ENTRIES;
    if (!Number.isInteger(this.#pageEntries) || this.#pageEntries < 1 || this.#pageEntries > 1_000_000) {
      throw new InvalidArgumentError(`expected pageEntries 1..1000000, got ${this.#pageEntries}`);
    }
    this.#partBytes = options.partBytes ?? 8 * 1024 * 1024;
    this.#metadata = { "cgmirror-kind": "index-run", ...options.metadata };
    this.#page = new PageBuilder(this.#pageEntries);
  }

  get entries(): number {
    return this.#entries;
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
    this.#page.add(block, segment, offset, length, codec, hash);
    this.#entries++;
    if (this.#page.full) return this.#flushPage();
    return undefined;
  }

  #flushPage(): Promise<void> | undefined {
    const page = this.#page;
    if (page.count === 0) return undefined;
    const bytes = page.encode();
    const dir = new Uint8Array(DIR_ENTRY);
    const dv = new DataView(dir.buffer);
    dv.setUint32(0, page.first, true);
    dv.setUint32(4, page.last, true);
    dv.setBigUint64(8, BigInt(this.#offset), true);
    dv.setUint32(16, bytes.byteLength, true);
    dv.setUint32(20, page.count, true);
    dir.set(sha256(bytes), 24);
    this.#directory.push(dir);
    this.#offset += bytes.byteLength;
    this.#page = new PageBuilder(this.#pageEntries);
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.byteLength;
    if (this.#pendingBytes >= this.#partBytes) return this.#uploadPart();
    return undefined;
  }

  async #uploadPart(): Promise<void> {
    const body = Buffer.concat(this.#pending);
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#upload ??= await this.#store.createMultipartUpload(this.key, { metadata: this.#metadata });
    await this.#upload.uploadPart(this.#part++, body);
  }

  /** Writes the directory and trailer and completes the object. */
  async finish(): Promise<RunInfo> {
    await this.#flushPage();
    const directory = Buffer.concat(this.#directory);
    const { trailer, sha256: runSha } = encodeRunTrailer(
      RUN_KIND_BLOCK_INDEX,
      this.#directory.length,
      this.#entries,
      directory,
    );
    this.#pending.push(directory, trailer);
    const bytes = this.#offset + directory.byteLength + RUN_TRAILER_BYTES;
    const body = Buffer.concat(this.#pending);
    this.#pending = [];
    try {
      if (this.#upload) {
        await this.#upload.uploadPart(this.#part++, body);
        await this.#upload.complete();
      } else {
        await this.#store.put(this.key, body, { metadata: this.#metadata, checksumSha256: sha256(body) });
      }
    } catch (error) {
      await this.#upload?.abort().catch(() => {});
      throw error;
    }
    return { key: this.key, entries: this.#entries, bytes, pages: this.#directory.length, sha256: runSha };
  }

  async abort(): Promise<void> {
    await this.#upload?.abort().catch(() => {});
  }
}

interface DirEntry {
  readonly first: number;
  readonly last: number;
  readonly offset: number;
  readonly length: number;
  readonly count: number;
  readonly sha256: Uint8Array;
}

/** Random access to one run: reads trailer + directory on open, pages on demand (ranged GETs). */
export class IndexRunReader {
  readonly key: string;
  readonly entryCount: number;
  readonly bytes: number;
  readonly #store: ObjectStore;
  readonly #dir: readonly DirEntry[];
  readonly #sha256: string;

  private constructor(
    store: ObjectStore,
    key: string,
    bytes: number,
    entryCount: number,
    dir: DirEntry[],
    runSha256: string,
  ) {
    this.#store = store;
    this.key = key;
    this.bytes = bytes;
    this.entryCount = entryCount;
    this.#dir = dir;
    this.#sha256 = runSha256;
  }

  get pageCount(): number {
    return this.#dir.length;
  }

  /** The run's checksum (hex), as index roots pin it. */
  get sha256(): string {
    return this.#sha256;
  }

  /**
   * Opens a run: trailer, directory and their checksum. `expected` (from the pointer: the index
   * root) detects a truncated, replaced or swapped object.
   */
  static async open(
    store: ObjectStore,
    key: string,
    expected: { readonly bytes?: number; readonly sha256?: string } = {},
  ): Promise<IndexRunReader> {
    const t = await openRunTail(store, key, RUN_KIND_BLOCK_INDEX, DIR_ENTRY, "index run", expected);
    const ddv = new DataView(t.directory.buffer, t.directory.byteOffset, t.directory.byteLength);
    const dir: DirEntry[] = [];
    let total = 0;
    let expectOffset = 0;
    let lastBlock = -1;
    for (let p = 0; p < t.pageCount; p++) {
      const at = p * DIR_ENTRY;
      const e: DirEntry = {
        first: ddv.getUint32(at, true),
        last: ddv.getUint32(at + 4, true),
        offset: Number(ddv.getBigUint64(at + 8, true)),
        length: ddv.getUint32(at + 16, true),
        count: ddv.getUint32(at + 20, true),
        sha256: t.directory.slice(at + 24, at + 56),
      };
      if (e.offset !== expectOffset || e.first > e.last || e.first <= lastBlock)
        throw new CorruptObjectError(key, t.versionId, `page ${p} of the directory is inconsistent`);
      expectOffset += e.length;
      lastBlock = e.last;
      total += e.count;
      dir.push(e);
    }
    if (total !== t.entryCount || expectOffset + t.directory.byteLength + RUN_TRAILER_BYTES !== t.size) {
      throw new CorruptObjectError(key, t.versionId, "index run sizes are inconsistent");
    }
    return new IndexRunReader(store, key, t.size, t.entryCount, dir, t.sha256);
  }

  async readPage(p: number): Promise<IndexPage> {
    const d = this.#dir[p];
    if (!d) throw new InvalidArgumentError(`page ${p} out of range 0..${this.#dir.length - 1}`);
    const got = await this.#store.get(this.key, { range: { start: d.offset, end: d.offset + d.length } });
    if (got.body.byteLength !== d.length || !equalBytes(sha256(got.body), d.sha256)) {
      throw new CorruptObjectError(this.key, got.versionId, `index page ${p} fails its SHA-256 check`);
    }
    const page = decodePage(got.body, this.key, got.versionId);
    if (
      page.count !== d.count ||
      (page.count > 0 && (page.blocks[0] !== d.first || page.blocks[page.count - 1] !== d.last))
    ) {
      throw new CorruptObjectError(this.key, got.versionId, `index page ${p} disagrees with the directory`);
    }
    return page;
  }

  /** Index of the page that may hold `block`, or -1. */
  pageFor(block: number): number {
    let lo = 0;
    let hi = this.#dir.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const d = this.#dir[mid]!;
      if (block < d.first) hi = mid - 1;
      else if (block > d.last) lo = mid + 1;
      else return mid;
    }
    return -1;
  }
}

/** Sequential reader over one run with one page of read-ahead. */
export class RunCursor {
  readonly #reader: IndexRunReader;
  #pageNo = -1;
  #next: Promise<IndexPage> | undefined;
  page: IndexPage | undefined;
  pos = 0;

  constructor(reader: IndexRunReader) {
    this.#reader = reader;
  }

  /** Loads the first page. After it, `page`/`pos` point at the current entry or `page` is undefined. */
  async start(): Promise<void> {
    await this.#advancePage();
  }

  get done(): boolean {
    return this.page === undefined;
  }

  get block(): number {
    return this.page!.blocks[this.pos]!;
  }

  /** Moves to the next entry; returns a promise only when a new page must be loaded. */
  next(): Promise<void> | undefined {
    this.pos++;
    if (this.pos < this.page!.count) return undefined;
    return this.#advancePage();
  }

  async #advancePage(): Promise<void> {
    for (;;) {
      this.#pageNo++;
      if (this.#pageNo >= this.#reader.pageCount) {
        this.page = undefined;
        return;
      }
      const current = this.#next ?? this.#reader.readPage(this.#pageNo);
      this.#next =
        this.#pageNo + 1 < this.#reader.pageCount ? this.#reader.readPage(this.#pageNo + 1) : undefined;
      this.#next?.catch(() => {});
      this.page = await current;
      this.pos = 0;
      if (this.page.count > 0) return;
    }
  }
}

/**
 * K-way merge of runs ordered oldest → newest: for each block the newest run's entry wins.
 * Calls `emit(page, i)` in ascending block order; awaits it only when it returns a promise.
 */
export async function mergeRuns(
  readers: readonly IndexRunReader[],
  emit: (page: IndexPage, i: number) => Promise<void> | undefined | void,
): Promise<number> {
  const cursors = readers.map((r) => new RunCursor(r));
  await Promise.all(cursors.map((c) => c.start()));
  let emitted = 0;
  for (;;) {
    let min = Number.POSITIVE_INFINITY;
    let winner = -1;
    for (let k = 0; k < cursors.length; k++) {
      const c = cursors[k]!;
      if (c.done) continue;
      const b = c.block;
      if (b < min || (b === min && k > winner)) {
        min = b;
        winner = k;
      }
    }
    if (winner < 0) return emitted;
    const w = cursors[winner]!;
    const r = emit(w.page!, w.pos);
    if (r) await r;
    emitted++;
    for (const c of cursors) {
      if (!c.done && c.block === min) {
        const p = c.next();
        if (p) await p;
      }
    }
  }
}

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
