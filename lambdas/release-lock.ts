/**
 * ReleaseLock (DESIGN.md section 4, step 9): release the lock first, then, after a commit, do the
 * housekeeping: the run record (history/), the run's transient files, the base snapshots the retention
 * policy no longer needs and the record of the committed snapshot set. Housekeeping can neither keep
 * the lock (a failure or a timeout there leaves it released) nor run past its time budget; what it
 * leaves, the next commit's pruning (snapshots) or the lifecycle rule that expires `runs/` (files)
 * removes.
 */

import { type HeadState, readHead, readPinnedManifest } from "#core/format/generation.ts";
import { keys } from "#core/format/layout.ts";
import { cleanupRun } from "#core/protocol/commit.ts";
import { readLock, releaseLock } from "#core/protocol/lock.ts";
import { writeRunRecord } from "#core/protocol/run-history.ts";
import { pruneBaseSnapshots } from "#core/protocol/snapshot-group.ts";
import { deleteSnapshotSet, readSnapshotSet } from "#core/protocol/snapshot-set.ts";
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
  // Read while this run still holds the group: once released, the next run may move HEAD.
  const lock = await readLock(repo).catch(() => undefined);
  const startedAt =
    lock?.record.runId === input.runId && lock.record.fencing === input.fencing
      ? lock.record.acquiredAt
      : null;
  let committed: HeadState | undefined;
  if (input.outcome === "committed") {
    try {
      const head = await readHead(repo);
      const c = head?.head.commit;
      if (c?.runId === input.runId && c.fencing === input.fencing) committed = head;
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
  if (!released) deps.log.warn("lock was not ours any more (taken over)", { fencing: input.fencing });
  let prunedSnapshots = 0;
  let cleanedObjects = 0;
  if (committed) {
    const generation = committed.head.generation;
    const deadline = deps.clock.now() + HOUSEKEEPING_BUDGET_MS;
    const late = () => deps.clock.now() >= deadline;
    await recordCommittedRun(input, deps, committed, startedAt);
    try {
      cleanedObjects = await cleanupRun(repo, input.runId, { shouldStop: late });
      if (!late()) {
        prunedSnapshots = (
          await pruneBaseSnapshots(config.group, generation, config.snapshots.keep, deps.snapshots())
        ).length;
      }
      // The recorded snapshot set of a committed generation is nothing to adopt any more.
      const { set } = await readSnapshotSet(repo);
      if (set && set.generation <= generation) await deleteSnapshotSet(repo);
      if (late()) {
        deps.log.warn(
          "housekeeping stopped at its time budget; the next commit prunes snapshots, the runs/ lifecycle rule the files",
          { cleanedObjects, prunedSnapshots },
        );
      }
    } catch (error) {
      deps.log.warn(
        "housekeeping after the commit failed; the next commit prunes snapshots, the runs/ lifecycle rule the files",
        { error: (error as Error).name, message: (error as Error).message },
      );
    }
  }
  return { released, prunedSnapshots, cleanedObjects };
}

/** The run record of a committed run (history/; best effort: never fails the release). */
async function recordCommittedRun(
  input: ReleaseLockInputT,
  deps: TaskDeps,
  head: HeadState,
  startedAt: string | null,
): Promise<void> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  try {
    const commit = head.head.commit;
    if (!commit) return;
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
