/**
 * ReleaseLock (DESIGN.md section 4, step 9): after a commit, delete the run's transient files and
 * the base snapshots the retention policy no longer needs; then release the lock.
 */
import { cleanupRun } from "#core/commit.ts";
import { readHead } from "#core/generation.ts";
import { releaseLock } from "#core/lock.ts";
import { pruneBaseSnapshots } from "#core/snapshot-group.ts";
import { awsDeps } from "./aws-deps.ts";
import {
  ReleaseLockInput,
  type ReleaseLockInputT,
  ReleaseLockOutput,
  type ReleaseLockOutputT,
} from "./contracts.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { repoOf } from "./shared.ts";

export async function releaseLockTask(input: ReleaseLockInputT, deps: TaskDeps): Promise<ReleaseLockOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  let prunedSnapshots = 0;
  let cleanedObjects = 0;
  if (input.outcome === "committed") {
    // Housekeeping must not keep the lock: a failure here is logged and retried by the next run.
    try {
      const head = await readHead(repo);
      if (head?.head.commit?.runId === input.runId && head.head.commit.fencing === input.fencing) {
        cleanedObjects = await cleanupRun(repo, input.runId);
        prunedSnapshots = (
          await pruneBaseSnapshots(
            config.group,
            head.head.generation,
            config.snapshots.keep,
            deps.snapshots(),
          )
        ).length;
      }
    } catch (error) {
      deps.log.warn("cleanup after commit failed; the next run retries it", {
        error: (error as Error).name,
        message: (error as Error).message,
      });
    }
  }
  const released = await releaseLock(repo, { runId: input.runId, fencing: input.fencing });
  if (!released)
    deps.log.warn("lock was not ours any more (expired and taken over)", { fencing: input.fencing });
  return { released, prunedSnapshots, cleanedObjects };
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("ReleaseLock", ReleaseLockInput, ReleaseLockOutput, releaseLockTask, deps);
export const handler = makeHandler(awsDeps);
