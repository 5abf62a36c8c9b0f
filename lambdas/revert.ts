/**
 * Revert (DESIGN.md section 4, step 8; Withdraw-revert): delete exactly what this run (run id and
 * fencing number) wrote for a generation HEAD never reached, and the snapshots it created. Deletes
 * nothing when this run committed (e.g. Commit succeeded but its answer was lost), and nothing in the
 * repository when the repository is ambiguous (the run then fails with its original error).
 */
import { revertRun } from "#core/commit.ts";
import { RepositoryStateError } from "#core/errors.ts";
import { deleteRunSnapshots } from "#core/snapshot-group.ts";
import { awsDeps } from "./aws-deps.ts";
import { RevertInput, type RevertInputT, RevertOutput, type RevertOutputT } from "./contracts.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { repoOf } from "./shared.ts";

export async function revertTask(input: RevertInputT, deps: TaskDeps): Promise<RevertOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
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
    };
  }
  const deletedSnapshots = await deleteRunSnapshots(config.group, input.runId, deps.snapshots());
  deps.log.warn("run reverted", {
    error: input.error.Error,
    revertedVersions: outcome.indexVersions.length,
    deletedSnapshots,
  });
  return {
    alreadyCommitted: false,
    needsRepair: false,
    revertedVersions: outcome.indexVersions.length,
    deletedObjects: outcome.otherObjects.length + outcome.transientVersions,
    deletedSnapshots,
  };
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("Revert", RevertInput, RevertOutput, revertTask, deps);
export const handler = makeHandler(awsDeps);
