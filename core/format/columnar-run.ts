import { CorruptObjectError, InvalidArgumentError } from "../errors.ts";
import type { MultipartUpload, ObjectStore } from "../ports/object-store.ts";
import type { BlockRef } from "./block-ref.ts";
import { equalBytes, sha256, toHex } from "./bytes.ts";
import { Codec, type CodecId, isKnownCodec } from "./codec.ts";
import { encodeRunTrailer, openRunTail, RUN_TRAILER_BYTES } from "./run-trailer.ts";

/*
 * The columnar run codec shared by block-index runs (core/format/index-run.ts, key: block number) and dedup
 * runs (core/format/hash-run.ts, key: SHA-256) — docs/format.md §4. One immutable object, little-endian:
 *
 *   pages      page*   each: magic:u32 count:u32 segCount:u16 reserved:u16(0) segTable[segCount×16]
 *                      then count entries: key[K] seg:u16 offset:u32 length:u32 codec:u8 [sha256[32]]
 *                      (seg 0xFFFF = no segment: a zero ref, index runs only; the trailing block
 *                      SHA-256 only where the key is not the hash itself)
 *   directory  per page: firstKey[K] lastKey[K] offset:u64 length:u32 count:u32 sha256[32]
 *   trailer    core/format/run-trailer.ts (its checksum seals the directory and itself)
 *
 * A run type names the key (its width, order and column), the page magic and the trailer kind; the
 * page, directory and trailer code here is the same for both.
 */

const PAGE_HEAD = 12;
const REF_BYTES = 11; // seg:u16 offset:u32 length:u32 codec:u8
const NO_SEGMENT = 0xffff;
const MAX_SEGMENTS_PER_PAGE = 0xfffe;

/** A column of keys: one u32 per entry, or 32 bytes per entry. */
export type KeyColumn = Uint32Array | Uint8Array;

/** How a run's key is stored and ordered. `K` is one key, `C` a column of them. */
export interface RunKey<K, C extends KeyColumn> {
  /** Bytes of one key in an entry and in a directory entry. */
  readonly bytes: number;
  column(count: number): C;
  /** Reads the key at `src[at..]` into `col[i]`. */
  load(col: C, i: number, src: Uint8Array, dv: DataView, at: number): void;
  /** Writes `key` at `dst[at..]`. */
  store(key: K, dst: Uint8Array, dv: DataView, at: number): void;
  /** Order of `a[i]` and `b[j]`. */
  compare(a: C, i: number, b: C, j: number): number;
  /** Order of `col[i]` and `key`. */
  compareTo(col: C, i: number, key: K): number;
  copy(src: C, i: number, dst: C, j: number): void;
}

/** A decoded page, column-wise (no object per entry). */
export class Page<K, C extends KeyColumn> {
  readonly count: number;
  readonly keys: C;
  readonly seg: Uint16Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  readonly codecs: Uint8Array;
  /** count × 32 bytes: each block's SHA-256 (in a dedup page, the key column itself). */
  readonly hashes: Uint8Array;
  readonly segTable: readonly string[];
  readonly #key: RunKey<K, C>;

  constructor(key: RunKey<K, C>, f: PageColumns<C>) {
    this.#key = key;
    this.count = f.count;
    this.keys = f.keys;
    this.seg = f.seg;
    this.offsets = f.offsets;
    this.lengths = f.lengths;
    this.codecs = f.codecs;
    this.hashes = f.hashes;
    this.segTable = f.segTable;
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

  /** Position of `key` in this page, or -1. */
  find(key: K): number {
    let lo = 0;
    let hi = this.count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = this.#key.compareTo(this.keys, mid, key);
      if (c === 0) return mid;
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }
}

/** The columns of one decoded page. */
export type PageColumns<C extends KeyColumn> = Pick<
  Page<unknown, C>,
  "count" | "keys" | "seg" | "offsets" | "lengths" | "codecs" | "hashes" | "segTable"
>;

/** What a pointer to a run pins: its size and checksum. */
export interface RunPin {
  readonly bytes?: number;
  readonly sha256?: string;
}

/** Receives entry `i` of `page` in a merge; awaited only when it returns a promise. */
export type PageEmit<P> = (page: P, i: number) => Promise<void> | undefined | void;

/** One kind of columnar run. */
export interface RunType<K, C extends KeyColumn, P extends Page<K, C>> {
  /** "index" or "dedup": messages say "<what> page", "<what> run". */
  readonly what: string;
  /** The trailer's kind. */
  readonly kind: number;
  readonly pageMagic: number;
  /** The magic as text, for messages. */
  readonly magicName: string;
  readonly key: RunKey<K, C>;
  /** Entries carry the block's SHA-256 after the ref (the key is not the hash). */
  readonly blockHash: boolean;
  /** Entries may be zero refs (no segment, codec zero); otherwise every entry names a segment. */
  readonly zeroRefs: boolean;
  /** The `cgmirror-kind` metadata of the object. */
  readonly objectKind: string;
  /** How many tail bytes the first GET of an open reads. */
  readonly tailGuess: number;
  page(columns: PageColumns<C>): P;
}

interface Layout {
  readonly key: { readonly bytes: number };
  readonly blockHash: boolean;
}
const entryBytes = (t: Layout) => t.key.bytes + REF_BYTES + (t.blockHash ? 32 : 0);
const dirEntryBytes = (t: Layout) => 2 * t.key.bytes + 48;

/** Decodes and checks one page (order, segments, codecs); `versionId` is for messages. */
export function decodePage<K, C extends KeyColumn, P extends Page<K, C>>(
  t: RunType<K, C, P>,
  bytes: Uint8Array,
  key: string,
  versionId?: string,
): P {
  const fail = (detail: string) => new CorruptObjectError(key, versionId, `${t.what} page ${detail}`);
  const ENTRY = entryBytes(t);
  const K = t.key.bytes;
  if (bytes.byteLength < PAGE_HEAD) throw fail("is truncated");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint32(0, true) !== t.pageMagic) throw fail(`magic is not ${t.magicName}`);
  const count = dv.getUint32(4, true);
  const segCount = dv.getUint16(8, true);
  const entriesAt = PAGE_HEAD + segCount * 16;
  if (entriesAt + count * ENTRY !== bytes.byteLength) throw fail(`length does not match ${count} entries`);
  const segTable: string[] = [];
  for (let s = 0; s < segCount; s++)
    segTable.push(toHex(bytes.subarray(PAGE_HEAD + s * 16, PAGE_HEAD + s * 16 + 16)));
  const keys = t.key.column(count);
  const seg = new Uint16Array(count);
  const offsets = new Uint32Array(count);
  const lengths = new Uint32Array(count);
  const codecs = new Uint8Array(count);
  const hashes = t.blockHash ? new Uint8Array(count * 32) : (keys as Uint8Array);
  for (let i = 0, at = entriesAt; i < count; i++, at += ENTRY) {
    t.key.load(keys, i, bytes, dv, at);
    if (i > 0 && t.key.compare(keys, i - 1, keys, i) >= 0) throw fail(`entry ${i} is out of order`);
    const s = dv.getUint16(at + K, true);
    const codec = dv.getUint8(at + K + 10);
    const valid = t.zeroRefs
      ? isKnownCodec(codec) &&
        (s === NO_SEGMENT || s < segCount) &&
        (s === NO_SEGMENT) === (codec === Codec.zero)
      : isKnownCodec(codec) && s < segCount;
    if (!valid) throw fail(`entry ${i} has an invalid segment or codec`);
    seg[i] = s;
    offsets[i] = dv.getUint32(at + K + 2, true);
    lengths[i] = dv.getUint32(at + K + 6, true);
    codecs[i] = codec;
    if (t.blockHash) hashes.set(bytes.subarray(at + K + REF_BYTES, at + ENTRY), i * 32);
  }
  return t.page({ count, keys, seg, offsets, lengths, codecs, hashes, segTable });
}

export interface RunInfo {
  readonly key: string;
  readonly entries: number;
  readonly bytes: number;
  readonly pages: number;
  /** The run's checksum (trailer SHA-256, hex): what a pointer to the run pins. */
  readonly sha256: string;
}

export interface RunWriterOptions {
  /** Entries per page (1..1,000,000). @default the run type's */
  readonly pageEntries?: number;
  /** Multipart part size; runs up to this size are one PUT. @default 8 MiB */
  readonly partBytes?: number;
  /** More object metadata (beside `cgmirror-kind`). */
  readonly metadata?: Readonly<Record<string, string>>;
}

/**
 * Streams strictly ascending entries into a new run object: pages, then directory and trailer.
 * Memory: one page plus one part. Callers check the order and the refs (the run types' writers do).
 */
export class RunWriter<K, C extends KeyColumn> {
  readonly key: string;
  readonly #t: RunType<K, C, Page<K, C>>;
  readonly #store: ObjectStore;
  readonly #entry: number;
  readonly #pageEntries: number;
  readonly #partBytes: number;
  readonly #metadata: Readonly<Record<string, string>>;
  // The page being filled: its entries, count and segment table.
  #buf: Uint8Array;
  #dv: DataView;
  #n = 0;
  #segIndex = new Map<string, number>();
  #segTable: string[] = [];
  // The object: finished pages not yet uploaded, the directory, the upload.
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #offset = 0;
  #entries = 0;
  readonly #directory: Uint8Array[] = [];
  #upload: MultipartUpload | undefined;
  #part = 1;

  constructor(
    t: RunType<K, C, Page<K, C>>,
    store: ObjectStore,
    key: string,
    pageEntries: number,
    options: RunWriterOptions = {},
  ) {
    this.#t = t;
    this.#store = store;
    this.key = key;
    this.#entry = entryBytes(t);
    this.#pageEntries = options.pageEntries ?? pageEntries;
    if (!Number.isInteger(this.#pageEntries) || this.#pageEntries < 1 || this.#pageEntries > 1_000_000) {
      throw new InvalidArgumentError(`expected pageEntries 1..1000000, got ${this.#pageEntries}`);
    }
    this.#partBytes = options.partBytes ?? 8 * 1024 * 1024;
    this.#metadata = { "cgmirror-kind": t.objectKind, ...options.metadata };
    this.#buf = new Uint8Array(Math.min(this.#pageEntries, 1024) * this.#entry);
    this.#dv = new DataView(this.#buf.buffer);
  }

  get entries(): number {
    return this.#entries;
  }

  /** Adds one entry (already checked); returns a promise only when a part is being uploaded. */
  protected add(
    key: K,
    segment: string | null,
    offset: number,
    length: number,
    codec: number,
    hash?: Uint8Array,
  ): Promise<void> | undefined {
    const s = segment === null ? NO_SEGMENT : this.#segmentIndex(segment);
    if ((this.#n + 1) * this.#entry > this.#buf.byteLength) this.#grow();
    const at = this.#n * this.#entry;
    const K = this.#t.key.bytes;
    this.#t.key.store(key, this.#buf, this.#dv, at);
    this.#dv.setUint16(at + K, s, true);
    this.#dv.setUint32(at + K + 2, offset, true);
    this.#dv.setUint32(at + K + 6, length, true);
    this.#dv.setUint8(at + K + 10, codec);
    if (this.#t.blockHash) this.#buf.set(hash!, at + K + REF_BYTES);
    this.#n++;
    this.#entries++;
    if (this.#n >= this.#pageEntries || this.#segTable.length >= MAX_SEGMENTS_PER_PAGE)
      return this.#flushPage();
    return undefined;
  }

  #segmentIndex(segment: string): number {
    let idx = this.#segIndex.get(segment);
    if (idx === undefined) {
      idx = this.#segTable.length;
      this.#segTable.push(segment);
      this.#segIndex.set(segment, idx);
    }
    return idx;
  }

  #grow(): void {
    const grown = new Uint8Array(Math.min(this.#pageEntries * this.#entry, this.#buf.byteLength * 2));
    grown.set(this.#buf);
    this.#buf = grown;
    this.#dv = new DataView(grown.buffer);
  }

  #encodePage(): Uint8Array {
    const segBytes = this.#segTable.length * 16;
    const out = new Uint8Array(PAGE_HEAD + segBytes + this.#n * this.#entry);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, this.#t.pageMagic, true);
    dv.setUint32(4, this.#n, true);
    dv.setUint16(8, this.#segTable.length, true);
    dv.setUint16(10, 0, true);
    this.#segTable.forEach((id, i) => {
      out.set(Buffer.from(id, "hex"), PAGE_HEAD + i * 16);
    });
    out.set(this.#buf.subarray(0, this.#n * this.#entry), PAGE_HEAD + segBytes);
    return out;
  }

  /** The directory entry of the encoded page `bytes`: its first and last key come from the entries. */
  #directoryEntry(bytes: Uint8Array): Uint8Array {
    const K = this.#t.key.bytes;
    const last = (this.#n - 1) * this.#entry;
    const dir = new Uint8Array(2 * K + 48);
    const dv = new DataView(dir.buffer);
    dir.set(this.#buf.subarray(0, K), 0);
    dir.set(this.#buf.subarray(last, last + K), K);
    dv.setBigUint64(2 * K, BigInt(this.#offset), true);
    dv.setUint32(2 * K + 8, bytes.byteLength, true);
    dv.setUint32(2 * K + 12, this.#n, true);
    dir.set(sha256(bytes), 2 * K + 16);
    return dir;
  }

  #flushPage(): Promise<void> | undefined {
    if (this.#n === 0) return undefined;
    const bytes = this.#encodePage();
    this.#directory.push(this.#directoryEntry(bytes));
    this.#offset += bytes.byteLength;
    this.#n = 0;
    this.#segIndex = new Map();
    this.#segTable = [];
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
  protected async finishRun(): Promise<RunInfo> {
    await this.#flushPage();
    const directory = Buffer.concat(this.#directory);
    const { trailer, sha256: runSha } = encodeRunTrailer(
      this.#t.kind,
      this.#directory.length,
      this.#entries,
      directory,
    );
    const body = Buffer.concat([...this.#pending, directory, trailer]);
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
    return {
      key: this.key,
      entries: this.#entries,
      bytes: this.#offset + directory.byteLength + RUN_TRAILER_BYTES,
      pages: this.#directory.length,
      sha256: runSha,
    };
  }

  async abort(): Promise<void> {
    await this.#upload?.abort().catch(() => {});
  }
}

/** A run's directory, column-wise. */
interface Directory<C extends KeyColumn> {
  readonly first: C;
  readonly last: C;
  readonly offsets: readonly number[];
  readonly lengths: readonly number[];
  readonly counts: readonly number[];
  /** pageCount × 32 bytes. */
  readonly hashes: Uint8Array;
}

/** What opening a run read and checked: its size, entries, checksum and directory. */
export interface OpenedRun<C extends KeyColumn> {
  readonly size: number;
  readonly entryCount: number;
  readonly sha256: string;
  readonly directory: Directory<C>;
}

/**
 * Reads a run's trailer and directory and checks them: checksum (and `expected`, the pointer's pins),
 * page offsets that tile the object, and page key ranges in ascending order.
 */
export async function openRun<K, C extends KeyColumn, P extends Page<K, C>>(
  t: RunType<K, C, P>,
  store: ObjectStore,
  key: string,
  expected: RunPin = {},
): Promise<OpenedRun<C>> {
  const DIR = dirEntryBytes(t);
  const K = t.key.bytes;
  const what = `${t.what} run`;
  const tail = await openRunTail(store, key, t.kind, DIR, what, expected, t.tailGuess);
  const bytes = tail.directory;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = tail.pageCount;
  const dir = {
    first: t.key.column(n),
    last: t.key.column(n),
    offsets: [] as number[],
    lengths: [] as number[],
    counts: [] as number[],
    hashes: new Uint8Array(n * 32),
  };
  let total = 0;
  let expectOffset = 0;
  for (let p = 0; p < n; p++) {
    const at = p * DIR;
    t.key.load(dir.first, p, bytes, dv, at);
    t.key.load(dir.last, p, bytes, dv, at + K);
    const offset = Number(dv.getBigUint64(at + 2 * K, true));
    const length = dv.getUint32(at + 2 * K + 8, true);
    const count = dv.getUint32(at + 2 * K + 12, true);
    dir.hashes.set(bytes.subarray(at + 2 * K + 16, at + DIR), p * 32);
    if (
      offset !== expectOffset ||
      t.key.compare(dir.first, p, dir.last, p) > 0 ||
      (p > 0 && t.key.compare(dir.last, p - 1, dir.first, p) >= 0)
    ) {
      throw new CorruptObjectError(key, tail.versionId, `page ${p} of the directory is inconsistent`);
    }
    dir.offsets.push(offset);
    dir.lengths.push(length);
    dir.counts.push(count);
    expectOffset += length;
    total += count;
  }
  if (total !== tail.entryCount || expectOffset + bytes.byteLength + RUN_TRAILER_BYTES !== tail.size) {
    throw new CorruptObjectError(key, tail.versionId, `${what} sizes are inconsistent`);
  }
  return { size: tail.size, entryCount: tail.entryCount, sha256: tail.sha256, directory: dir };
}

/** Random access to one run: trailer and directory read on open, pages on demand (ranged GETs). */
export class RunReader<K, C extends KeyColumn, P extends Page<K, C>> {
  readonly key: string;
  readonly entryCount: number;
  readonly bytes: number;
  readonly #t: RunType<K, C, P>;
  readonly #store: ObjectStore;
  readonly #dir: Directory<C>;
  readonly #sha256: string;

  protected constructor(t: RunType<K, C, P>, store: ObjectStore, key: string, opened: OpenedRun<C>) {
    this.#t = t;
    this.#store = store;
    this.key = key;
    this.bytes = opened.size;
    this.entryCount = opened.entryCount;
    this.#dir = opened.directory;
    this.#sha256 = opened.sha256;
  }

  get pageCount(): number {
    return this.#dir.offsets.length;
  }

  /** The run's checksum (hex), as the pointers to it pin it. */
  get sha256(): string {
    return this.#sha256;
  }

  /** Reads page `p` and checks it against its directory entry (SHA-256, count, key range). */
  async readPage(p: number): Promise<P> {
    const d = this.#dir;
    if (!Number.isInteger(p) || p < 0 || p >= this.pageCount) {
      throw new InvalidArgumentError(`page ${p} out of range 0..${this.pageCount - 1}`);
    }
    const start = d.offsets[p]!;
    const length = d.lengths[p]!;
    const got = await this.#store.get(this.key, { range: { start, end: start + length } });
    const what = this.#t.what;
    if (
      got.body.byteLength !== length ||
      !equalBytes(sha256(got.body), d.hashes.subarray(p * 32, p * 32 + 32))
    ) {
      throw new CorruptObjectError(this.key, got.versionId, `${what} page ${p} fails its SHA-256 check`);
    }
    const page = decodePage(this.#t, got.body, this.key, got.versionId);
    const k = this.#t.key;
    if (
      page.count !== d.counts[p] ||
      (page.count > 0 &&
        (k.compare(page.keys, 0, d.first, p) !== 0 || k.compare(page.keys, page.count - 1, d.last, p) !== 0))
    ) {
      throw new CorruptObjectError(this.key, got.versionId, `${what} page ${p} disagrees with the directory`);
    }
    return page;
  }

  /** Index of the page that may hold `key`, or -1. */
  pageFor(key: K): number {
    const k = this.#t.key;
    let lo = 0;
    let hi = this.pageCount - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (k.compareTo(this.#dir.first, mid, key) > 0) hi = mid - 1;
      else if (k.compareTo(this.#dir.last, mid, key) < 0) lo = mid + 1;
      else return mid;
    }
    return -1;
  }
}

/** Sequential reader over one run with one page of read-ahead. */
class Cursor<K, C extends KeyColumn, P extends Page<K, C>> {
  readonly #reader: RunReader<K, C, P>;
  #pageNo = -1;
  #next: Promise<P> | undefined;
  page: P | undefined;
  pos = 0;

  constructor(reader: RunReader<K, C, P>) {
    this.#reader = reader;
  }

  /** Moves to the next entry; returns a promise only when a new page must be loaded. */
  next(): Promise<void> | undefined {
    this.pos++;
    if (this.pos < this.page!.count) return undefined;
    return this.advancePage();
  }

  /** Loads the next non-empty page, or sets `page` undefined at the end. */
  async advancePage(): Promise<void> {
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
 * K-way merge of runs ordered oldest → newest: for each key the newest run's entry wins. Calls
 * `emit(page, i)` in ascending key order; awaits it only when it returns a promise.
 */
export async function mergeRuns<K, C extends KeyColumn, P extends Page<K, C>>(
  key: RunKey<K, C>,
  readers: readonly RunReader<K, C, P>[],
  emit: PageEmit<P>,
): Promise<number> {
  const cursors = readers.map((r) => new Cursor(r));
  await Promise.all(cursors.map((c) => c.advancePage()));
  const min = key.column(1);
  const tied: number[] = [];
  let emitted = 0;
  for (;;) {
    let winner = -1;
    tied.length = 0;
    for (let k = 0; k < cursors.length; k++) {
      const c = cursors[k]!;
      if (!c.page) continue;
      const cmp = winner < 0 ? -1 : key.compare(c.page.keys, c.pos, min, 0);
      if (cmp < 0) {
        key.copy(c.page.keys, c.pos, min, 0);
        winner = k;
        tied.length = 0;
        tied.push(k);
      } else if (cmp === 0) {
        winner = k; // later (newer) runs win ties
        tied.push(k);
      }
    }
    if (winner < 0) return emitted;
    const w = cursors[winner]!;
    const r = emit(w.page!, w.pos);
    if (r) await r;
    emitted++;
    for (const k of tied) {
      const p = cursors[k]!.next();
      if (p) await p;
    }
  }
}
