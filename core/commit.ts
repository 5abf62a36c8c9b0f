import { CommitConflictError } from "./errors.ts";
import {
  decodeManifest,
  encodeHead,
  encodeManifest,
  type GenerationManifest,
  type ManifestVolume,
  readHead,
  readManifest,
} from "./generation.ts";
import { assertRunId, keys, type Repo } from "./layout.ts";
import { assertLockHeld, type LockLease } from "./lock.ts";
import { PreconditionFailedError } from "./ports/object-store.ts";
import { readVolumeIndexRoot, type VolumeIndexRoot } from "./volume-index.ts";

export interface CommitVolume {
  readonly volumeId: string;
  readonly sizeBytes: number;
  readonly sourceSnapshotId: string | null;
  /** The version `prepareVolume` returned (or the previous one for an unchanged volume). */
  readonly indexVersionId: string | null;
  readonly stats?: ManifestVolume["stats"];
}

export interface CommitOptions {
  readonly runId: string;
  /** The consistency point (when the snapshots were initiated). */
  readonly pointInTime: Date;
  readonly volumes: readonly CommitVolume[];
  /** Expected new generation number. @default HEAD's + 1 */
  readonly generation?: number;
  readonly stats?: GenerationManifest["stats"];
  /** When given, the commit refuses (LockLostError) unless this lease still holds the group lock. */
  readonly lease?: LockLease;
}

export interface CommitResult {
  readonly generation: number;
  readonly manifestKey: string;
  readonly manifestVersionId: string | undefined;
  readonly headEtag: string;
  /** True when HEAD already named this run (a retried Commit). */
  readonly alreadyCommitted: boolean;
}

/**
 * Commit: writes `generations/<n>.json` (If-None-Match: *), then moves HEAD with If-Match on the
 * previous ETag (If-None-Match: * for the first generation). The group is committed at the HEAD
 * write. Idempotent: a retry after success returns `alreadyCommitted`.
 * @throws CommitConflictError when HEAD moved or the generation number is not the next one.
 */
export async function commitGeneration(repo: Repo, options: CommitOptions): Promise<CommitResult> {
  assertRunId(options.runId);
  const state = await readHead(repo);
  if (state?.head.runId === options.runId) {
    return {
      generation: state.head.generation,
      manifestKey: state.head.manifestKey,
      manifestVersionId: state.head.manifestVersionId ?? undefined,
      headEtag: state.etag,
      alreadyCommitted: true,
    };
  }
  const generation = (state?.head.generation ?? 0) + 1;
  if (options.generation !== undefined && options.generation !== generation) {
    throw new CommitConflictError(
      `expected to commit generation ${options.generation} but HEAD is at ${generation - 1}`,
    );
  }
  if (options.lease) await assertLockHeld(repo, options.lease);
  const manifestKey = keys.generation(repo, generation);
  const now = new Date().toISOString();
  const body = encodeManifest({
    group: repo.group,
    generation,
    previousGeneration: state?.head.generation ?? null,
    runId: options.runId,
    fencing: options.lease?.fencing ?? null,
    pointInTime: options.pointInTime.toISOString(),
    committedAt: now,
    volumes: options.volumes.map((v) => ({
      volumeId: v.volumeId,
      sizeBytes: v.sizeBytes,
      sourceSnapshotId: v.sourceSnapshotId,
      indexKey: keys.volumeIndex(repo, v.volumeId),
      indexVersionId: v.indexVersionId,
      stats: v.stats ?? {},
    })),
    stats: options.stats ?? {},
  });
  let manifestVersionId: string | undefined;
  try {
    manifestVersionId = (
      await repo.store.put(manifestKey, body, { ifNoneMatch: "*", contentType: "application/json" })
    ).versionId;
  } catch (error) {
    if (!(error instanceof PreconditionFailedError)) throw error;
    // A manifest for this number exists but HEAD does not name it: ours from a retried Commit, or a
    // leftover of a run that died before moving HEAD (we hold the lock, so it is not live).
    const existing = await repo.store.get(manifestKey);
    const other = decodeManifest(existing.body, manifestKey, existing.versionId);
    if (other.runId === options.runId) {
      manifestVersionId = existing.versionId;
    } else {
      manifestVersionId = (await repo.store.put(manifestKey, body, { ifMatch: existing.etag })).versionId;
    }
  }
  const head = encodeHead({
    group: repo.group,
    generation,
    manifestKey,
    manifestVersionId: manifestVersionId ?? null,
    runId: options.runId,
    committedAt: now,
  });
  try {
    const put = await repo.store.put(
      keys.head(repo),
      head,
      state
        ? { ifMatch: state.etag, contentType: "application/json" }
        : { ifNoneMatch: "*", contentType: "application/json" },
    );
    return { generation, manifestKey, manifestVersionId, headEtag: put.etag, alreadyCommitted: false };
  } catch (error) {
    if (!(error instanceof PreconditionFailedError)) throw error;
    const now2 = await readHead(repo);
    if (now2?.head.runId === options.runId) {
      return { generation, manifestKey, manifestVersionId, headEtag: now2.etag, alreadyCommitted: true };
    }
    throw new CommitConflictError(
      `HEAD moved to generation ${now2?.head.generation ?? "?"} (run ${now2?.head.runId ?? "?"}) during this commit`,
      { cause: error },
    );
  }
}

export interface RevertedObject {
  readonly key: string;
  readonly versionId: string;
}

export interface RevertResult {
  /** Index root versions deleted (the revertible Prepare writes). */
  readonly indexVersions: readonly RevertedObject[];
  /** Other objects deleted: uncommitted manifest, index runs only the reverted roots named, transient run files. */
  readonly otherObjects: readonly RevertedObject[];
}

/** Volume ids that have an index object (listing `volumes/`). */
async function discoverVolumes(repo: Repo): Promise<string[]> {
  const prefix = keys.volumesPrefix(repo);
  const ids = new Set<string>();
  for await (const v of repo.store.listVersions(prefix)) {
    const m = /^([^/]+)\/index$/.exec(v.key.slice(prefix.length));
    if (m) ids.add(m[1]!);
  }
  return [...ids];
}

async function deleteAllVersions(
  repo: Repo,
  prefix: string,
  exact: boolean,
  out: RevertedObject[],
): Promise<void> {
  for await (const v of repo.store.listVersions(prefix)) {
    if (exact && v.key !== prefix) continue;
    await repo.store.delete(v.key, { versionId: v.versionId });
    out.push({ key: v.key, versionId: v.versionId });
  }
}

function runKeys(root: VolumeIndexRoot): string[] {
  const dedup = root.dedup ? [...(root.dedup.base ? [root.dedup.base] : []), ...root.dedup.deltas] : [];
  return [
    ...(root.base ? [root.base.key] : []),
    ...root.deltas.map((d) => d.key),
    ...dedup.flatMap((d) => [d.key, d.bloomKey]),
  ];
}

/**
 * Deletes every index version newer than the committed one whose run id satisfies `matches`, plus
 * what only those versions reference. The committed generation is never touched.
 */
async function revertMatching(
  repo: Repo,
  matches: (runId: string) => boolean,
  volumeIds: readonly string[] | undefined,
): Promise<RevertResult> {
  const state = await readHead(repo);
  const committed = state
    ? await readManifest(repo, state.head.generation, state.head.manifestVersionId ?? undefined)
    : undefined;
  const committedVersion = new Map(committed?.volumes.map((v) => [v.volumeId, v.indexVersionId]) ?? []);
  const volumes = new Set([...(volumeIds ?? (await discoverVolumes(repo))), ...committedVersion.keys()]);
  const indexVersions: RevertedObject[] = [];
  const otherObjects: RevertedObject[] = [];
  for (const volumeId of volumes) {
    const key = keys.volumeIndex(repo, volumeId);
    const keep = committedVersion.get(volumeId) ?? null;
    const keepRuns = new Set<string>();
    if (keep)
      for (const k of runKeys((await readVolumeIndexRoot(repo, volumeId, keep)).root)) keepRuns.add(k);
    const newer: string[] = [];
    for await (const v of repo.store.listVersions(key)) {
      if (v.key !== key) continue;
      if (v.versionId === keep) break; // older versions belong to committed generations
      if (!v.isDeleteMarker) newer.push(v.versionId);
    }
    for (const versionId of newer) {
      const { root } = await readVolumeIndexRoot(repo, volumeId, versionId);
      // Only uncommitted generations: never an older committed version (e.g. of a volume that left the group).
      if (root.generation <= (state?.head.generation ?? 0) || !matches(root.runId)) continue;
      await repo.store.delete(key, { versionId });
      indexVersions.push({ key, versionId });
      for (const runKey of runKeys(root)) {
        if (!keepRuns.has(runKey)) await deleteAllVersions(repo, runKey, true, otherObjects);
      }
    }
  }
  // A manifest written by the reverted run for the next number, if HEAD never moved to it.
  const next = (state?.head.generation ?? 0) + 1;
  const manifestKey = keys.generation(repo, next);
  for await (const v of repo.store.listVersions(manifestKey)) {
    if (v.key !== manifestKey || v.isDeleteMarker) continue;
    const got = await repo.store.get(manifestKey, { versionId: v.versionId });
    if (matches(decodeManifest(got.body, manifestKey, v.versionId).runId)) {
      await repo.store.delete(manifestKey, { versionId: v.versionId });
      otherObjects.push({ key: manifestKey, versionId: v.versionId });
    }
  }
  return { indexVersions, otherObjects };
}

/**
 * Revert: deletes exactly the index versions `runId` wrote (found by listing each volume's index
 * versions newer than the committed one and reading their run id), the manifest it may have written,
 * the index runs only those versions named, and its transient files under `runs/<runId>/`.
 * The previous generation stays current. Idempotent.
 * @param volumeIds the run's volumes. @default every volume with an index object
 * @throws CommitConflictError when HEAD names `runId` (a committed run cannot be reverted)
 */
export async function revertRun(
  repo: Repo,
  runId: string,
  options: { volumeIds?: readonly string[] } = {},
): Promise<RevertResult> {
  assertRunId(runId);
  const state = await readHead(repo);
  if (state?.head.runId === runId) {
    throw new CommitConflictError(
      `run ${runId} is committed as generation ${state.head.generation}; it cannot be reverted`,
    );
  }
  const result = await revertMatching(repo, (r) => r === runId, options.volumeIds);
  const other = [...result.otherObjects];
  await deleteAllVersions(repo, keys.runPrefix(repo, runId), false, other);
  return { indexVersions: result.indexVersions, otherObjects: other };
}

/** Deletes a finished run's transient files (`runs/<runId>/`, all versions). Idempotent. */
export async function cleanupRun(repo: Repo, runId: string): Promise<number> {
  assertRunId(runId);
  const out: RevertedObject[] = [];
  await deleteAllVersions(repo, keys.runPrefix(repo, runId), false, out);
  return out.length;
}

export type RecoverOutcome =
  | { readonly outcome: "committed"; readonly cleaned: number }
  | { readonly outcome: "reverted"; readonly reverted: RevertResult };

/**
 * Recover (Global Mirror style), called by a run that holds the lock before it prepares anything:
 * if HEAD names the dead run, that run committed and only its cleanup is finished; otherwise every
 * index version newer than the committed one that `currentRunId` did not write is reverted.
 */
export async function recoverRun(
  repo: Repo,
  options: {
    readonly currentRunId: string;
    readonly deadRunId?: string;
    readonly volumeIds?: readonly string[];
  },
): Promise<RecoverOutcome> {
  const state = await readHead(repo);
  if (options.deadRunId !== undefined && state?.head.runId === options.deadRunId) {
    return { outcome: "committed", cleaned: await cleanupRun(repo, options.deadRunId) };
  }
  const reverted = await revertMatching(repo, (r) => r !== options.currentRunId, options.volumeIds);
  const other = [...reverted.otherObjects];
  if (options.deadRunId !== undefined)
    await deleteAllVersions(repo, keys.runPrefix(repo, options.deadRunId), false, other);
  return { outcome: "reverted", reverted: { indexVersions: reverted.indexVersions, otherObjects: other } };
}
