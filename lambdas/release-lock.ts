/**
 * ReleaseLock (DESIGN.md section 4, step 9): after a commit, delete the run's transient files and
 * the base snapshots the retention policy no longer needs; then release the lock.
 */
import { cleanupRun } from "#core/commit.ts";
import { readHead, readPinnedManifest } from "#core/generation.ts";
import { keys } from "#core/layout.ts";
import { readLock, releaseLock } from "#core/lock.ts";
import { writeRunRecord } from "#core/run-history.ts";
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
  const lock = await readLock(repo).catch(() => undefined);
  const startedAt =
    lock?.record.runId === input.runId && lock.record.fencing === input.fencing
      ? lock.record.acquiredAt
      : null;
  if (input.outcome === "committed") {
    await recordCommittedRun(input, deps, startedAt);
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

/** The run record of a committed run (history/; best effort: never fails the release). */
async function recordCommittedRun(
  input: ReleaseLockInputT,
  deps: TaskDeps,
  startedAt: string | null,
): Promise<void> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  try {
    const head = await readHead(repo);
    const commit = head?.head.commit;
    if (!head || !commit || commit.runId !== input.runId || commit.fencing !== input.fencing) return;
    const m = await readPinnedManifest(repo, commit.manifest, head.head.generation, keys.head(repo));
    await writeRunRecord(repo, {
      group: config.group,
      runId: input.runId,
      fencing: input.fencing,
      outcome: "committed",
      startedAt,
      endedAt: new Date(deps.clock.now()).toISOString(),
      generation: m.generation,
      headGeneration: m.generation,
      changedBlocks: m.volumes.reduce((a, v) => a + (v.stats.changedBlocks ?? 0), 0),
      storedBytes: m.volumes.reduce((a, v) => a + (v.stats.storedBytes ?? 0), 0),
      coordinationMs: m.stats.coordinationMs ?? null,
      pointInTime: m.pointInTime,
    });
  } catch (error) {
    deps.log.warn("could not write the run record (history/)", {
      error: (error as Error).name,
      message: (error as Error).message,
    });
  }
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("ReleaseLock", ReleaseLockInput, ReleaseLockOutput, releaseLockTask, deps);
export const handler = makeHandler(awsDeps);
