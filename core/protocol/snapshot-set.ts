/**
 * The snapshot set of the next generation, kept in the repository while its snapshots may still be
 * pending (docs/format.md §8.1): `pending/snapshot-set.json`.
 *
 * A large first snapshot can take longer than one run waits (`snapshots.completionTimeoutMinutes`).
 * Instead of deleting it and starting a new full snapshot every run, the run that took the snapshots
 * records the set; a run that ends while it is pending (SnapshotTimeoutError, a timeout, a crash)
 * leaves it, and the next run **adopts** it: same snapshots, same point in time (the original
 * initiation), no new snapshot. Recover never deletes the snapshots of the recorded set.
 *
 * Who writes what: Snapshot writes the record when it creates a set and removes a record it cannot
 * adopt; Revert removes it with the run's snapshots unless the run failed waiting for them
 * (SnapshotTimeoutError); ReleaseLock removes it once its generation is committed.
 */
import { z } from "zod";
import { keys, type Repo } from "../format/layout.ts";
import { decodeMetadata, encodeMetadata } from "../format/metadata.ts";
import { ObjectNotFoundError } from "../ports/object-store.ts";
import type { SnapshotPort, SnapshotRef } from "./snapshot-group.ts";

export const SnapshotSetSchema = z.object({
  group: z.string(),
  /** The run that took the snapshots (their cgmirror:run-id tag). */
  runId: z.string(),
  fencing: z.number().int().positive(),
  /** The generation the snapshots were taken for (their cgmirror:generation tag). */
  generation: z.number().int().positive(),
  /** The group's point in time: when the snapshots were initiated. */
  startedAt: z.string(),
  coordinationMs: z.number().int().nonnegative(),
  frozen: z.boolean(),
  snapshots: z.array(z.object({ volumeId: z.string(), snapshotId: z.string() })).min(1),
  recordedAt: z.string(),
});
export type SnapshotSet = z.infer<typeof SnapshotSetSchema>;

/** The recorded set, `undefined` when there is none; an unreadable record is returned as an error. */
export async function readSnapshotSet(
  repo: Repo,
): Promise<{ set: SnapshotSet | undefined; unreadable?: Error }> {
  const key = keys.snapshotSet(repo);
  try {
    const got = await repo.store.get(key);
    return {
      set: decodeMetadata(got.body, "cgmirror.snapshot-set", SnapshotSetSchema, key, got.versionId),
    };
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return { set: undefined };
    if (
      error instanceof Error &&
      (error.name === "CorruptObjectError" || error.name === "UnsupportedFormatError")
    ) {
      return { set: undefined, unreadable: error };
    }
    throw error;
  }
}

export async function writeSnapshotSet(repo: Repo, set: SnapshotSet): Promise<void> {
  await repo.store.put(keys.snapshotSet(repo), encodeMetadata("cgmirror.snapshot-set", set), {
    contentType: "application/json",
  });
}

/** Deletes every version of the record (idempotent). */
export async function deleteSnapshotSet(repo: Repo): Promise<void> {
  const key = keys.snapshotSet(repo);
  const versions = [];
  for await (const v of repo.store.listVersions(key)) if (v.key === key) versions.push(v);
  await repo.store.deleteVersions(versions.map((v) => ({ key, versionId: v.versionId })));
}

export type SnapshotSetVerdict =
  /** Adopt it: every volume of the config, none in error or missing, taken for this generation. */
  | { readonly kind: "adopt"; readonly snapshots: SnapshotRef[] }
  /** Drop the record. `deleteSnapshots`: they are uncommitted leftovers no one else will use. */
  | { readonly kind: "drop"; readonly deleteSnapshots: boolean; readonly reason: string };

/**
 * Whether a run of `group` preparing `generation` of `volumeIds` (config order) may adopt the set.
 * A set of an older generation was committed (or superseded): only its record goes.
 */
export async function judgeSnapshotSet(
  set: SnapshotSet,
  run: { readonly group: string; readonly generation: number; readonly volumeIds: readonly string[] },
  port: Pick<SnapshotPort, "describeSnapshots">,
): Promise<SnapshotSetVerdict> {
  if (set.group !== run.group) {
    return { kind: "drop", deleteSnapshots: false, reason: `it is of group ${set.group}` };
  }
  if (set.generation !== run.generation) {
    return {
      kind: "drop",
      deleteSnapshots: false,
      reason: `it was taken for generation ${set.generation}, this run prepares ${run.generation}`,
    };
  }
  const byVolume = new Map(set.snapshots.map((s) => [s.volumeId, s]));
  const same =
    byVolume.size === run.volumeIds.length &&
    set.snapshots.length === run.volumeIds.length &&
    run.volumeIds.every((v) => byVolume.has(v));
  if (!same) {
    return { kind: "drop", deleteSnapshots: true, reason: "the group's volumes changed since it was taken" };
  }
  const statuses = await port.describeSnapshots(set.snapshots.map((s) => s.snapshotId));
  const bad = set.snapshots.filter((s) => {
    const st = statuses.find((x) => x.snapshotId === s.snapshotId);
    return st === undefined || st.state === "error";
  });
  if (bad.length > 0) {
    return {
      kind: "drop",
      deleteSnapshots: true,
      reason: `snapshot(s) ${bad.map((b) => b.snapshotId).join(", ")} no longer exist or failed`,
    };
  }
  return { kind: "adopt", snapshots: run.volumeIds.map((v) => byVolume.get(v) as SnapshotRef) };
}
