/**
 * Object Lock of committed generations (opt-in `target.objectLock`; docs/format.md §14).
 *
 * Nothing is locked when it is written: a run's objects stay deletable until its generation commits,
 * so Revert and Recover can always delete what a failed run wrote. When a generation commits, every
 * object it reaches is locked until `committedAt + retentionDays`:
 *
 * - its commit record and manifest (the versions HEAD and the record pin),
 * - each volume's index root version, the index runs (block and dedup, with Bloom filters) it names,
 * - every segment the block runs reference — also the older segments it shares with earlier
 *   generations (unchanged and deduplicated blocks), whose locks are extended.
 *
 * HEAD is not locked: it is a pointer rewritten by every fence and commit, and a locked old version
 * would protect nothing the commit records do not (`cgmirror repair` rebuilds HEAD from them).
 *
 * An object whose lock already reaches the target is left alone; an extended lock gets
 * `retentionDays / 10` (at least a day) of slack beyond the target, so that an object shared by many
 * generations is extended about every tenth of the retention instead of at every commit. Locking is
 * idempotent: a Commit that is retried (or the next run's Commit, for a run that stopped between
 * moving HEAD and locking) locks again and changes nothing that is already locked long enough.
 */

import type { ObjectLockConfig } from "../config/group-config.ts";
import { readCommitRecord, readPinnedManifest } from "../format/generation.ts";
import { keys, type Repo } from "../format/layout.ts";
import { openRunRef, readVolumeIndexRoot, runKeysOf } from "../format/volume-index.ts";
import type { ObjectRetention, ObjectVersionRef } from "../ports/object-store.ts";
import { TaskPool } from "../util/pool.ts";

const DAY_MS = 86_400_000;
/** Requests in flight while locking (HEAD, GetObjectRetention, PutObjectRetention: small and independent). */
const LOCK_CONCURRENCY = 32;

/** The store cannot lock objects (a store or bucket without Object Lock). */
export class ObjectLockUnsupportedError extends Error {
  override readonly name = "ObjectLockUnsupportedError";
}

export interface LockGenerationResult {
  readonly generation: number;
  /** Object versions the generation reaches. */
  readonly objects: number;
  /** Versions whose lock was set or extended (the others were locked long enough already). */
  readonly locked: number;
  /** Every object of the generation is locked at least until then. */
  readonly retainUntil: Date;
}

/** The exact versions committed generation `n` reaches (see the module comment). */
export async function generationObjects(
  repo: Repo,
  n: number,
  concurrency = LOCK_CONCURRENCY,
): Promise<ObjectVersionRef[]> {
  const recordKey = keys.commit(repo, n);
  const record = await readCommitRecord(repo, n);
  if (!record) throw new Error(`generation ${n} has no commit record (${recordKey}): it is not committed`);
  const out = new Map<string, ObjectVersionRef>();
  const add = (key: string, versionId: string | undefined | null) => {
    if (versionId) out.set(`${key}\0${versionId}`, { key, versionId });
  };
  const current = async (key: string) => (await repo.store.head(key))?.versionId;
  add(recordKey, await current(recordKey));
  const manifestKey = keys.resolve(repo, record.manifest.key, recordKey);
  const manifest = await readPinnedManifest(repo, record.manifest, n, recordKey);
  add(manifestKey, record.manifest.versionId ?? (await current(manifestKey)));
  const runKeys = new Set<string>();
  const blockRuns: Array<{ from: string; ref: Parameters<typeof openRunRef>[1] }> = [];
  for (const v of manifest.volumes) {
    const from = keys.volumeIndex(repo, v.volumeId);
    const state = await readVolumeIndexRoot(repo, v.volumeId, v.index);
    add(from, state.versionId);
    for (const k of runKeysOf(repo, state.root, from)) runKeys.add(k);
    for (const r of [...(state.root.base ? [state.root.base] : []), ...state.root.deltas]) {
      blockRuns.push({ from, ref: r });
    }
  }
  const segments = new Set<string>();
  const pool = new TaskPool(concurrency);
  const seen = new Set<string>();
  for (const { from, ref } of blockRuns) {
    const key = keys.resolve(repo, ref.key, from);
    if (seen.has(key)) continue;
    seen.add(key);
    await pool.run(async () => {
      const reader = await openRunRef(repo, ref, from);
      for (let p = 0; p < reader.pageCount; p++) {
        for (const s of (await reader.readPage(p)).segTable) segments.add(s);
      }
    });
  }
  await pool.drain();
  const objectKeys = [...runKeys, ...[...segments].map((s) => keys.segment(repo, s))];
  for (const key of objectKeys) {
    await pool.run(async () => add(key, await current(key)));
  }
  await pool.drain();
  return [...out.values()];
}

/**
 * Locks every object committed generation `n` reaches until its commit time + `retentionDays`
 * (see the module comment).
 * @throws ObjectLockUnsupportedError when the store has no Object Lock
 */
export async function lockGeneration(
  repo: Repo,
  n: number,
  policy: ObjectLockConfig,
  options: { readonly concurrency?: number } = {},
): Promise<LockGenerationResult> {
  const store = repo.store;
  if (!store.putRetention || !store.getRetention) {
    throw new ObjectLockUnsupportedError(
      "target.objectLock is set but this object store has no Object Lock; use a bucket created with Object Lock enabled",
    );
  }
  const record = await readCommitRecord(repo, n);
  if (!record) throw new Error(`generation ${n} has no commit record: it is not committed`);
  const retainUntil = new Date(Date.parse(record.committedAt) + policy.retentionDays * DAY_MS);
  const slackMs = Math.max(DAY_MS, Math.round((policy.retentionDays * DAY_MS) / 10));
  const extended: ObjectRetention = {
    mode: policy.mode,
    retainUntil: new Date(retainUntil.getTime() + slackMs),
  };
  const refs = await generationObjects(repo, n, options.concurrency);
  let locked = 0;
  const pool = new TaskPool(options.concurrency ?? LOCK_CONCURRENCY);
  for (const ref of refs) {
    await pool.run(async () => {
      const now = await store.getRetention!(ref);
      if (now && now.retainUntil.getTime() >= retainUntil.getTime()) return;
      // A COMPLIANCE lock is never weakened to GOVERNANCE (S3 refuses it): keep the stronger mode.
      const mode = now?.mode === "COMPLIANCE" ? "COMPLIANCE" : extended.mode;
      try {
        await store.putRetention!(ref, { mode, retainUntil: extended.retainUntil });
      } catch (error) {
        // S3: InvalidRequest "Bucket is missing Object Lock Configuration".
        if (/Object Lock Configuration/i.test((error as Error).message ?? "")) {
          throw new ObjectLockUnsupportedError(
            "target.objectLock is set but the bucket has no Object Lock: the stack creates a new bucket with it; " +
              "enable it on an existing one (docs/operations.md, Object Lock). The generation is committed but not locked; " +
              "the next run's Commit locks it",
            { cause: error },
          );
        }
        throw error;
      }
      locked++;
    });
  }
  await pool.drain();
  return { generation: n, objects: refs.length, locked, retainUntil };
}

/** Whether generation `n`'s commit record is locked (a cheap check that its generation was locked). */
export async function isGenerationLocked(repo: Repo, n: number): Promise<boolean> {
  const key = keys.commit(repo, n);
  const versionId = (await repo.store.head(key))?.versionId;
  if (!versionId || !repo.store.getRetention) return false;
  return (await repo.store.getRetention({ key, versionId })) !== undefined;
}
