import { z } from "zod";
import { CorruptObjectError } from "../errors.ts";
import { ObjectNotFoundError } from "../ports/object-store.ts";
import { BloomFilter } from "./bloom.ts";
import { Codec } from "./codec.ts";
import type { RetiredSegments } from "./gc-state.ts";
import { compareAt, HashRunReader, HashRunWriter, mergeHashRuns } from "./hash-run.ts";
import { type IndexPage, IndexRunReader, mergeRuns, type RunInfo } from "./index-run.ts";
import { keys, type Repo } from "./layout.ts";
import { Sha256Hex } from "./metadata.ts";

/*
 * A volume's dedup runs (docs/format.md §10): the hash → ref runs and Bloom filters a volume index
 * root names, how Prepare builds a delta from a block delta run and how it merges them. The lookup
 * over them is core/format/dedup-index.ts (GroupDedup), which reads roots through core/format/volume-index.ts;
 * this file must not import either, so the three stay free of an import circle.
 */
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

/**
 * One chunk of stored refs, column-wise, sorted by hash through a permutation. Sized for the entries
 * still to come (at most CHUNK_ENTRIES): a delta of a few blocks does not zero 10 MB of columns.
 */
class Chunk {
  readonly hashes: Uint8Array;
  readonly segments: string[] = [];
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  readonly codecs: Uint8Array;
  readonly capacity: number;
  n = 0;

  constructor(capacity: number) {
    this.capacity = capacity;
    this.hashes = new Uint8Array(capacity * 32);
    this.offsets = new Uint32Array(capacity);
    this.lengths = new Uint32Array(capacity);
    this.codecs = new Uint8Array(capacity);
  }

  get full(): boolean {
    return this.n >= this.capacity;
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
 * sorted by hash. Memory: one chunk of at most CHUNK_ENTRIES refs (~16 MB), sized for the delta;
 * larger deltas are written as sorted chunks under `scratchPrefix` and merged.
 */
export async function buildDedupDelta(
  repo: Repo,
  delta: RunInfo,
  key: string,
  scratchPrefix: string,
  /** Refs per sorted chunk (tests use a few to exercise the chunk merge). */
  chunkEntries = CHUNK_ENTRIES,
): Promise<HashRunRef | null> {
  const reader = await IndexRunReader.open(repo.store, delta.key, {
    bytes: delta.bytes,
    sha256: delta.sha256,
  });
  const chunks: HashRunRef[] = [];
  // `seen` counts the entries done, zero refs included: a chunk never needs more room than the
  // entries left.
  let seen = 0;
  const nextChunk = () => new Chunk(Math.max(1, Math.min(chunkEntries, CHUNK_ENTRIES, delta.entries - seen)));
  let chunk = nextChunk();
  let direct: HashRunRef | null = null;
  const flush = async (last: boolean) => {
    const c = chunk;
    if (!last) chunk = nextChunk();
    if (last && chunks.length === 0) {
      direct = await writeSorted(repo, key, (emit) => c.writeSorted(emit), c.n);
    } else {
      chunks.push(
        await writeSorted(repo, `${scratchPrefix}${chunks.length}.run`, (emit) => c.writeSorted(emit), c.n),
      );
    }
  };
  const add = (page: IndexPage, i: number) => {
    chunk.add(page, i);
    seen++;
  };
  await mergeRuns([reader], (page, i) => {
    if (page.codecs[i] === Codec.zero) {
      seen++;
      return undefined;
    }
    // A full chunk is written out only when another ref comes: a delta that fits one chunk is
    // sorted and written once, with no scratch chunk to merge and delete.
    if (chunk.full) return flush(false).then(() => add(page, i));
    add(page, i);
    return undefined;
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
