/**
 * Revert (DESIGN.md section 4, step 8; Withdraw-revert): delete exactly the index versions and the
 * snapshots this run created. Refuses nothing and deletes nothing when HEAD names this run (it
 * committed, e.g. Commit succeeded but its answer was lost).
 */
import { revertRun } from "#core/commit.ts";
import { readHead } from "#core/generation.ts";
import { deleteRunSnapshots } from "#core/snapshot-group.ts";
import { awsDeps } from "./aws-deps.ts";
import { RevertInput, type RevertInputT, RevertOutput, type RevertOutputT } from "./contracts.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { repoOf } from "./shared.ts";

export async function revertTask(input: RevertInputT, deps: TaskDeps): Promise<RevertOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  const head = await readHead(repo);
  if (head?.head.runId === input.runId) {
    deps.log.warn("run is committed; nothing to revert", {
      generation: head.head.generation,
      error: input.error.Error,
    });
    return { alreadyCommitted: true, revertedVersions: 0, deletedObjects: 0, deletedSnapshots: 0 };
  }
  const reverted = await revertRun(repo, input.runId);
  const deletedSnapshots = await deleteRunSnapshots(config.group, input.runId, deps.snapshots());
  deps.log.warn("run reverted", {
    error: input.error.Error,
    revertedVersions: reverted.indexVersions.length,
    deletedSnapshots,
  });
  return {
    alreadyCommitted: false,
    revertedVersions: reverted.indexVersions.length,
    deletedObjects: reverted.otherObjects.length,
    deletedSnapshots,
  };
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("Revert", RevertInput, RevertOutput, revertTask, deps);
export const handler = makeHandler(awsDeps);
