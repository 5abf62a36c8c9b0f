/**
 * ReleaseLock (DESIGN.md section 4, step 9): release the lock first, then, after a commit, do the
 * housekeeping: delete the run's transient files, the base snapshots the retention policy no longer
 * needs and the record of the committed snapshot set. Housekeeping can neither keep the lock (a failure or a timeout there leaves it released) nor
 * run past its time budget; what it leaves, the next commit's pruning (snapshots) or the lifecycle
 * rule that expires `runs/` (files) removes.
 */
import { cleanupRun } from "#core/commit.ts";
import { readHead } from "#core/generation.ts";
import { releaseLock } from "#core/lock.ts";
import { pruneBaseSnapshots } from "#core/snapshot-group.ts";
import { deleteSnapshotSet, readSnapshotSet } from "#core/snapshot-set.ts";
import { awsDeps } from "./aws-deps.ts";
import {
  ReleaseLockInput,
  type ReleaseLockInputT,
  ReleaseLockOutput,
  type ReleaseLockOutputT,
} from "./contracts.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { repoOf } from "./shared.ts";

/** Housekeeping after the release stops after this long (the function's timeout is 300 s). */
export const HOUSEKEEPING_BUDGET_MS = 120_000;

export async function releaseLockTask(input: ReleaseLockInputT, deps: TaskDeps): Promise<ReleaseLockOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  // Did this run commit? Asked while it still holds the group: once released, the next run may move HEAD.
  let committedGeneration: number | undefined;
  if (input.outcome === "committed") {
    try {
      const head = await readHead(repo);
      const c = head?.head.commit;
      if (c?.runId === input.runId && c.fencing === input.fencing)
        committedGeneration = head!.head.generation;
    } catch (error) {
      deps.log.warn(
        "could not read HEAD; housekeeping is left to the next commit and the runs/ lifecycle rule",
        {
          error: (error as Error).name,
          message: (error as Error).message,
        },
      );
    }
  }
  const released = await releaseLock(repo, { runId: input.runId, fencing: input.fencing });
  if (!released) {
    deps.log.warn("lock was not ours any more (taken over)", { fencing: input.fencing });
  }
  let prunedSnapshots = 0;
  let cleanedObjects = 0;
  if (committedGeneration !== undefined) {
    const deadline = deps.clock.now() + HOUSEKEEPING_BUDGET_MS;
    const late = () => deps.clock.now() >= deadline;
    try {
      cleanedObjects = await cleanupRun(repo, input.runId, { shouldStop: late });
      if (!late()) {
        prunedSnapshots = (
          await pruneBaseSnapshots(config.group, committedGeneration, config.snapshots.keep, deps.snapshots())
        ).length;
      }
      // The recorded snapshot set of a committed generation is nothing to adopt any more.
      const { set } = await readSnapshotSet(repo);
      if (set && set.generation <= committedGeneration) await deleteSnapshotSet(repo);
      if (late()) {
        deps.log.warn(
          "housekeeping stopped at its time budget; the next commit prunes snapshots, the runs/ lifecycle rule the files",
          {
            cleanedObjects,
            prunedSnapshots,
          },
        );
      }
    } catch (error) {
      deps.log.warn(
        "housekeeping after the commit failed; the next commit prunes snapshots, the runs/ lifecycle rule the files",
        {
          error: (error as Error).name,
          message: (error as Error).message,
        },
      );
    }
  }
  return { released, prunedSnapshots, cleanedObjects };
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("ReleaseLock", ReleaseLockInput, ReleaseLockOutput, releaseLockTask, deps);
export const handler = makeHandler(awsDeps);
