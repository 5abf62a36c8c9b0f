import { z } from "zod";
import { CorruptObjectError } from "../errors.ts";
import { ObjectNotFoundError } from "../ports/object-store.ts";
import type { BlockRef } from "./block-ref.ts";
import { BloomFilter } from "./bloom.ts";
import { toHex } from "./bytes.ts";
import { Codec } from "./codec.ts";
import { type RetiredSegments, readRetiredSegments } from "./gc-state.ts";
import { type GenerationManifest, readCommittedManifest } from "./generation.ts";
import { compareAt, type HashPage, HashRunReader, HashRunWriter, mergeHashRuns } from "./hash-run.ts";
import { type IndexPage, IndexRunReader, mergeRuns, type RunInfo } from "./index-run.ts";
import { keys, type Repo } from "./layout.ts";
import { Sha256Hex } from "./metadata.ts";
import type { DedupLookup } from "./segment.ts";

export const HashRunRefSchema = z.object({
  /** Relative to the repository prefix. */
  key: z.string().min(1),
  entries: z.number().int().nonnegative(),
  bytes: z.number().int().positive(),
  /** The run's checksum (trailer SHA-256). */
  sha256: Sha256Hex,
  bloomKey: z.string().min(1),
  bloomBytes: z.number().int().nonnegative(),
  /** The Bloom filter's checksum. */
  bloomSha256: Sha256Hex,
});
export type HashRunRef = z.infer<typeof HashRunRefSchema>;

export const DedupRunsSchema = z.object({
  base: HashRunRefSchema.nullable(),
  deltas: z.array(HashRunRefSchema),
});
export type DedupRuns = z.infer<typeof DedupRunsSchema>;

/** Entries sorted in memory per chunk before they are written; bounds Prepare's memory. */
const CHUNK_ENTRIES = 262_144;

type Emit = (
  hash: Uint8Array,
  segment: string,
  offset: number,
  length: number,
  codec: number,
) => Promise<void> | undefined;

async function writeSorted(
  repo: Repo,
  key: string,
  produce: (emit: Emit) => Promise<unknown>,
  bloomEntries: number,
): Promise<HashRunRef> {
  const w = new HashRunWriter(repo.store, key);
  const bloom = BloomFilter.forEntries(bloomEntries);
  await produce((h, segment, offset, length, codec) => {
    bloom.add(h);
    return w.appendRaw(h, segment, offset, length, codec);
  });
  const info = await w.finish();
  const bloomKey = `${key}.bloom`;
  const bloomBody = bloom.encode();
  await repo.store.put(bloomKey, bloomBody, { metadata: { "cgmirror-kind": "bloom" } });
  return {
    key: keys.relative(repo, info.key),
    entries: info.entries,
    bytes: info.bytes,
    sha256: info.sha256,
    bloomKey: keys.relative(repo, bloomKey),
    bloomBytes: bloomBody.byteLength,
    bloomSha256: BloomFilter.checksumOf(bloomBody),
  };
}

/** Opens a dedup run a root names, checking its size and pinned checksum. */
export function openHashRunRef(repo: Repo, ref: HashRunRef, from: string): Promise<HashRunReader> {
  return HashRunReader.open(repo.store, keys.resolve(repo, ref.key, from), {
    bytes: ref.bytes,
    sha256: ref.sha256,
  });
}

/** Reads and checks the Bloom filter a dedup run ref pins. */
export async function readBloomRef(repo: Repo, ref: HashRunRef, from: string): Promise<BloomFilter> {
  const key = keys.resolve(repo, ref.bloomKey, from);
  let bytes: Uint8Array;
  try {
    bytes = (await repo.store.get(key)).body;
  } catch (cause) {
    if (cause instanceof ObjectNotFoundError)
      throw new CorruptObjectError(key, undefined, "the Bloom filter is missing", { cause });
    throw cause;
  }
  if (bytes.byteLength !== ref.bloomBytes) {
    throw new CorruptObjectError(
      key,
      undefined,
      `Bloom filter is ${bytes.byteLength} bytes, its run says ${ref.bloomBytes}`,
    );
  }
  return BloomFilter.decode(bytes, key, ref.bloomSha256);
}

function mergeInto(readers: readonly HashRunReader[], retired?: RetiredSegments) {
  return (emit: Emit) =>
    mergeHashRuns(readers, (p, i) => {
      const segment = p.segTable[p.seg[i]!]!;
      // Entries into segments prune retired are dropped (§10.2): the set can shrink again.
      if (retired?.has(segment)) return undefined;
      return emit(p.key(i), segment, p.offsets[i]!, p.lengths[i]!, p.codecs[i]!);
    });
}

/** One chunk of stored refs, column-wise, sorted by hash through a permutation. */
class Chunk {
  readonly hashes = new Uint8Array(CHUNK_ENTRIES * 32);
  readonly segments: string[] = [];
  readonly offsets = new Uint32Array(CHUNK_ENTRIES);
  readonly lengths = new Uint32Array(CHUNK_ENTRIES);
  readonly codecs = new Uint8Array(CHUNK_ENTRIES);
  n = 0;

  get full(): boolean {
    return this.n >= CHUNK_ENTRIES;
  }

  add(page: IndexPage, i: number): void {
    this.hashes.set(page.hashes.subarray(i * 32, i * 32 + 32), this.n * 32);
    this.segments[this.n] = page.segmentOf(i)!;
    this.offsets[this.n] = page.offsets[i]!;
    this.lengths[this.n] = page.lengths[i]!;
    this.codecs[this.n] = page.codecs[i]!;
    this.n++;
  }

  async writeSorted(emit: Emit): Promise<void> {
    const h = this.hashes;
    // Sort by the first 4 hash bytes with a native numeric sort (prefix × 2^18 + index fits a
    // double exactly), then order the rare equal-prefix runs by the full hash.
    const packed = new Float64Array(this.n);
    for (let i = 0; i < this.n; i++) {
      const prefix =
        ((h[i * 32]! << 24) | (h[i * 32 + 1]! << 16) | (h[i * 32 + 2]! << 8) | h[i * 32 + 3]!) >>> 0;
      packed[i] = prefix * CHUNK_ENTRIES + i;
    }
    packed.sort();
    const order = Array.from(packed, (x) => x % CHUNK_ENTRIES);
    for (let a = 0; a < order.length; ) {
      let b = a + 1;
      const pa = Math.floor(packed[a]! / CHUNK_ENTRIES);
      while (b < order.length && Math.floor(packed[b]! / CHUNK_ENTRIES) === pa) b++;
      if (b - a > 1) {
        const run = order.slice(a, b).sort((x, y) => compareAt(h, x * 32, h, y * 32));
        for (let j = 0; j < run.length; j++) order[a + j] = run[j]!;
      }
      a = b;
    }
    let prev = -1;
    for (const i of order) {
      if (prev >= 0 && compareAt(h, prev * 32, h, i * 32) === 0) continue; // same content twice
      prev = i;
      const p = emit(
        h.subarray(i * 32, i * 32 + 32),
        this.segments[i]!,
        this.offsets[i]!,
        this.lengths[i]!,
        this.codecs[i]!,
      );
      if (p) await p;
    }
  }
}

/**
 * Builds the dedup delta run (hash → ref) of one block delta run: its stored (non-zero) refs,
 * sorted by hash. Memory: one chunk of CHUNK_ENTRIES refs (~16 MB); larger deltas are written as
 * sorted chunks under `scratchPrefix` and merged.
 */
export async function buildDedupDelta(
  repo: Repo,
  delta: RunInfo,
  key: string,
  scratchPrefix: string,
): Promise<HashRunRef | null> {
  const reader = await IndexRunReader.open(repo.store, delta.key, {
    bytes: delta.bytes,
    sha256: delta.sha256,
  });
  const chunks: HashRunRef[] = [];
  let chunk = new Chunk();
  let direct: HashRunRef | null = null;
  const flush = async (last: boolean) => {
    const c = chunk;
    chunk = new Chunk();
    if (last && chunks.length === 0) {
      direct = await writeSorted(repo, key, (emit) => c.writeSorted(emit), c.n);
    } else {
      chunks.push(
        await writeSorted(repo, `${scratchPrefix}${chunks.length}.run`, (emit) => c.writeSorted(emit), c.n),
      );
    }
  };
  await mergeRuns([reader], (page, i) => {
    if (page.codecs[i] === Codec.zero) return undefined;
    chunk.add(page, i);
    return chunk.full ? flush(false) : undefined;
  });
  if (chunk.n > 0) await flush(true);
  if (direct) return direct;
  if (chunks.length === 0) return null;
  const total = chunks.reduce((s, c) => s + c.entries, 0);
  const readers = await Promise.all(chunks.map((c) => openHashRunRef(repo, c, key)));
  const merged = await writeSorted(repo, key, mergeInto(readers), total);
  for (const c of chunks) {
    await repo.store.delete(keys.resolve(repo, c.key, key)).catch(() => {});
    await repo.store.delete(keys.resolve(repo, c.bloomKey, key)).catch(() => {});
  }
  return merged;
}

/**
 * Merges dedup runs (oldest → newest) into one new run with its Bloom filter, leaving out entries
 * into `retired` segments.
 */
export async function mergeDedupRuns(
  repo: Repo,
  runs: readonly HashRunRef[],
  key: string,
  retired?: RetiredSegments,
): Promise<HashRunRef> {
  const readers = await Promise.all(runs.map((r) => openHashRunRef(repo, r, key)));
  const total = runs.reduce((s, r) => s + r.entries, 0);
  return writeSorted(repo, key, mergeInto(readers, retired), total);
}

interface OpenRun {
  readonly reader: HashRunReader;
  readonly bloom: BloomFilter;
}

export interface GroupDedupStats {
  lookups: number;
  hits: number;
  bloomPositives: number;
  pagesRead: number;
}

/**
 * Group-wide dedup over what is **committed**: hash → ref over every block stored by the committed
 * generation's volumes (their dedup runs, each with a Bloom filter; every run and filter checked
 * against the root's pins). Read-only and immutable while a run holds the group, so a Lambda
 * container may keep it across invocations of one run. Blocks this attempt stored are added by a
 * `session()`, which one attempt owns and drops: nothing a failed attempt kept in memory is reused.
 */
export class GroupDedup implements DedupLookup {
  readonly #runs: readonly OpenRun[];
  readonly #retired: RetiredSegments;
  readonly #cache = new Map<string, Promise<HashPage>>();
  readonly stats: GroupDedupStats = { lookups: 0, hits: 0, bloomPositives: 0, pagesRead: 0 };

  private constructor(runs: readonly OpenRun[], retired: RetiredSegments) {
    this.#runs = runs;
    this.#retired = retired;
  }

  /**
   * Opens the dedup runs of every volume of `manifest` (default: the committed generation) and the
   * retired-segment set (blocks in retired segments are never dedup targets: prune deleted or repacked
   * them, §10.2).
   */
  static async open(repo: Repo, manifest?: GenerationManifest): Promise<GroupDedup> {
    const { retired } = await readRetiredSegments(repo);
    const m = manifest ?? (await readCommittedManifest(repo));
    if (!m) return new GroupDedup([], retired);
    const { readVolumeIndexRoot } = await import("./volume-index.ts");
    const runs: OpenRun[] = [];
    for (const v of m.volumes) {
      const { root } = await readVolumeIndexRoot(repo, v.volumeId, v.index);
      const from = keys.volumeIndex(repo, v.volumeId);
      const refs = root.dedup ? [...(root.dedup.base ? [root.dedup.base] : []), ...root.dedup.deltas] : [];
      for (const r of refs.reverse()) {
        const reader = await openHashRunRef(repo, r, from);
        runs.push({ reader, bloom: await readBloomRef(repo, r, from) });
      }
    }
    return new GroupDedup(runs, retired);
  }

  get runCount(): number {
    return this.#runs.length;
  }

  /** A lookup for one attempt: the committed blocks plus what this attempt recorded (durable only). */
  session(): DedupSession {
    return new DedupSession(this);
  }

  /** Looks up committed blocks only. */
  async lookup(hashes: readonly Uint8Array[]): Promise<(BlockRef | undefined)[]> {
    return Promise.all(hashes.map((h) => this.lookupCommitted(h)));
  }

  async lookupCommitted(hash: Uint8Array): Promise<BlockRef | undefined> {
    this.stats.lookups++;
    for (const [n, run] of this.#runs.entries()) {
      if (!run.bloom.mayContain(hash)) continue;
      this.stats.bloomPositives++;
      const p = run.reader.pageFor(hash);
      if (p < 0) continue;
      const cacheKey = `${n}:${p}`;
      let page = this.#cache.get(cacheKey);
      if (!page) {
        this.stats.pagesRead++;
        page = run.reader.readPage(p);
        this.#cache.set(cacheKey, page);
        // A failed read is not cached: the next lookup reads the page again.
        page.catch(() => this.#cache.delete(cacheKey));
        if (this.#cache.size > 64) this.#cache.delete(this.#cache.keys().next().value!);
      }
      const loaded = await page;
      const i = loaded.find(hash);
      if (i >= 0) {
        const ref = loaded.ref(i);
        if (this.#retired.has(ref.segment)) continue; // an older run may name a live copy
        this.stats.hits++;
        return ref;
      }
    }
    return undefined;
  }
}

/**
 * One attempt's dedup: committed blocks (GroupDedup) plus the blocks this attempt's SegmentWriter
 * recorded, which it does only once their segment upload was confirmed. Create one per attempt; never
 * share it with a retry.
 */
export class DedupSession implements DedupLookup {
  readonly #group: GroupDedup;
  readonly #durable = new Map<string, BlockRef>();

  constructor(group: GroupDedup) {
    this.#group = group;
  }

  get recorded(): number {
    return this.#durable.size;
  }

  async lookup(hashes: readonly Uint8Array[]): Promise<(BlockRef | undefined)[]> {
    return Promise.all(
      hashes.map(async (h) => {
        const local = this.#durable.get(toHex(h));
        if (local) {
          this.#group.stats.lookups++;
          this.#group.stats.hits++;
          return local;
        }
        return this.#group.lookupCommitted(h);
      }),
    );
  }

  record(hash: Uint8Array, ref: BlockRef): void {
    this.#durable.set(toHex(hash), ref);
  }
}
