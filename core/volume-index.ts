import { z } from "zod";
import type { BlockRef, IndexEntry } from "./block-ref.ts";
import { BLOCK_SIZE, randomId } from "./bytes.ts";
import {
  buildDedupDelta,
  type DedupRuns,
  DedupRunsSchema,
  type HashRunRef,
  mergeDedupRuns,
} from "./dedup-index.ts";
import { CorruptObjectError, InvalidArgumentError } from "./errors.ts";
import {
  type IndexPage,
  IndexRunReader,
  IndexRunWriter,
  type IndexRunWriterOptions,
  mergeRuns,
  type RunInfo,
} from "./index-run.ts";
import { assertName, assertRunId, generationName, keys, type Repo } from "./layout.ts";
import { decodeMetadata, encodeMetadata } from "./metadata.ts";
import { ObjectNotFoundError } from "./ports/object-store.ts";

const RunRefSchema = z.object({
  key: z.string().min(1),
  entries: z.number().int().nonnegative(),
  bytes: z.number().int().positive(),
});
export type RunRef = z.infer<typeof RunRefSchema>;

const RootSchema = z.object({
  format: z.literal("cgmirror.volume-index"),
  version: z.string(),
  volumeId: z.string(),
  blockSize: z.literal(BLOCK_SIZE),
  sizeBytes: z.number().int().nonnegative(),
  generation: z.number().int().positive(),
  runId: z.string(),
  createdAt: z.string(),
  base: RunRefSchema.nullable(),
  deltas: z.array(RunRefSchema),
  /** Index metadata bytes written by this Prepare (delta + merges + root), for stats. */
  writtenBytes: z.number().int().nonnegative(),
  /** Dedup runs (hash → ref) of the blocks this volume stores; absent when dedup indexing is off. */
  dedup: DedupRunsSchema.optional(),
});
export type VolumeIndexRoot = z.infer<typeof RootSchema>;

/** When to merge index runs (docs/format.md, "Compaction"). */
export interface CompactionPolicy {
  /** Merge everything into a new base when the deltas' bytes exceed this fraction of the base. @default 0.5 */
  readonly maxDeltaRatio: number;
  /** Merge the newest deltas while the older one is at most this many times the merged newer ones. @default 1.5 */
  readonly tierRatio: number;
  /** Never keep more deltas than this (a full merge happens instead). @default 12 */
  readonly maxDeltas: number;
}

export const DEFAULT_COMPACTION: CompactionPolicy = { maxDeltaRatio: 0.5, tierRatio: 1.5, maxDeltas: 12 };

export type CompactionPlan = { readonly kind: "full" } | { readonly kind: "deltas"; readonly from: number };

/**
 * Decides the merges after appending a delta (`deltas` includes the new one, last). Pure.
 * `full`: base + all deltas → new base. `deltas` with `from`: deltas[from..] → one delta
 * (`from === deltas.length - 1` means no merge).
 */
export function planCompaction(
  base: RunRef | null,
  deltas: readonly RunRef[],
  policy: CompactionPolicy = DEFAULT_COMPACTION,
): CompactionPlan {
  if (base === null) return { kind: "full" };
  const total = deltas.reduce((s, d) => s + d.bytes, 0);
  if (total > policy.maxDeltaRatio * base.bytes) return { kind: "full" };
  let from = deltas.length - 1;
  let merged = deltas[from]?.bytes ?? 0;
  while (from >= 1 && deltas[from - 1]!.bytes <= policy.tierRatio * merged) {
    merged += deltas[from - 1]!.bytes;
    from--;
  }
  if (from + 1 > policy.maxDeltas) return { kind: "full" };
  return { kind: "deltas", from };
}

export async function readVolumeIndexRoot(
  repo: Repo,
  volumeId: string,
  versionId?: string,
): Promise<{ root: VolumeIndexRoot; versionId: string | undefined; etag: string }> {
  const key = keys.volumeIndex(repo, volumeId);
  const got = await repo.store.get(key, versionId ? { versionId } : {});
  const root = decodeMetadata(got.body, "cgmirror.volume-index", RootSchema, key, got.versionId);
  if (root.volumeId !== volumeId) {
    throw new CorruptObjectError(key, got.versionId, `it describes volume ${root.volumeId}`);
  }
  return { root, versionId: got.versionId, etag: got.etag };
}

/** A read-only view of one volume index version: base run + delta runs, newest wins. */
export class VolumeIndex {
  readonly root: VolumeIndexRoot;
  readonly versionId: string | undefined;
  /** Oldest → newest (base first). */
  readonly readers: readonly IndexRunReader[];
  readonly #cache = new Map<string, Promise<IndexPage>>();

  constructor(root: VolumeIndexRoot, versionId: string | undefined, readers: readonly IndexRunReader[]) {
    this.root = root;
    this.versionId = versionId;
    this.readers = readers;
  }

  get blockCount(): number {
    return Math.ceil(this.root.sizeBytes / BLOCK_SIZE);
  }

  /** The ref of one block, or undefined when the block was never written. Caches a few pages. */
  async lookup(block: number): Promise<BlockRef | undefined> {
    for (let r = this.readers.length - 1; r >= 0; r--) {
      const reader = this.readers[r]!;
      const p = reader.pageFor(block);
      if (p < 0) continue;
      const cacheKey = `${r}:${p}`;
      let page = this.#cache.get(cacheKey);
      if (!page) {
        page = reader.readPage(p);
        this.#cache.set(cacheKey, page);
        if (this.#cache.size > 16) this.#cache.delete(this.#cache.keys().next().value!);
      }
      const loaded = await page;
      const i = loaded.find(block);
      if (i >= 0) return loaded.ref(i);
    }
    return undefined;
  }

  /** Streams every live entry in block order, in batches. Memory: one page per run + one batch. */
  async scan(onBatch: (entries: IndexEntry[]) => Promise<void> | void, batchSize = 4096): Promise<number> {
    let batch: IndexEntry[] = [];
    const count = await mergeRuns(this.readers, (page, i) => {
      batch.push(page.entry(i));
      if (batch.length >= batchSize) {
        const full = batch;
        batch = [];
        return onBatch(full) || undefined;
      }
      return undefined;
    });
    if (batch.length > 0) await onBatch(batch);
    return count;
  }
}

/** Opens one version of a volume's index (the one a generation manifest names). */
export async function openVolumeIndex(
  repo: Repo,
  volumeId: string,
  versionId?: string,
): Promise<VolumeIndex> {
  const { root, versionId: v } = await readVolumeIndexRoot(repo, volumeId, versionId);
  return openVolumeIndexRoot(repo, root, v);
}

export async function openVolumeIndexRoot(
  repo: Repo,
  root: VolumeIndexRoot,
  versionId: string | undefined,
): Promise<VolumeIndex> {
  const runs = [...(root.base ? [root.base] : []), ...root.deltas];
  const readers = await Promise.all(runs.map((r) => IndexRunReader.open(repo.store, r.key, r.bytes)));
  return new VolumeIndex(root, versionId, readers);
}

function runName(generation: number, kind: string): string {
  return `${generationName(generation)}-${kind}-${randomId().slice(0, 12)}`;
}

async function mergeToRun(
  repo: Repo,
  key: string,
  readers: readonly IndexRunReader[],
  options?: IndexRunWriterOptions,
): Promise<RunInfo> {
  const w = new IndexRunWriter(repo.store, key, options);
  try {
    await mergeRuns(readers, (page, i) => w.appendFrom(page, i));
    return await w.finish();
  } catch (error) {
    await w.abort();
    throw error;
  }
}

function toRunRef(info: RunInfo): RunRef {
  return { key: info.key, entries: info.entries, bytes: info.bytes };
}

export interface PrepareVolumeOptions {
  readonly volumeId: string;
  readonly runId: string;
  readonly generation: number;
  readonly sizeBytes: number;
  /**
   * This run's changes for the volume: runs of (block → ref) written by the transfer shards
   * (e.g. at `keys.shardResult`). Any order; where two shards name one block the later one wins.
   */
  readonly changes: readonly RunInfo[];
  /**
   * The version of the index that the committed generation names (from its manifest), or null when
   * the volume is new. @default read from HEAD's manifest
   */
  readonly previousVersionId: string | null;
  readonly policy?: CompactionPolicy;
  readonly runOptions?: IndexRunWriterOptions;
  /** Maintain the volume's dedup runs (hash → ref) for GroupDedup. @default true */
  readonly dedupIndex?: boolean;
}

export interface PreparedVolume {
  readonly volumeId: string;
  readonly key: string;
  readonly versionId: string | undefined;
  readonly etag: string;
  readonly root: VolumeIndexRoot;
  /** True when no new version was written (nothing changed, or this run already prepared it). */
  readonly reused: boolean;
}

/**
 * Prepare (revertible): writes the volume's new index root as a new object version. Streams the
 * changes into one delta run, merges runs per the compaction policy, then PUTs the root with user
 * metadata `cgmirror-run-id`. Idempotent: when the current version was written by this run for this
 * generation it is returned as is. Revert deletes exactly the returned version id.
 */
export async function prepareVolume(repo: Repo, options: PrepareVolumeOptions): Promise<PreparedVolume> {
  assertName("volume id", options.volumeId);
  assertRunId(options.runId);
  if (
    !Number.isSafeInteger(options.sizeBytes) ||
    options.sizeBytes < 0 ||
    options.sizeBytes % BLOCK_SIZE !== 0
  ) {
    throw new InvalidArgumentError(
      `expected a volume size in whole 512 KiB blocks, got ${options.sizeBytes}`,
    );
  }
  const key = keys.volumeIndex(repo, options.volumeId);
  const latest = await readVolumeIndexRoot(repo, options.volumeId).catch((error: unknown) => {
    if (error instanceof ObjectNotFoundError) return undefined;
    throw error;
  });
  if (latest && latest.root.runId === options.runId && latest.root.generation === options.generation) {
    return {
      volumeId: options.volumeId,
      key,
      versionId: latest.versionId,
      etag: latest.etag,
      root: latest.root,
      reused: true,
    };
  }
  let previous: VolumeIndexRoot | null = null;
  if (options.previousVersionId !== null) {
    previous = (await readVolumeIndexRoot(repo, options.volumeId, options.previousVersionId)).root;
  }
  const changed = options.changes.filter((c) => c.entries > 0);
  if (previous && changed.length === 0 && previous.sizeBytes === options.sizeBytes) {
    // Nothing changed: the generation names the previous version again; nothing to revert.
    const etag = latest?.versionId === options.previousVersionId ? latest.etag : "";
    return {
      volumeId: options.volumeId,
      key,
      versionId: options.previousVersionId ?? undefined,
      etag,
      root: previous,
      reused: true,
    };
  }
  let written = 0;
  let newDelta: RunInfo | undefined;
  let base = previous?.base ?? null;
  let deltas = [...(previous?.deltas ?? [])];
  if (changed.length > 0) {
    const inputs = await Promise.all(changed.map((c) => IndexRunReader.open(repo.store, c.key, c.bytes)));
    const delta = await mergeToRun(
      repo,
      keys.volumeRun(repo, options.volumeId, runName(options.generation, "delta")),
      inputs,
      options.runOptions,
    );
    written += delta.bytes;
    newDelta = delta;
    deltas.push(toRunRef(delta));
    const plan = planCompaction(base, deltas, options.policy);
    if (plan.kind === "full" && base === null && deltas.length === 1) {
      // First generation of the volume: the delta is the base.
      base = deltas[0]!;
      deltas = [];
    } else if (plan.kind === "full") {
      const runs = [...(base ? [base] : []), ...deltas];
      const readers = await Promise.all(runs.map((r) => IndexRunReader.open(repo.store, r.key, r.bytes)));
      const merged = await mergeToRun(
        repo,
        keys.volumeRun(repo, options.volumeId, runName(options.generation, "base")),
        readers,
        options.runOptions,
      );
      written += merged.bytes;
      base = toRunRef(merged);
      deltas = [];
    } else if (plan.from < deltas.length - 1) {
      const tail = deltas.slice(plan.from);
      const readers = await Promise.all(tail.map((r) => IndexRunReader.open(repo.store, r.key, r.bytes)));
      const merged = await mergeToRun(
        repo,
        keys.volumeRun(repo, options.volumeId, runName(options.generation, "merge")),
        readers,
        options.runOptions,
      );
      written += merged.bytes;
      deltas = [...deltas.slice(0, plan.from), toRunRef(merged)];
    }
  }
  let dedup: DedupRuns | undefined = previous?.dedup;
  if (changed.length > 0 && options.dedupIndex !== false) {
    const d = await updateDedupRuns(repo, options, newDelta!, previous?.dedup ?? { base: null, deltas: [] });
    dedup = d.runs;
    written += d.written;
  }
  const rootBody = {
    volumeId: options.volumeId,
    blockSize: BLOCK_SIZE,
    sizeBytes: options.sizeBytes,
    generation: options.generation,
    runId: options.runId,
    createdAt: new Date().toISOString(),
    base,
    deltas,
    writtenBytes: 0,
    ...(dedup ? { dedup } : {}),
  };
  const probe = encodeMetadata("cgmirror.volume-index", rootBody);
  rootBody.writtenBytes = written + probe.byteLength;
  const bytes = encodeMetadata("cgmirror.volume-index", rootBody);
  const put = await repo.store.put(key, bytes, {
    metadata: { "cgmirror-run-id": options.runId, "cgmirror-generation": String(options.generation) },
    contentType: "application/json",
  });
  const root = decodeMetadata(bytes, "cgmirror.volume-index", RootSchema, key, put.versionId);
  return { volumeId: options.volumeId, key, versionId: put.versionId, etag: put.etag, root, reused: false };
}

/** Adds this generation's dedup delta to the volume's dedup runs and compacts them (same policy). */
async function updateDedupRuns(
  repo: Repo,
  options: PrepareVolumeOptions,
  delta: RunInfo,
  current: DedupRuns,
): Promise<{ runs: DedupRuns; written: number }> {
  const name = (kind: string) => keys.volumeRun(repo, options.volumeId, runName(options.generation, kind));
  const scratch = `${keys.runPrefix(repo, options.runId)}dedup-scratch/${options.volumeId}/`;
  const fresh = await buildDedupDelta(repo.store, delta, name("dedup"), scratch);
  if (!fresh) return { runs: current, written: 0 };
  const size = (r: HashRunRef) => r.bytes + r.bloomBytes;
  let written = size(fresh);
  let base = current.base;
  let deltas = [...current.deltas, fresh];
  const plan = planCompaction(base, deltas, options.policy);
  if (plan.kind === "full" && base === null && deltas.length === 1) {
    base = fresh;
    deltas = [];
  } else if (plan.kind === "full") {
    base = await mergeDedupRuns(repo.store, [...(base ? [base] : []), ...deltas], name("dedup-base"));
    written += size(base);
    deltas = [];
  } else if (plan.from < deltas.length - 1) {
    const merged = await mergeDedupRuns(repo.store, deltas.slice(plan.from), name("dedup-merge"));
    written += size(merged);
    deltas = [...deltas.slice(0, plan.from), merged];
  }
  return { runs: { base, deltas }, written };
}
