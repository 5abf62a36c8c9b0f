/**
 * Commit (DESIGN.md section 4, step 7; Withdraw-commit): write the generation manifest and move HEAD
 * with one conditional write. Publishes GroupCommitted (the RPO alarm's metric) and CoordinationTime.
 */
import { commitGeneration } from "#core/protocol/commit.ts";
import { awsDeps } from "./aws-deps.ts";
import { CommitInput, type CommitInputT, CommitOutput, type CommitOutputT } from "./contracts.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { leaseOf, repoOf } from "./shared.ts";

/** The metric the RPO alarm watches (infra/): one per committed generation, dimension Group. */
export const COMMITTED_METRIC = "GroupCommitted";

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
  if (!result.alreadyCommitted) deps.metrics.add(config.group, COMMITTED_METRIC, "Count", 1);
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

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("Commit", CommitInput, CommitOutput, commitTask, deps);
export const handler = makeHandler(awsDeps);
