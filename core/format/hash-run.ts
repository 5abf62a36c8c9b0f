import { CorruptObjectError, InvalidArgumentError } from "../errors.ts";
import type { MultipartUpload, ObjectStore } from "../ports/object-store.ts";
import type { BlockRef } from "./block-ref.ts";
import { equalBytes, sha256, toHex } from "./bytes.ts";
import { type CodecId, isKnownCodec } from "./codec.ts";
import { encodeRunTrailer, openRunTail, RUN_TRAILER_BYTES } from "./run-trailer.ts";

/*
 * Dedup run (docs/format.md, "Dedup runs"): an immutable table SHA-256 → stored ref, sorted by hash.
 * Same layout as an index run (pages | directory | trailer, trailer kind 2) with:
 *   page       "CGHP" count:u32 segCount:u16 reserved:u16 segTable[segCount×16]
 *              then count entries of 43 bytes: sha256[32] seg:u16 offset:u32 length:u32 codec:u8
 *   directory  per page: firstKey[32] lastKey[32] offset:u64 length:u32 count:u32 sha256[32] (112 B)
 */
export const RUN_KIND_HASH_INDEX = 2;
const PAGE_MAGIC = 0x50484743; // "CGHP" little-endian
const PAGE_HEAD = 12;
const ENTRY = 43;
const DIR_ENTRY = 112;
const MAX_SEGMENTS_PER_PAGE = 0xfffe;
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

/** A decoded dedup page, column-wise. */
export class HashPage {
  readonly count: number;
  readonly keys: Uint8Array; // count × 32
  readonly seg: Uint16Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  readonly codecs: Uint8Array;
  readonly segTable: readonly string[];

  constructor(f: {
    count: number;
    keys: Uint8Array;
    seg: Uint16Array;
    offsets: Uint32Array;
    lengths: Uint32Array;
    codecs: Uint8Array;
    segTable: readonly string[];
  }) {
    this.count = f.count;
    this.keys = f.keys;
    this.seg = f.seg;
    this.offsets = f.offsets;
    this.lengths = f.lengths;
    this.codecs = f.codecs;
    this.segTable = f.segTable;
  }

  key(i: number): Uint8Array {
    return this.keys.subarray(i * 32, i * 32 + 32);
  }

  ref(i: number): BlockRef {
    return {
      segment: this.segTable[this.seg[i]!]!,
      offset: this.offsets[i]!,
      length: this.lengths[i]!,
      codec: this.codecs[i]! as CodecId,
      sha256: this.keys.slice(i * 32, i * 32 + 32),
    };
  }

  find(key: Uint8Array): number {
    let lo = 0;
    let hi = this.count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = compareKeys(this.key(mid), key);
      if (c === 0) return mid;
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }
}

function decodeHashPage(bytes: Uint8Array, key: string): HashPage {
  const fail = (d: string) => new CorruptObjectError(key, undefined, `dedup page ${d}`);
  if (bytes.byteLength < PAGE_HEAD) throw fail("is truncated");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint32(0, true) !== PAGE_MAGIC) throw fail("magic is not CGHP");
  const count = dv.getUint32(4, true);
  const segCount = dv.getUint16(8, true);
  const at0 = PAGE_HEAD + segCount * 16;
  if (at0 + count * ENTRY !== bytes.byteLength) throw fail(`length does not match ${count} entries`);
  const segTable: string[] = [];
  for (let s = 0; s < segCount; s++)
    segTable.push(toHex(bytes.subarray(PAGE_HEAD + s * 16, PAGE_HEAD + s * 16 + 16)));
  const keys = new Uint8Array(count * 32);
  const seg = new Uint16Array(count);
  const offsets = new Uint32Array(count);
  const lengths = new Uint32Array(count);
  const codecs = new Uint8Array(count);
  for (let i = 0, at = at0; i < count; i++, at += ENTRY) {
    keys.set(bytes.subarray(at, at + 32), i * 32);
    if (i > 0 && compareKeys(keys.subarray((i - 1) * 32), keys.subarray(i * 32)) >= 0)
      throw fail(`entry ${i} is out of order`);
    const s = dv.getUint16(at + 32, true);
    const codec = dv.getUint8(at + 42);
    if (s >= segCount || !isKnownCodec(codec)) throw fail(`entry ${i} has an invalid segment or codec`);
    seg[i] = s;
    offsets[i] = dv.getUint32(at + 34, true);
    lengths[i] = dv.getUint32(at + 38, true);
    codecs[i] = codec;
  }
  return new HashPage({ count, keys, seg, offsets, lengths, codecs, segTable });
}

export interface HashRunInfo {
  readonly key: string;
  readonly entries: number;
  readonly bytes: number;
  /** The run's checksum (trailer SHA-256, hex). */
  readonly sha256: string;
}

/** Streams strictly ascending (by hash) entries into a new dedup run. Memory: one page + one part. */
export class HashRunWriter {
  readonly key: string;
  readonly #store: ObjectStore;
  readonly #pageEntries: number;
  readonly #partBytes: number;
  #segIndex = new Map<string, number>();
  #segTable: string[] = [];
  #buf: Uint8Array;
  #dv: DataView;
  #n = 0;
  #last = new Uint8Array(32);
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #offset = 0;
  #count = 0;
  readonly #directory: Uint8Array[] = [];
  #upload: MultipartUpload | undefined;
  #part = 1;

  constructor(store: ObjectStore, key: string, options: { pageEntries?: number; partBytes?: number } = {}) {
    this.#store = store;
    this.key = key;
    this.#pageEntries = options.pageEntries ?? DEFAULT_HASH_PAGE_ENTRIES;
    this.#partBytes = options.partBytes ?? 8 * 1024 * 1024;
    this.#buf = new Uint8Array(this.#pageEntries * ENTRY);
    this.#dv = new DataView(this.#buf.buffer);
  }

  get entries(): number {
    return this.#count;
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
    if (this.#count > 0 && compareKeys(this.#last, hash) >= 0) {
      throw new InvalidArgumentError(
        `dedup entries must be strictly ascending by hash; got ${toHex(hash.subarray(0, 32))}`,
      );
    }
    let s = this.#segIndex.get(segment);
    if (s === undefined) {
      s = this.#segTable.length;
      this.#segTable.push(segment);
      this.#segIndex.set(segment, s);
    }
    const at = this.#n * ENTRY;
    this.#buf.set(hash.subarray(0, 32), at);
    this.#dv.setUint16(at + 32, s, true);
    this.#dv.setUint32(at + 34, offset, true);
    this.#dv.setUint32(at + 38, length, true);
    this.#dv.setUint8(at + 42, codec);
    this.#last.set(hash.subarray(0, 32));
    this.#n++;
    this.#count++;
    if (this.#n >= this.#pageEntries || this.#segTable.length >= MAX_SEGMENTS_PER_PAGE)
      return this.#flushPage();
    return undefined;
  }

  /** Appends entry `i` of `page` without materialising a ref. */
  appendFrom(page: HashPage, i: number): Promise<void> | undefined {
    return this.appendRaw(
      page.key(i),
      page.segTable[page.seg[i]!]!,
      page.offsets[i]!,
      page.lengths[i]!,
      page.codecs[i]!,
    );
  }

  #flushPage(): Promise<void> | undefined {
    if (this.#n === 0) return undefined;
    const segBytes = this.#segTable.length * 16;
    const bytes = new Uint8Array(PAGE_HEAD + segBytes + this.#n * ENTRY);
    const dv = new DataView(bytes.buffer);
    dv.setUint32(0, PAGE_MAGIC, true);
    dv.setUint32(4, this.#n, true);
    dv.setUint16(8, this.#segTable.length, true);
    this.#segTable.forEach((id, i) => {
      bytes.set(Buffer.from(id, "hex"), PAGE_HEAD + i * 16);
    });
    bytes.set(this.#buf.subarray(0, this.#n * ENTRY), PAGE_HEAD + segBytes);
    const dir = new Uint8Array(DIR_ENTRY);
    const ddv = new DataView(dir.buffer);
    dir.set(this.#buf.subarray(0, 32), 0);
    dir.set(this.#buf.subarray((this.#n - 1) * ENTRY, (this.#n - 1) * ENTRY + 32), 32);
    ddv.setBigUint64(64, BigInt(this.#offset), true);
    ddv.setUint32(72, bytes.byteLength, true);
    ddv.setUint32(76, this.#n, true);
    dir.set(sha256(bytes), 80);
    this.#directory.push(dir);
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
    this.#upload ??= await this.#store.createMultipartUpload(this.key, {
      metadata: { "cgmirror-kind": "dedup-run" },
    });
    await this.#upload.uploadPart(this.#part++, body);
  }

  async finish(): Promise<HashRunInfo> {
    await this.#flushPage();
    const directory = Buffer.concat(this.#directory);
    const { trailer, sha256: runSha } = encodeRunTrailer(
      RUN_KIND_HASH_INDEX,
      this.#directory.length,
      this.#count,
      directory,
    );
    const body = Buffer.concat([...this.#pending, directory, trailer]);
    this.#pending = [];
    try {
      if (this.#upload) {
        await this.#upload.uploadPart(this.#part++, body);
        await this.#upload.complete();
      } else {
        await this.#store.put(this.key, body, {
          metadata: { "cgmirror-kind": "dedup-run" },
          checksumSha256: sha256(body),
        });
      }
    } catch (error) {
      await this.#upload?.abort().catch(() => {});
      throw error;
    }
    return {
      key: this.key,
      entries: this.#count,
      bytes: this.#offset + directory.byteLength + RUN_TRAILER_BYTES,
      sha256: runSha,
    };
  }
}

interface HashDir {
  readonly first: Uint8Array;
  readonly last: Uint8Array;
  readonly offset: number;
  readonly length: number;
  readonly count: number;
  readonly sha256: Uint8Array;
}

export class HashRunReader {
  readonly key: string;
  readonly entryCount: number;
  readonly #store: ObjectStore;
  readonly #dir: readonly HashDir[];

  private constructor(store: ObjectStore, key: string, entryCount: number, dir: HashDir[]) {
    this.#store = store;
    this.key = key;
    this.entryCount = entryCount;
    this.#dir = dir;
  }

  get pageCount(): number {
    return this.#dir.length;
  }

  /** Opens a dedup run: trailer, directory and their checksum (pinned by `expected.sha256`). */
  static async open(
    store: ObjectStore,
    key: string,
    expected: { readonly bytes?: number; readonly sha256?: string } = {},
  ): Promise<HashRunReader> {
    const t = await openRunTail(
      store,
      key,
      RUN_KIND_HASH_INDEX,
      DIR_ENTRY,
      "dedup run",
      expected,
      256 * 1024,
    );
    const dirBytes = t.directory;
    const ddv = new DataView(dirBytes.buffer, dirBytes.byteOffset, dirBytes.byteLength);
    const dir: HashDir[] = [];
    let expect = 0;
    let total = 0;
    for (let p = 0; p < t.pageCount; p++) {
      const at = p * DIR_ENTRY;
      const d: HashDir = {
        first: dirBytes.slice(at, at + 32),
        last: dirBytes.slice(at + 32, at + 64),
        offset: Number(ddv.getBigUint64(at + 64, true)),
        length: ddv.getUint32(at + 72, true),
        count: ddv.getUint32(at + 76, true),
        sha256: dirBytes.slice(at + 80, at + 112),
      };
      if (d.offset !== expect)
        throw new CorruptObjectError(key, t.versionId, `dedup page ${p} offset is wrong`);
      expect += d.length;
      total += d.count;
      dir.push(d);
    }
    if (total !== t.entryCount || expect + dirBytes.byteLength + RUN_TRAILER_BYTES !== t.size)
      throw new CorruptObjectError(key, t.versionId, "dedup run sizes are inconsistent");
    return new HashRunReader(store, key, t.entryCount, dir);
  }

  async readPage(p: number): Promise<HashPage> {
    const d = this.#dir[p];
    if (!d) throw new InvalidArgumentError(`page ${p} out of range`);
    const got = await this.#store.get(this.key, { range: { start: d.offset, end: d.offset + d.length } });
    if (got.body.byteLength !== d.length || !equalBytes(sha256(got.body), d.sha256)) {
      throw new CorruptObjectError(this.key, got.versionId, `dedup page ${p} fails its SHA-256 check`);
    }
    const page = decodeHashPage(got.body, this.key);
    if (page.count !== d.count)
      throw new CorruptObjectError(this.key, got.versionId, `dedup page ${p} disagrees with the directory`);
    return page;
  }

  pageFor(hash: Uint8Array): number {
    let lo = 0;
    let hi = this.#dir.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const d = this.#dir[mid]!;
      if (compareKeys(hash, d.first) < 0) hi = mid - 1;
      else if (compareKeys(hash, d.last) > 0) lo = mid + 1;
      else return mid;
    }
    return -1;
  }
}

/** K-way merge of dedup runs (oldest → newest; on equal hashes the newest wins). Emits (page, i). */
export async function mergeHashRuns(
  readers: readonly HashRunReader[],
  emit: (page: HashPage, i: number) => Promise<void> | undefined | void,
): Promise<number> {
  const cur = readers.map((r) => ({
    r,
    p: -1,
    page: undefined as HashPage | undefined,
    i: 0,
    next: undefined as Promise<HashPage> | undefined,
  }));
  const advancePage = async (c: (typeof cur)[number]) => {
    for (;;) {
      c.p++;
      if (c.p >= c.r.pageCount) {
        c.page = undefined;
        return;
      }
      const now = c.next ?? c.r.readPage(c.p);
      c.next = c.p + 1 < c.r.pageCount ? c.r.readPage(c.p + 1) : undefined;
      c.next?.catch(() => {});
      c.page = await now;
      c.i = 0;
      if (c.page.count > 0) return;
    }
  };
  await Promise.all(cur.map(advancePage));
  const min = new Uint8Array(32);
  const tied: number[] = [];
  let n = 0;
  for (;;) {
    let win = -1;
    tied.length = 0;
    for (let k = 0; k < cur.length; k++) {
      const c = cur[k]!;
      if (!c.page) continue;
      const cmp = win < 0 ? -1 : compareAt(c.page.keys, c.i * 32, min, 0);
      if (cmp < 0) {
        min.set(c.page.keys.subarray(c.i * 32, c.i * 32 + 32));
        win = k;
        tied.length = 0;
        tied.push(k);
      } else if (cmp === 0) {
        win = k; // later (newer) runs win ties
        tied.push(k);
      }
    }
    if (win < 0) return n;
    const w = cur[win]!;
    const r = emit(w.page!, w.i);
    if (r) await r;
    n++;
    for (const k of tied) {
      const c = cur[k]!;
      c.i++;
      if (c.i >= c.page!.count) await advancePage(c);
    }
  }
}
