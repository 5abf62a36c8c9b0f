/**
 * Revert (DESIGN.md section 4, step 8; Withdraw-revert): delete exactly what this run (run id and
 * fencing number) wrote for a generation HEAD never reached, and the snapshots it created. Deletes
 * nothing when this run committed (e.g. Commit succeeded but its answer was lost), and nothing in the
 * repository when the repository is ambiguous (the run then fails with its original error).
 *
 * A run that failed waiting for its snapshots (SnapshotTimeoutError) keeps them and their record
 * (`pending/snapshot-set.json`): the next run adopts the set instead of taking a new full snapshot.
 */

import { RepositoryStateError } from "#core/errors.ts";
import { readHead } from "#core/format/generation.ts";
import type { Repo } from "#core/format/layout.ts";
import { revertRun } from "#core/protocol/commit.ts";
import { readLock } from "#core/protocol/lock.ts";
import { writeRunRecord } from "#core/protocol/run-history.ts";
import { deleteRunSnapshots } from "#core/protocol/snapshot-group.ts";
import { deleteSnapshotSet, readSnapshotSet } from "#core/protocol/snapshot-set.ts";
import { causeMessage, Errors } from "#workflows/errors.ts";
import { awsDeps } from "./aws-deps.ts";
import { RevertInput, type RevertInputT, RevertOutput, type RevertOutputT } from "./contracts.ts";
import { RUN_METRICS } from "./metric-names.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { readRunPlan, repoOf, runPlanKey } from "./shared.ts";

/** The run record of a reverted run (history/; best effort: never changes how the revert ends). */
async function recordRevertedRun(
  repo: Repo,
  input: RevertInputT,
  deps: TaskDeps,
  changedBlocks: number | null,
) {
  try {
    const lock = await readLock(repo).catch(() => undefined);
    const head = await readHead(repo).catch(() => undefined);
    await writeRunRecord(repo, {
      group: repo.group,
      runId: input.runId,
      fencing: input.fencing,
      outcome: "reverted",
      startedAt:
        lock?.record.runId === input.runId && lock.record.fencing === input.fencing
          ? lock.record.acquiredAt
          : null,
      endedAt: new Date(deps.clock.now()).toISOString(),
      headGeneration: head?.head.generation ?? null,
      changedBlocks,
      error: input.error.Error,
      // A Lambda function error's cause is its error object: the record keeps the readable message.
      cause: input.error.Cause ? causeMessage(input.error.Cause) : null,
    });
  } catch (error) {
    deps.log.warn("could not write the run record (history/)", {
      error: (error as Error).name,
      message: (error as Error).message,
    });
  }
}

/** Deletes the run's snapshots, or keeps the recorded set when the run failed waiting for it. */
async function revertSnapshots(
  repo: Repo,
  input: RevertInputT,
  group: string,
  deps: TaskDeps,
): Promise<{ deletedSnapshots: number; keptSnapshots: number }> {
  const port = deps.snapshots();
  const { set } = await readSnapshotSet(repo);
  if (input.error.Error === Errors.SnapshotTimeout && set) {
    deps.log.warn("kept the snapshot set for the next run to adopt", {
      takenBy: set.runId,
      snapshots: set.snapshots.length,
    });
    return { deletedSnapshots: 0, keptSnapshots: set.snapshots.length };
  }
  let deletedSnapshots = await deleteRunSnapshots(group, input.runId, port);
  if (set && input.error.Error === Errors.SnapshotFailed && set.runId !== input.runId) {
    // An adopted set with a snapshot in error (or gone) is of no use to anyone.
    await Promise.allSettled(set.snapshots.map((s) => port.deleteSnapshot(s.snapshotId)));
    deletedSnapshots += set.snapshots.length;
  }
  // This run's own set is gone; an adopted complete set stays adoptable for the next run.
  if (set && (set.runId === input.runId || input.error.Error === Errors.SnapshotFailed)) {
    await deleteSnapshotSet(repo);
  }
  return { deletedSnapshots, keptSnapshots: 0 };
}

export async function revertTask(input: RevertInputT, deps: TaskDeps): Promise<RevertOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  // What the run planned to copy: read before the revert deletes the run's work files.
  const changedBlocks = await readRunPlan(repo, runPlanKey(repo, input.runId))
    .then((p) => p.volumes.reduce((a, v) => a + v.changedBlocks, 0))
    .catch(() => null);
  let outcome: Awaited<ReturnType<typeof revertRun>>;
  try {
    outcome = await revertRun(repo, {
      runId: input.runId,
      fencing: input.fencing,
      volumeIds: config.volumes.map((v) => v.id),
    });
  } catch (error) {
    if (!(error instanceof RepositoryStateError)) throw error;
    deps.log.error("repository needs repair; nothing in it was reverted", { message: error.message });
    const deletedSnapshots = await deleteRunSnapshots(config.group, input.runId, deps.snapshots());
    return {
      alreadyCommitted: false,
      needsRepair: true,
      revertedVersions: 0,
      deletedObjects: 0,
      deletedSnapshots,
      keptSnapshots: 0,
    };
  }
  if (outcome.alreadyCommitted) {
    deps.log.warn("run is committed; nothing to revert", {
      generation: outcome.generation,
      error: input.error.Error,
    });
    return {
      alreadyCommitted: true,
      needsRepair: false,
      revertedVersions: 0,
      deletedObjects: 0,
      deletedSnapshots: 0,
      keptSnapshots: 0,
    };
  }
  deps.metrics.add(config.group, RUN_METRICS.runReverted, "Count", 1);
  const snapshots = await revertSnapshots(repo, input, config.group, deps);
  await recordRevertedRun(repo, input, deps, changedBlocks);
  deps.log.warn("run reverted", {
    error: input.error.Error,
    revertedVersions: outcome.indexVersions.length,
    ...snapshots,
  });
  return {
    alreadyCommitted: false,
    needsRepair: false,
    revertedVersions: outcome.indexVersions.length,
    deletedObjects: outcome.otherObjects.length + outcome.transientVersions,
    ...snapshots,
  };
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("Revert", RevertInput, RevertOutput, revertTask, deps);
export const handler = makeHandler(awsDeps);
