import { z } from "zod";
import {
  CorruptObjectError,
  InvalidArgumentError,
  UnsupportedFormatError,
  VolumeShrunkError,
} from "../errors.ts";
import { ObjectNotFoundError, PreconditionFailedError } from "../ports/object-store.ts";
import type { BlockRef, IndexEntry } from "./block-ref.ts";
import { BLOCK_SIZE, randomId } from "./bytes.ts";
import {
  buildDedupDelta,
  type DedupRuns,
  DedupRunsSchema,
  type HashRunRef,
  mergeDedupRuns,
} from "./dedup-index.ts";
import { readRetiredSegments } from "./gc-state.ts";
import { getPinned } from "./generation.ts";
import {
  type IndexPage,
  IndexRunReader,
  IndexRunWriter,
  type IndexRunWriterOptions,
  mergeRuns,
  type RunInfo,
} from "./index-run.ts";
import { assertName, assertRunId, generationName, keys, type Repo } from "./layout.ts";
import { openMetadata, Sha256Hex, sealMetadata } from "./metadata.ts";

const RunRefSchema = z.object({
  /** Relative to the repository prefix. */
  key: z.string().min(1),
  entries: z.number().int().nonnegative(),
  bytes: z.number().int().positive(),
  /** The run's checksum (its trailer's SHA-256): pins the exact run. */
  sha256: Sha256Hex,
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
  /** The fencing number of the run that wrote this version (Recover deletes only older runs' leftovers). */
  fencing: z.number().int().positive(),
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

/** Where one version of a volume's index root is (a manifest's `index` pin). */
export interface RootPin {
  readonly versionId: string | null;
  /** The root's sealed SHA-256 (authoritative); omitted only to read the current version. */
  readonly sha256?: string;
}

export interface RootState {
  readonly root: VolumeIndexRoot;
  readonly versionId: string | undefined;
  readonly etag: string;
  /** The root's sealed SHA-256: what a manifest pins. */
  readonly sha256: string;
}

function openRoot(
  body: Uint8Array,
  key: string,
  volumeId: string,
  versionId: string | undefined,
  sha?: string,
): { root: VolumeIndexRoot; sha256: string } {
  const { value: root, sha256 } = openMetadata(
    body,
    "cgmirror.volume-index",
    RootSchema,
    key,
    versionId,
    sha,
  );
  if (root.volumeId !== volumeId) {
    throw new CorruptObjectError(key, versionId, `it describes volume ${root.volumeId}`);
  }
  return { root, sha256 };
}

/**
 * Reads one version of a volume's index root. With a pin (a manifest's `index`), the version must be
 * the pinned bytes (found by SHA-256 among the key's versions when the version id does not match,
 * e.g. in a copy); without one, the current version is read.
 */
export async function readVolumeIndexRoot(repo: Repo, volumeId: string, pin?: RootPin): Promise<RootState> {
  const key = keys.volumeIndex(repo, volumeId);
  if (pin?.sha256 === undefined) {
    const got = await repo.store.get(key, pin?.versionId ? { versionId: pin.versionId } : {});
    const { root, sha256 } = openRoot(got.body, key, volumeId, got.versionId);
    return { root, versionId: got.versionId, etag: got.etag, sha256 };
  }
  const sha = pin.sha256;
  const { value, versionId, etag } = await getPinned(repo.store, key, pin.versionId, (body, v) =>
    openRoot(body, key, volumeId, v, sha),
  );
  return { root: value.root, versionId, etag, sha256: value.sha256 };
}

/** The full keys of every run (block and dedup, with Bloom filters) a root names. */
export function runKeysOf(repo: Repo, root: VolumeIndexRoot, from: string): string[] {
  const dedup = root.dedup ? [...(root.dedup.base ? [root.dedup.base] : []), ...root.dedup.deltas] : [];
  return [
    ...(root.base ? [root.base.key] : []),
    ...root.deltas.map((d) => d.key),
    ...dedup.flatMap((d) => [d.key, d.bloomKey]),
  ].map((k) => keys.resolve(repo, k, from));
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

/** Opens one version of a volume's index (the one a generation manifest pins). */
export async function openVolumeIndex(repo: Repo, volumeId: string, pin?: RootPin): Promise<VolumeIndex> {
  const { root, versionId } = await readVolumeIndexRoot(repo, volumeId, pin);
  return openVolumeIndexRoot(repo, root, versionId);
}

export async function openVolumeIndexRoot(
  repo: Repo,
  root: VolumeIndexRoot,
  versionId: string | undefined,
): Promise<VolumeIndex> {
  const from = keys.volumeIndex(repo, root.volumeId);
  const runs = [...(root.base ? [root.base] : []), ...root.deltas];
  const readers = await Promise.all(runs.map((r) => openRunRef(repo, r, from)));
  return new VolumeIndex(root, versionId, readers);
}

/** Opens a run a root names, checking its size and pinned checksum. */
export function openRunRef(repo: Repo, ref: RunRef, from: string): Promise<IndexRunReader> {
  return IndexRunReader.open(repo.store, keys.resolve(repo, ref.key, from), {
    bytes: ref.bytes,
    sha256: ref.sha256,
  });
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

function toRunRef(repo: Repo, info: RunInfo): RunRef {
  return {
    key: keys.relative(repo, info.key),
    entries: info.entries,
    bytes: info.bytes,
    sha256: info.sha256,
  };
}

export interface PrepareVolumeOptions {
  readonly volumeId: string;
  readonly runId: string;
  /** The run's fencing number (recorded in the root; Recover deletes only older runs' leftovers). */
  readonly fencing: number;
  readonly generation: number;
  readonly sizeBytes: number;
  /**
   * This run's changes for the volume: runs of (block → ref) written by the transfer shards
   * (e.g. at `keys.shardResult`), each pinned by its checksum. Any order; where two shards name one
   * block the later one wins.
   */
  readonly changes: readonly RunInfo[];
  /** The committed generation's pin of this volume's index (from its manifest), or null for a new volume. */
  readonly previous: { readonly versionId: string | null; readonly sha256: string } | null;
  readonly policy?: CompactionPolicy;
  readonly runOptions?: IndexRunWriterOptions;
  /** Maintain the volume's dedup runs (hash → ref) for GroupDedup. @default true */
  readonly dedupIndex?: boolean;
}

export interface PreparedVolume {
  readonly volumeId: string;
  readonly key: string;
  readonly versionId: string | undefined;
  /** The root's sealed SHA-256 (what the manifest pins). */
  readonly sha256: string;
  readonly root: VolumeIndexRoot;
  /** True when no new version was written (nothing changed, or this run already prepared it). */
  readonly reused: boolean;
}

/**
 * The versions of a volume's index root written after `since` (newest first), with their roots.
 * A version that cannot be read is reported with `root: undefined` (never guessed at).
 */
export async function newerRootVersions(
  repo: Repo,
  volumeId: string,
  since: string | null,
): Promise<Array<{ versionId: string; root: VolumeIndexRoot | undefined; error?: unknown }>> {
  const key = keys.volumeIndex(repo, volumeId);
  const out: Array<{ versionId: string; root: VolumeIndexRoot | undefined; error?: unknown }> = [];
  for await (const v of repo.store.listVersions(key)) {
    if (v.key !== key) continue;
    if (v.versionId === since) break; // older versions belong to committed generations
    if (v.isDeleteMarker) continue;
    try {
      const got = await repo.store.get(key, { versionId: v.versionId });
      out.push({ versionId: v.versionId, root: openRoot(got.body, key, volumeId, got.versionId).root });
    } catch (error) {
      if (error instanceof ObjectNotFoundError) continue; // deleted meanwhile
      if (!(error instanceof CorruptObjectError) && !(error instanceof UnsupportedFormatError)) throw error;
      out.push({ versionId: v.versionId, root: undefined, error });
    }
  }
  return out;
}

function checkPrepareOptions(options: PrepareVolumeOptions): void {
  assertName("volume id", options.volumeId);
  assertRunId(options.runId);
  if (!Number.isSafeInteger(options.fencing) || options.fencing < 1) {
    throw new InvalidArgumentError(`expected a positive fencing number, got ${options.fencing}`);
  }
  if (
    !Number.isSafeInteger(options.sizeBytes) ||
    options.sizeBytes < 0 ||
    options.sizeBytes % BLOCK_SIZE !== 0
  ) {
    throw new InvalidArgumentError(
      `expected a volume size in whole 512 KiB blocks, got ${options.sizeBytes}`,
    );
  }
}

/**
 * Prepare (revertible): writes the volume's new index root as a new object version. Streams the
 * changes into one delta run, merges runs per the compaction policy, then PUTs the root (recording
 * the run id, its fencing number and the generation). Idempotent: a version this run already wrote
 * for this generation (a retried or duplicated Prepare) is returned as is. Revert deletes exactly the
 * returned version id. The caller checks the fence first (`assertFenced`).
 * @throws VolumeShrunkError when the volume is smaller than in the committed generation
 */
export async function prepareVolume(repo: Repo, options: PrepareVolumeOptions): Promise<PreparedVolume> {
  checkPrepareOptions(options);
  const key = keys.volumeIndex(repo, options.volumeId);
  const previousState = options.previous
    ? await readVolumeIndexRoot(repo, options.volumeId, options.previous)
    : undefined;
  const previous = previousState?.root ?? null;
  if (previous && options.sizeBytes < previous.sizeBytes) {
    throw new VolumeShrunkError(options.volumeId, previous.sizeBytes, options.sizeBytes);
  }
  for (const v of await newerRootVersions(repo, options.volumeId, previousState?.versionId ?? null)) {
    const r = v.root;
    if (
      r &&
      r.runId === options.runId &&
      r.fencing === options.fencing &&
      r.generation === options.generation
    ) {
      const state = await readVolumeIndexRoot(repo, options.volumeId, { versionId: v.versionId });
      return {
        volumeId: options.volumeId,
        key,
        versionId: v.versionId,
        sha256: state.sha256,
        root: r,
        reused: true,
      };
    }
  }
  const changed = options.changes.filter((c) => c.entries > 0);
  if (previousState && changed.length === 0 && previousState.root.sizeBytes === options.sizeBytes) {
    // Nothing changed: the generation names the previous version again; nothing to revert.
    return {
      volumeId: options.volumeId,
      key,
      versionId: previousState.versionId,
      sha256: previousState.sha256,
      root: previousState.root,
      reused: true,
    };
  }
  const from = key;
  let written = 0;
  let newDelta: RunInfo | undefined;
  let base = previous?.base ?? null;
  let deltas = [...(previous?.deltas ?? [])];
  const open = (runs: readonly RunRef[]) => Promise.all(runs.map((r) => openRunRef(repo, r, from)));
  if (changed.length > 0) {
    const inputs = await Promise.all(
      changed.map((c) => IndexRunReader.open(repo.store, c.key, { bytes: c.bytes, sha256: c.sha256 })),
    );
    const delta = await mergeToRun(
      repo,
      keys.volumeRun(repo, options.volumeId, runName(options.generation, "delta")),
      inputs,
      options.runOptions,
    );
    written += delta.bytes;
    newDelta = delta;
    deltas.push(toRunRef(repo, delta));
    const plan = planCompaction(base, deltas, options.policy);
    if (plan.kind === "full" && base === null && deltas.length === 1) {
      // First generation of the volume: the delta is the base.
      base = deltas[0]!;
      deltas = [];
    } else if (plan.kind === "full") {
      const merged = await mergeToRun(
        repo,
        keys.volumeRun(repo, options.volumeId, runName(options.generation, "base")),
        await open([...(base ? [base] : []), ...deltas]),
        options.runOptions,
      );
      written += merged.bytes;
      base = toRunRef(repo, merged);
      deltas = [];
    } else if (plan.from < deltas.length - 1) {
      const merged = await mergeToRun(
        repo,
        keys.volumeRun(repo, options.volumeId, runName(options.generation, "merge")),
        await open(deltas.slice(plan.from)),
        options.runOptions,
      );
      written += merged.bytes;
      deltas = [...deltas.slice(0, plan.from), toRunRef(repo, merged)];
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
    fencing: options.fencing,
    createdAt: new Date().toISOString(),
    base,
    deltas,
    writtenBytes: 0,
    ...(dedup ? { dedup } : {}),
  };
  const probe = sealMetadata("cgmirror.volume-index", rootBody);
  rootBody.writtenBytes = written + probe.bytes.byteLength;
  const sealed = sealMetadata("cgmirror.volume-index", rootBody);
  // The new version is written conditionally on the version current a moment ago, so two deliveries of
  // this Prepare running at once cannot both add a version: the loser finds the winner's and uses it.
  for (let attempt = 0; attempt < 8; attempt++) {
    const current = await repo.store.head(key);
    if (attempt > 0) {
      const mine = await findOwnVersion(repo, options, previousState?.versionId ?? null);
      if (mine) return mine;
    }
    try {
      const put = await repo.store.put(key, sealed.bytes, {
        ...(current ? { ifMatch: current.etag } : { ifNoneMatch: "*" as const }),
        metadata: {
          "cgmirror-run-id": options.runId,
          "cgmirror-fencing": String(options.fencing),
          "cgmirror-generation": String(options.generation),
        },
        contentType: "application/json",
      });
      const root = openRoot(sealed.bytes, key, options.volumeId, put.versionId, sealed.sha256).root;
      return {
        volumeId: options.volumeId,
        key,
        versionId: put.versionId,
        sha256: sealed.sha256,
        root,
        reused: false,
      };
    } catch (error) {
      if (!(error instanceof PreconditionFailedError)) throw error;
    }
  }
  throw new PreconditionFailedError(key, "the index root kept changing while this run prepared it");
}

/** The version of the index this run (run id + fencing) already wrote for this generation, if any. */
async function findOwnVersion(
  repo: Repo,
  options: PrepareVolumeOptions,
  since: string | null,
): Promise<PreparedVolume | undefined> {
  for (const v of await newerRootVersions(repo, options.volumeId, since)) {
    const r = v.root;
    if (
      r &&
      r.runId === options.runId &&
      r.fencing === options.fencing &&
      r.generation === options.generation
    ) {
      const state = await readVolumeIndexRoot(repo, options.volumeId, { versionId: v.versionId });
      return {
        volumeId: options.volumeId,
        key: keys.volumeIndex(repo, options.volumeId),
        versionId: v.versionId,
        sha256: state.sha256,
        root: r,
        reused: true,
      };
    }
  }
  return undefined;
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
  const fresh = await buildDedupDelta(repo, delta, name("dedup"), scratch);
  if (!fresh) return { runs: current, written: 0 };
  const size = (r: HashRunRef) => r.bytes + r.bloomBytes;
  let written = size(fresh);
  let base = current.base;
  let deltas = [...current.deltas, fresh];
  const plan = planCompaction(base, deltas, options.policy);
  // Merges leave out entries into segments prune retired (docs/format.md §10.2).
  const retired = () => readRetiredSegments(repo).then((r) => r.retired);
  if (plan.kind === "full" && base === null && deltas.length === 1) {
    base = fresh;
    deltas = [];
  } else if (plan.kind === "full") {
    base = await mergeDedupRuns(
      repo,
      [...(base ? [base] : []), ...deltas],
      name("dedup-base"),
      await retired(),
    );
    written += size(base);
    deltas = [];
  } else if (plan.from < deltas.length - 1) {
    const merged = await mergeDedupRuns(repo, deltas.slice(plan.from), name("dedup-merge"), await retired());
    written += size(merged);
    deltas = [...deltas.slice(0, plan.from), merged];
  }
  return { runs: { base, deltas }, written };
}
