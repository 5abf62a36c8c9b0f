/**
 * Commit (DESIGN.md section 4, step 7; Withdraw-commit): write the generation manifest and move HEAD
 * with one conditional write. Publishes GroupCommitted (the RPO alarm's metric), RecoveryPointAge and
 * RunDuration (lambdas/metric-names.ts).
 */

import { readCommitRecord } from "#core/format/generation.ts";
import type { Repo } from "#core/format/layout.ts";
import { commitGeneration } from "#core/protocol/commit.ts";
import { isGenerationLocked, lockGeneration } from "#core/protocol/object-lock.ts";
import { awsDeps } from "./aws-deps.ts";
import { CommitInput, type CommitInputT, CommitOutput, type CommitOutputT } from "./contracts.ts";
import { RUN_METRICS } from "./metric-names.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { leaseOf, repoOf } from "./shared.ts";

/** The metric the RPO alarm watches (infra/): one per committed generation, dimension Group. */
export const COMMITTED_METRIC = RUN_METRICS.committed;

export async function commitTask(input: CommitInputT, deps: TaskDeps): Promise<CommitOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  const result = await commitGeneration(repo, {
    ...leaseOf(input.runId, input.fencing),
    generation: input.generation,
    pointInTime: new Date(input.startedAt),
    now: new Date(deps.clock.now()),
    volumes: input.prepared.map((p) => ({
      volumeId: p.volumeId,
      sizeBytes: p.sizeBytes,
      sourceSnapshotId: input.snapshots.find((s) => s.volumeId === p.volumeId)?.snapshotId ?? null,
      index: p.index,
      ...(p.stats ? { stats: p.stats } : {}),
    })),
    stats: {
      coordinationMs: input.coordinationMs,
      ...(input.executionStartedAt
        ? { durationMs: Math.max(0, deps.clock.now() - Date.parse(input.executionStartedAt)) }
        : {}),
    },
  });
  if (!result.alreadyCommitted) {
    const now = deps.clock.now();
    deps.metrics.add(config.group, COMMITTED_METRIC, "Count", 1);
    // The new HEAD's age: its point in time is the snapshots' start.
    deps.metrics.add(
      config.group,
      RUN_METRICS.recoveryPointAge,
      "Seconds",
      Math.max(0, (now - Date.parse(input.startedAt)) / 1000),
    );
    if (input.executionStartedAt) {
      deps.metrics.add(
        config.group,
        RUN_METRICS.runDuration,
        "Seconds",
        Math.max(0, (now - Date.parse(input.executionStartedAt)) / 1000),
      );
    }
  }
  if (config.target.objectLock) await lockCommitted(repo, result.generation, config.target.objectLock, deps);
  deps.log.info("generation committed", {
    generation: result.generation,
    alreadyCommitted: result.alreadyCommitted,
  });
  return {
    generation: result.generation,
    committedAt: new Date(deps.clock.now()).toISOString(),
    alreadyCommitted: result.alreadyCommitted,
  };
}

/**
 * Object Lock (`target.objectLock`): locks what the committed generation reaches, after HEAD moved —
 * never before, so Revert can delete what a failed run wrote (core/protocol/object-lock.ts). Also locks the
 * previous generation when a run stopped between its commit and its lock. A failure fails the task:
 * its retry (or the next run) locks again.
 */
async function lockCommitted(
  repo: Repo,
  generation: number,
  policy: NonNullable<ReturnType<typeof groupConfig>["target"]["objectLock"]>,
  deps: TaskDeps,
): Promise<void> {
  const previous = generation - 1;
  if (
    previous > 0 &&
    (await readCommitRecord(repo, previous)) &&
    !(await isGenerationLocked(repo, previous))
  ) {
    const late = await lockGeneration(repo, previous, policy);
    deps.log.warn("locked the previous generation, which its run had not locked", { ...late });
  }
  const locked = await lockGeneration(repo, generation, policy);
  deps.log.info("generation locked", {
    generation,
    objects: locked.objects,
    lockedOrExtended: locked.locked,
    retainUntil: locked.retainUntil.toISOString(),
  });
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("Commit", CommitInput, CommitOutput, commitTask, deps);
export const handler = makeHandler(awsDeps);
