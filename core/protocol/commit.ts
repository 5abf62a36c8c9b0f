/**
 * The commit protocol over the repository's objects (docs/format.md §9): inspect, fence, commit,
 * revert, recover. Rules it keeps (DESIGN.md §4):
 *
 * - **A lease is not a fence.** A run that takes the group first moves HEAD to carry its fencing
 *   number (`fenceHead`). Commit moves HEAD with If-Match, so a stale run's commit fails once a newer
 *   run fenced; every other write of a stale run lands on a key only it uses (its manifest, its index
 *   versions, its runs) and can never become reachable.
 * - **Never destroy on an ambiguous state.** Before anything is written or deleted the repository is
 *   inspected: a missing, delete-marked or unreadable HEAD, or a HEAD older than the newest commit
 *   record, stops the run with RepositoryStateError and nothing changes.
 * - **Delete only what a run provably wrote and nothing committed reaches.** Revert deletes its own
 *   (run id + fencing) uncommitted versions; Recover deletes leftovers of runs with a lower fencing
 *   number for a generation HEAD never reached. A version that cannot be read is left alone.
 */
import {
  CommitConflictError,
  CorruptObjectError,
  LockLostError,
  RepositoryStateError,
  RunIdReusedError,
  UnsupportedFormatError,
} from "../errors.ts";
import {
  type CommitRecord,
  encodeHead,
  type GenerationManifest,
  type Head,
  type HeadState,
  listCommitRecords,
  type ManifestVolume,
  openManifest,
  type Pointer,
  readCommitRecord,
  readHead,
  readPinnedManifest,
  sealCommitRecord,
  sealManifest,
} from "../format/generation.ts";
import { assertRunId, generationName, keys, parseManifestName, type Repo } from "../format/layout.ts";
import {
  newerRootVersions,
  readVolumeIndexRoot,
  runKeysOf,
  type VolumeIndexRoot,
} from "../format/volume-index.ts";
import {
  ObjectNotFoundError,
  type ObjectVersionRef,
  PreconditionFailedError,
} from "../ports/object-store.ts";

/** Who a run is: its run id (the execution name) and the fencing number its lock acquisition got. */
export interface Lease {
  readonly runId: string;
  readonly fencing: number;
}

// ---------------------------------------------------------------------------------------- inspect

export type RepositoryState =
  /** Nothing was ever committed and no run ever fenced: a new repository. */
  | { readonly kind: "fresh" }
  | {
      readonly kind: "ok";
      readonly head: HeadState;
      /** HEAD's manifest; undefined before the first commit (generation 0). */
      readonly committed: GenerationManifest | undefined;
    };

async function anyObject(repo: Repo, prefix: string): Promise<string | undefined> {
  for await (const o of repo.store.list(prefix)) return o.key;
  return undefined;
}

async function headHistory(repo: Repo): Promise<{ versions: number; deleteMarker: boolean }> {
  const key = keys.head(repo);
  let versions = 0;
  let deleteMarker = false;
  for await (const v of repo.store.listVersions(key)) {
    if (v.key !== key) continue;
    versions++;
    if (v.isLatest && v.isDeleteMarker) deleteMarker = true;
  }
  return { versions, deleteMarker };
}

/**
 * Reads what is committed and checks that it is consistent, before a run acts on it.
 * @throws RepositoryStateError when HEAD is missing, delete-marked, unreadable, older than the newest
 *   commit record, or disagrees with its commit record, or HEAD's manifest cannot be read
 */
export async function inspectRepository(repo: Repo): Promise<RepositoryState> {
  const headKey = keys.head(repo);
  let head: HeadState | undefined;
  try {
    head = await readHead(repo);
  } catch (error) {
    if (error instanceof CorruptObjectError || error instanceof UnsupportedFormatError) {
      throw new RepositoryStateError(headKey, `HEAD cannot be read (${error.message})`, { cause: error });
    }
    throw error;
  }
  if (!head) {
    const history = await headHistory(repo);
    if (history.deleteMarker) {
      throw new RepositoryStateError(headKey, "HEAD was deleted (its current version is a delete marker)");
    }
    const other =
      (history.versions > 0 ? headKey : undefined) ??
      (await anyObject(repo, keys.commitsPrefix(repo))) ??
      (await anyObject(repo, keys.generationsPrefix(repo))) ??
      (await anyObject(repo, keys.volumesPrefix(repo)));
    if (other !== undefined) {
      throw new RepositoryStateError(headKey, `HEAD is missing but the repository has objects (${other})`);
    }
    return { kind: "fresh" };
  }
  const h = head.head;
  let newer: number[];
  try {
    newer = await listCommitRecords(repo, h.generation);
  } catch (error) {
    throw new RepositoryStateError(
      headKey,
      `its commit records cannot be listed (${(error as Error).message})`,
      {
        cause: error,
      },
    );
  }
  if (newer.length > 0) {
    throw new RepositoryStateError(
      headKey,
      `HEAD names generation ${h.generation} but generation ${newer.at(-1)} was committed ` +
        `(${keys.commit(repo, newer.at(-1)!)}): HEAD was rolled back or replaced`,
    );
  }
  if (!h.commit) return { kind: "ok", head, committed: undefined };
  let committed: GenerationManifest;
  let record: CommitRecord | undefined;
  try {
    record = await readCommitRecord(repo, h.generation);
    committed = await readPinnedManifest(repo, h.commit.manifest, h.generation, headKey);
  } catch (error) {
    if (
      error instanceof CorruptObjectError ||
      error instanceof UnsupportedFormatError ||
      error instanceof ObjectNotFoundError
    ) {
      throw new RepositoryStateError(
        headKey,
        `the committed generation ${h.generation} cannot be read (${(error as Error).message})`,
        { cause: error },
      );
    }
    throw error;
  }
  if (record && record.manifest.sha256 !== h.commit.manifest.sha256) {
    throw new RepositoryStateError(
      headKey,
      `HEAD and ${keys.commit(repo, h.generation)} name different manifests for generation ${h.generation}`,
    );
  }
  return { kind: "ok", head, committed };
}

/** Writes the commit record of HEAD's generation if it is missing (idempotent; create-only). */
export async function ensureCommitRecord(repo: Repo, head: Head): Promise<void> {
  if (!head.commit) return;
  const key = keys.commit(repo, head.generation);
  const body = sealCommitRecord({ group: head.group, generation: head.generation, ...head.commit });
  try {
    await repo.store.put(key, body.bytes, { ifNoneMatch: "*", contentType: "application/json" });
  } catch (error) {
    if (!(error instanceof PreconditionFailedError)) throw error;
    const existing = await readCommitRecord(repo, head.generation);
    if (existing?.manifest.sha256 !== head.commit.manifest.sha256) {
      throw new RepositoryStateError(
        key,
        `it records another manifest for generation ${head.generation} than HEAD does`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------- fence

function sameRun(a: { runId: string; fencing: number }, b: Lease): boolean {
  return a.runId === b.runId && a.fencing === b.fencing;
}

/**
 * Fences the group for `lease`: inspects the repository, then moves HEAD (If-Match; If-None-Match `*`
 * for a new repository) so that it carries the lease's fencing number. From then on a run with a lower
 * fencing number cannot commit. Idempotent for the same lease.
 * @throws LockLostError when a run with a higher fencing number fenced first
 * @throws RunIdReusedError when HEAD shows this run id under another fencing number
 * @throws RepositoryStateError (nothing written) when the repository is ambiguous
 */
export async function fenceHead(
  repo: Repo,
  lease: Lease,
  now: Date = new Date(),
): Promise<{ head: HeadState; committed: GenerationManifest | undefined }> {
  assertRunId(lease.runId);
  for (let attempt = 0; attempt < 10; attempt++) {
    const state = await inspectRepository(repo);
    const fence = { fencing: lease.fencing, runId: lease.runId, at: now.toISOString() };
    if (state.kind === "fresh") {
      const body: Head = { group: repo.group, generation: 0, commit: null, fence };
      try {
        await repo.store.put(keys.head(repo), encodeHead(body), {
          ifNoneMatch: "*",
          contentType: "application/json",
        });
      } catch (error) {
        if (!(error instanceof PreconditionFailedError)) throw error;
      }
      continue; // read back what is there now
    }
    const h = state.head.head;
    if (h.fence.fencing > lease.fencing) {
      throw new LockLostError(
        keys.lock(repo),
        `run ${h.fence.runId} (fencing ${h.fence.fencing}) took the group after this run (fencing ${lease.fencing})`,
      );
    }
    if (sameRun(h.fence, lease)) return { head: state.head, committed: state.committed };
    if (h.fence.fencing === lease.fencing) {
      throw new LockLostError(
        keys.lock(repo),
        `HEAD is fenced by run ${h.fence.runId} with this run's fencing number ${lease.fencing} (was the lock object reset?)`,
      );
    }
    if (h.fence.runId === lease.runId || h.commit?.runId === lease.runId) {
      throw new RunIdReusedError(lease.runId, `HEAD records it with fencing ${h.fence.fencing}`);
    }
    await ensureCommitRecord(repo, h);
    try {
      await repo.store.put(keys.head(repo), encodeHead({ ...h, fence }), {
        ifMatch: state.head.etag,
        contentType: "application/json",
      });
    } catch (error) {
      if (!(error instanceof PreconditionFailedError)) throw error;
    }
  }
  throw new LockLostError(keys.lock(repo), "HEAD kept changing while this run tried to fence it");
}

/**
 * Throws unless HEAD still carries this lease's fence (a newer run has not taken the group). Writes
 * that must not land for a stale run call it first; the commit itself is fenced by If-Match.
 */
export async function assertFenced(repo: Repo, lease: Lease): Promise<HeadState> {
  // HEAD alone: Recover inspected the whole repository when it fenced, and Commit re-inspects.
  let state: HeadState | undefined;
  try {
    state = await readHead(repo);
  } catch (error) {
    if (error instanceof CorruptObjectError || error instanceof UnsupportedFormatError) {
      throw new RepositoryStateError(keys.head(repo), `HEAD cannot be read (${error.message})`, {
        cause: error,
      });
    }
    throw error;
  }
  if (!state) {
    throw new RepositoryStateError(keys.head(repo), "HEAD disappeared while this run held the group");
  }
  const f = state.head.fence;
  if (!sameRun(f, lease)) {
    throw new LockLostError(
      keys.lock(repo),
      `HEAD is fenced by run ${f.runId} (fencing ${f.fencing}), not by this run (fencing ${lease.fencing})`,
    );
  }
  return state;
}

// ---------------------------------------------------------------------------------------- commit

export interface CommitVolume {
  readonly volumeId: string;
  readonly sizeBytes: number;
  readonly sourceSnapshotId: string | null;
  /** The index root version `prepareVolume` returned (or the previous one for an unchanged volume). */
  readonly index: ManifestVolume["index"];
  readonly stats?: ManifestVolume["stats"];
}

export interface CommitOptions extends Lease {
  /** The consistency point (when the snapshots were initiated). */
  readonly pointInTime: Date;
  readonly volumes: readonly CommitVolume[];
  /** The generation this run prepared (HEAD's + 1 when it fenced). */
  readonly generation: number;
  readonly stats?: GenerationManifest["stats"];
  readonly now?: Date;
}

export interface CommitResult {
  readonly generation: number;
  readonly manifest: Pointer;
  /** True when this run had already committed (a retried or duplicated Commit). */
  readonly alreadyCommitted: boolean;
}

/** Did `lease` commit `generation`? (HEAD's commit, or the generation's commit record.) */
async function committedBy(
  repo: Repo,
  head: Head,
  generation: number,
  lease: Lease,
): Promise<Pointer | undefined> {
  if (head.generation === generation && head.commit && sameRun(head.commit, lease))
    return head.commit.manifest;
  if (head.generation > generation) {
    const record = await readCommitRecord(repo, generation);
    if (record && sameRun(record, lease)) return record.manifest;
  }
  return undefined;
}

/** Every index version the manifest will pin must be readable, be the pinned bytes, and agree on size. */
async function checkVolumes(repo: Repo, options: CommitOptions): Promise<void> {
  const seen = new Set<string>();
  for (const v of options.volumes) {
    if (seen.has(v.volumeId)) throw new CommitConflictError(`volume ${v.volumeId} is listed twice`);
    seen.add(v.volumeId);
    const { root, versionId } = await readVolumeIndexRoot(repo, v.volumeId, v.index);
    if (root.sizeBytes !== v.sizeBytes || root.generation > options.generation) {
      throw new CorruptObjectError(
        keys.volumeIndex(repo, v.volumeId),
        versionId,
        `it describes ${root.sizeBytes} bytes at generation ${root.generation}; the commit names ${v.sizeBytes} bytes at generation ${options.generation}`,
      );
    }
  }
}

async function writeManifest(repo: Repo, options: CommitOptions, head: Head): Promise<Pointer> {
  const key = keys.manifest(repo, options.generation, options.fencing);
  const sealed = sealManifest({
    group: repo.group,
    generation: options.generation,
    previous:
      head.commit && head.generation > 0
        ? { generation: head.generation, sha256: head.commit.manifest.sha256 }
        : null,
    runId: options.runId,
    fencing: options.fencing,
    pointInTime: options.pointInTime.toISOString(),
    createdAt: (options.now ?? new Date()).toISOString(),
    volumes: options.volumes.map((v) => ({
      volumeId: v.volumeId,
      sizeBytes: v.sizeBytes,
      sourceSnapshotId: v.sourceSnapshotId,
      index: v.index,
      stats: v.stats ?? {},
    })),
    stats: options.stats ?? {},
  });
  try {
    const put = await repo.store.put(key, sealed.bytes, {
      ifNoneMatch: "*",
      contentType: "application/json",
    });
    return { key: keys.relative(repo, key), sha256: sealed.sha256, versionId: put.versionId ?? null };
  } catch (error) {
    if (!(error instanceof PreconditionFailedError)) throw error;
  }
  // The key is this run's alone (generation + fencing): it is ours from an earlier attempt. Use it if
  // it names the same index versions; anything else is not ours to overwrite.
  const got = await repo.store.get(key);
  const existing = openManifest(got.body, key, got.versionId);
  const m = existing.value;
  const same =
    m.runId === options.runId &&
    m.fencing === options.fencing &&
    m.generation === options.generation &&
    m.volumes.length === options.volumes.length &&
    m.volumes.every(
      (v, i) =>
        v.volumeId === options.volumes[i]!.volumeId && v.index.sha256 === options.volumes[i]!.index.sha256,
    );
  if (!same) {
    throw new CorruptObjectError(
      key,
      got.versionId,
      `it was written for run ${m.runId} with other index versions`,
    );
  }
  return { key: keys.relative(repo, key), sha256: existing.sha256, versionId: got.versionId ?? null };
}

/**
 * Commit: writes this run's manifest (`generations/<n>-<fencing>.json`, create-only), then moves
 * HEAD with If-Match on the ETag read while HEAD carried this run's fence. The group is committed at
 * that single write; the commit record is written after it (and backfilled by the next run).
 * Idempotent: a retry after success returns `alreadyCommitted`.
 * @throws LockLostError when another run fenced the group, CommitConflictError when HEAD is not at
 *   `generation - 1`, RepositoryStateError when the repository is ambiguous
 */
export async function commitGeneration(repo: Repo, options: CommitOptions): Promise<CommitResult> {
  assertRunId(options.runId);
  const state = await inspectRepository(repo);
  if (state.kind === "fresh") {
    throw new LockLostError(keys.lock(repo), "HEAD carries no fence (the run did not fence the group)");
  }
  const head = state.head.head;
  const done = await committedBy(repo, head, options.generation, options);
  if (done) {
    await ensureCommitRecord(repo, head);
    return { generation: options.generation, manifest: done, alreadyCommitted: true };
  }
  if (!sameRun(head.fence, options)) {
    throw new LockLostError(
      keys.lock(repo),
      `HEAD is fenced by run ${head.fence.runId} (fencing ${head.fence.fencing}), not by this run (fencing ${options.fencing})`,
    );
  }
  if (head.generation + 1 !== options.generation) {
    throw new CommitConflictError(
      `this run prepared generation ${options.generation} but HEAD is at ${head.generation}`,
    );
  }
  await checkVolumes(repo, options);
  await ensureCommitRecord(repo, head);
  const manifest = await writeManifest(repo, options, head);
  const committedAt = (options.now ?? new Date()).toISOString();
  const next: Head = {
    group: repo.group,
    generation: options.generation,
    commit: { manifest, runId: options.runId, fencing: options.fencing, committedAt },
    fence: head.fence,
  };
  try {
    await repo.store.put(keys.head(repo), encodeHead(next), {
      ifMatch: state.head.etag,
      contentType: "application/json",
    });
  } catch (error) {
    if (!(error instanceof PreconditionFailedError)) throw error;
    // An SDK retry of a write that landed also ends here: look again.
    const now = await readHead(repo);
    if (now && (await committedBy(repo, now.head, options.generation, options))) {
      await ensureCommitRecord(repo, now.head);
      return { generation: options.generation, manifest, alreadyCommitted: true };
    }
    if (now && !sameRun(now.head.fence, options)) {
      throw new LockLostError(
        keys.lock(repo),
        `run ${now.head.fence.runId} (fencing ${now.head.fence.fencing}) took the group during this commit`,
        { cause: error },
      );
    }
    throw new CommitConflictError(
      `HEAD moved to generation ${now?.head.generation ?? "?"} during this commit`,
      { cause: error },
    );
  }
  await ensureCommitRecord(repo, next);
  return { generation: options.generation, manifest, alreadyCommitted: false };
}

// ---------------------------------------------------------------------------------------- revert

export interface RevertedObject {
  readonly key: string;
  readonly versionId: string;
}

export interface RevertResult {
  /** Index root versions deleted (the revertible Prepare writes). */
  readonly indexVersions: readonly RevertedObject[];
  /** Other objects deleted: uncommitted manifests, index runs only the reverted roots named, transient run files. */
  readonly otherObjects: readonly RevertedObject[];
  /** Versions newer than the committed one that could not be read and were left alone. */
  readonly unreadable: readonly RevertedObject[];
  /** Versions of transient run files (`runs/<runId>/`) deleted. */
  readonly transientVersions: number;
}

/**
 * Volume ids to look at: the config's and the committed manifest's. Never a listing of `volumes/`:
 * that grows with every generation ever written (a volume in neither, e.g. one a dead run with an
 * older config wrote, is left to garbage collection, docs/format.md §10.2).
 */
function volumesOf(committed: GenerationManifest | undefined, volumeIds: readonly string[]): string[] {
  return [...new Set([...volumeIds, ...(committed?.volumes.map((v) => v.volumeId) ?? [])])];
}

async function allVersions(repo: Repo, prefix: string, exact: boolean): Promise<ObjectVersionRef[]> {
  const out: ObjectVersionRef[] = [];
  for await (const v of repo.store.listVersions(prefix)) {
    if (exact && v.key !== prefix) continue;
    out.push({ key: v.key, versionId: v.versionId });
  }
  return out;
}

/**
 * Deletes the index versions (and the runs only they name) that `doomed` selects among the versions
 * newer than the committed one, volume by volume. Unreadable versions are reported, never deleted.
 */
async function deleteRootVersions(
  repo: Repo,
  committed: GenerationManifest | undefined,
  volumeIds: readonly string[],
  doomed: (root: VolumeIndexRoot) => boolean | Promise<boolean>,
  out: { indexVersions: RevertedObject[]; otherObjects: RevertedObject[]; unreadable: RevertedObject[] },
  generations?: Set<number>,
): Promise<void> {
  for (const volumeId of volumeIds) {
    const key = keys.volumeIndex(repo, volumeId);
    const pin = committed?.volumes.find((v) => v.volumeId === volumeId)?.index;
    const keepRuns = new Set<string>();
    let since: string | null = null;
    if (pin) {
      const kept = await readVolumeIndexRoot(repo, volumeId, pin);
      since = kept.versionId ?? null;
      for (const k of runKeysOf(repo, kept.root, key)) keepRuns.add(k);
    }
    const deletions: ObjectVersionRef[] = [];
    for (const v of await newerRootVersions(repo, volumeId, since)) {
      if (!v.root) {
        out.unreadable.push({ key, versionId: v.versionId });
        continue;
      }
      if (!(await doomed(v.root))) continue;
      generations?.add(v.root.generation);
      deletions.push({ key, versionId: v.versionId });
      out.indexVersions.push({ key, versionId: v.versionId });
      for (const runKey of runKeysOf(repo, v.root, key)) {
        if (keepRuns.has(runKey)) continue;
        for (const r of await allVersions(repo, runKey, true)) {
          deletions.push(r);
          out.otherObjects.push(r);
        }
      }
    }
    // Runs first, the root version last: a crash in between leaves a root that Revert finds again.
    await repo.store.deleteVersions(deletions.filter((d) => d.key !== key));
    await repo.store.deleteVersions(deletions.filter((d) => d.key === key));
  }
}

/**
 * Deletes every version of the manifests that `doomed` selects by name. Lists `generations/` after
 * `startAfter` when given (Recover: only generations HEAD never reached), else all of it (Revert:
 * a run's own manifest may be of any generation up to HEAD's + 1).
 */
async function deleteManifests(
  repo: Repo,
  doomed: (name: { generation: number; fencing: number }) => boolean | Promise<boolean>,
  out: RevertedObject[],
  startAfter?: string,
): Promise<void> {
  const prefix = keys.generationsPrefix(repo);
  const deletions: ObjectVersionRef[] = [];
  for await (const o of repo.store.list(prefix, startAfter ? { startAfter } : {})) {
    const name = parseManifestName(o.key.slice(prefix.length));
    if (!name || !(await doomed(name))) continue;
    deletions.push(...(await allVersions(repo, o.key, true)));
  }
  await repo.store.deleteVersions(deletions);
  out.push(...deletions);
}

/**
 * True only when `run` provably did not commit `generation`: HEAD never reached it, or HEAD / the
 * generation's commit record names another run. Unknown (the record is gone) counts as committed.
 */
async function provablyUncommitted(repo: Repo, head: Head, generation: number, run: Lease): Promise<boolean> {
  if (generation > head.generation) return true;
  if (generation === head.generation) return !(head.commit && sameRun(head.commit, run));
  const record = await readCommitRecord(repo, generation).catch(() => undefined);
  return record !== undefined && !sameRun(record, run);
}

/**
 * HEAD's generation when the run with this fencing number fenced it: HEAD's now, unless runs that
 * fenced later committed since, whose commit records are walked back (one per commit since then).
 */
async function generationWhenFenced(repo: Repo, head: Head, fencing: number): Promise<number> {
  let generation = head.generation;
  let committedBy = head.commit?.fencing;
  while (generation > 0 && committedBy !== undefined && committedBy > fencing) {
    generation--;
    committedBy =
      generation > 0 ? (await readCommitRecord(repo, generation).catch(() => undefined))?.fencing : undefined;
  }
  return generation;
}

/** Versions deleted per DeleteObjects request (S3's maximum). */
const DELETE_BATCH = 1000;

/**
 * Deletes a run's transient files (`runs/<runId>/`, all versions), a listing page at a time in
 * batches of 1,000 (memory stays bounded for a long run's many progress versions). Stops early when
 * `shouldStop()` says so between batches (the rest is left to the next call or the lifecycle rule
 * that expires `runs/`). Idempotent. Returns the versions deleted.
 */
export async function cleanupRun(
  repo: Repo,
  runId: string,
  options: { shouldStop?: () => boolean } = {},
): Promise<number> {
  assertRunId(runId);
  let deleted = 0;
  let batch: ObjectVersionRef[] = [];
  for await (const v of repo.store.listVersions(keys.runPrefix(repo, runId))) {
    batch.push({ key: v.key, versionId: v.versionId });
    if (batch.length === DELETE_BATCH) {
      await repo.store.deleteVersions(batch);
      deleted += batch.length;
      batch = [];
      if (options.shouldStop?.()) return deleted;
    }
  }
  await repo.store.deleteVersions(batch);
  return deleted + batch.length;
}

export interface RevertOptions extends Lease {
  /** The run's volumes (the group config's); the committed manifest's are added. */
  readonly volumeIds: readonly string[];
}

export type RevertOutcome =
  | ({ readonly alreadyCommitted: false } & RevertResult)
  | { readonly alreadyCommitted: true; readonly generation: number };

/**
 * Revert: deletes exactly what this run (run id + fencing) wrote for a generation HEAD never reached:
 * its index versions, the runs only those name, its manifest, and its transient `runs/<runId>/`. The
 * previous generation stays current. Does nothing when this run committed. Idempotent.
 * @throws RepositoryStateError (nothing deleted) when the repository is ambiguous
 */
export async function revertRun(repo: Repo, options: RevertOptions): Promise<RevertOutcome> {
  assertRunId(options.runId);
  const state = await inspectRepository(repo);
  const out = {
    indexVersions: [] as RevertedObject[],
    otherObjects: [] as RevertedObject[],
    unreadable: [] as RevertedObject[],
  };
  if (state.kind === "ok") {
    const head = state.head.head;
    if (head.commit && sameRun(head.commit, options)) {
      return { alreadyCommitted: true, generation: head.generation };
    }
    const volumeIds = volumesOf(state.committed, options.volumeIds);
    // This run's manifest can only be of the generation it prepared: one above HEAD's when it fenced,
    // that is above the newest generation committed by a run with a lower fencing number (and the
    // generation its index versions record). Looked up by exact key, never by listing generations/.
    const generations = new Set([(await generationWhenFenced(repo, head, options.fencing)) + 1]);
    await deleteRootVersions(
      repo,
      state.committed,
      volumeIds,
      (root) => sameRun(root, options) && provablyUncommitted(repo, head, root.generation, options),
      out,
      generations,
    );
    const manifests: ObjectVersionRef[] = [];
    for (const generation of generations) {
      if (!(await provablyUncommitted(repo, head, generation, options))) continue;
      manifests.push(...(await allVersions(repo, keys.manifest(repo, generation, options.fencing), true)));
    }
    await repo.store.deleteVersions(manifests);
    out.otherObjects.push(...manifests);
  }
  const transientVersions = await cleanupRun(repo, options.runId);
  return { alreadyCommitted: false, ...out, transientVersions };
}

// ---------------------------------------------------------------------------------------- recover

export interface RecoverOptions extends Lease {
  /** The run whose expired lock this run took over (its transient files are deleted). */
  readonly deadRunId?: string;
  /** The group's volumes (the group config's); the committed manifest's are added. */
  readonly volumeIds: readonly string[];
  readonly now?: Date;
}

export interface RecoverResult extends RevertResult {
  /** The dead run committed (HEAD names it): only its transient files were deleted. */
  readonly deadRunCommitted: boolean;
  /** HEAD after the fence. */
  readonly head: Head;
  readonly committed: GenerationManifest | undefined;
}

/**
 * Recover (Global Mirror style), the first thing a run does after AcquireLock: fence HEAD with this
 * run's fencing number, backfill the committed generation's record, then delete what runs with a
 * lower fencing number left for generations HEAD never reached (their index versions, the runs only
 * those name, their manifests) and the dead run's transient files.
 * @throws RepositoryStateError (nothing written), LockLostError, RunIdReusedError
 */
export async function recoverRun(repo: Repo, options: RecoverOptions): Promise<RecoverResult> {
  const { head: state, committed } = await fenceHead(repo, options, options.now);
  const head = state.head;
  await ensureCommitRecord(repo, head);
  const out = {
    indexVersions: [] as RevertedObject[],
    otherObjects: [] as RevertedObject[],
    unreadable: [] as RevertedObject[],
  };
  const volumeIds = volumesOf(committed, options.volumeIds);
  await deleteRootVersions(
    repo,
    committed,
    volumeIds,
    (root) => root.fencing < options.fencing && provablyUncommitted(repo, head, root.generation, root),
    out,
  );
  // Manifests of generations HEAD never reached, written by runs with a lower fencing number.
  await deleteManifests(
    repo,
    (name) => name.generation > head.generation && name.fencing < options.fencing,
    out.otherObjects,
    head.generation > 0
      ? `${keys.generationsPrefix(repo)}${generationName(head.generation)}-9999999999.json`
      : undefined,
  );
  let deadRunCommitted = false;
  let transientVersions = 0;
  if (options.deadRunId !== undefined && options.deadRunId !== options.runId) {
    deadRunCommitted = head.commit?.runId === options.deadRunId;
    transientVersions = await cleanupRun(repo, options.deadRunId);
  }
  return { ...out, transientVersions, deadRunCommitted, head, committed };
}
