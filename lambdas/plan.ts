/**
 * Plan (DESIGN.md section 4, step 4): per volume, list the changed blocks between the committed
 * generation's snapshot and the new one (every written block for a new volume), write shard lists to
 * S3, and return one small Map item per shard. An invocation near its deadline stops at a shard
 * boundary and answers `done: false` with a plan cursor; ResumePlan goes on from it
 * (core/transfer/plan-run.ts, docs/transfer.md "Resumable planning").
 */

import { InvalidArgumentError } from "#core/errors.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { readCommittedManifest } from "#core/format/generation.ts";
import { assertFenced } from "#core/protocol/commit.ts";
import {
  interleaveShards,
  planTransferConcurrency,
  shardBlocksWithin,
  targetShardsPerVolume,
  volumeBlocksOf,
} from "#core/transfer/concurrency.ts";
import { type PlanRunStep, type PlanRunVolume, planRunStep } from "#core/transfer/plan-run.ts";
import { TransferFailedError } from "#workflows/errors.ts";
import { awsDeps } from "./aws-deps.ts";
import { MAX_INLINE_SHARDS, PlanInput, type PlanInputT, PlanOutput, type PlanOutputT } from "./contracts.ts";
import { RUN_METRICS } from "./metric-names.ts";
import { defineTask, groupConfig, remainingTime, type TaskDeps } from "./runtime.ts";
import { leaseOf, type RunPlan, repoOf, runPlanKey, writeRunPlan } from "./shared.ts";

/** Each volume's base: the committed generation's snapshot, or null (a full copy) when it is gone. */
async function decideBases(
  input: PlanInputT,
  committedBases: Map<string, string | null>,
  deps: TaskDeps,
): Promise<PlanRunVolume[]> {
  // A base snapshot deleted outside cgmirror cannot be diffed against: copy that volume in full.
  const wanted = [...committedBases.values()].filter((b): b is string => typeof b === "string");
  const present = new Set(
    wanted.length === 0
      ? []
      : (await deps.snapshots().describeSnapshots(wanted))
          .filter((s) => s.state === "completed")
          .map((s) => s.snapshotId),
  );
  return input.snapshots.map((s) => {
    let base = committedBases.get(s.volumeId) ?? null;
    if (base !== null && !present.has(base)) {
      deps.log.warn("base snapshot is gone; planning a full copy of the volume", {
        volumeId: s.volumeId,
        base,
      });
      base = null;
    }
    return { volumeId: s.volumeId, snapshotId: s.snapshotId, baseSnapshotId: base };
  });
}

export async function planTask(input: PlanInputT, deps: TaskDeps): Promise<PlanOutputT> {
  const remainingMs = remainingTime(deps, "Plan");
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  await assertFenced(repo, leaseOf(input.runId, input.fencing));
  const t = config.transfer;
  const quotas = {
    snapshotBlockRps: t.snapshotBlockRps,
    accountBlockRps: t.accountBlockRps,
    shardRps: t.shardRps,
    maxConcurrency: t.maxConcurrency,
  };
  const planDeps = {
    repo,
    source: deps.blockSource(),
    remainingMs,
    ...(deps.planOptions?.stopBeforeDeadlineMs !== undefined
      ? { stopBeforeDeadlineMs: deps.planOptions.stopBeforeDeadlineMs }
      : {}),
  };
  let step: PlanRunStep;
  if (input.resume) {
    step = await planRunStep(planDeps, { runId: input.runId, resume: input.resume });
  } else {
    const committed = await readCommittedManifest(repo);
    const bases = new Map(committed?.volumes.map((v) => [v.volumeId, v.sourceSnapshotId ?? null]) ?? []);
    // Any volume size fits the shards a run passes inline: larger shards when the volumes need them.
    const shardBlocks = shardBlocksWithin(
      await volumeBlocksOf(planDeps.source, input.snapshots, BLOCK_SIZE),
      t.shardBlocks,
      MAX_INLINE_SHARDS,
    );
    if (shardBlocks > t.shardBlocks) {
      deps.log.info("shards enlarged so that the plan fits the shards a run passes inline", {
        configured: t.shardBlocks,
        shardBlocks,
        maxShards: MAX_INLINE_SHARDS,
      });
    }
    step = await planRunStep(planDeps, {
      input: {
        runId: input.runId,
        volumes: await decideBases(input, bases, deps),
        shardBlocks,
        // Enough shards per volume for the tasks the quotas feed: a small change set is cut finer.
        targetShards: targetShardsPerVolume(input.snapshots.length, quotas),
        maxShards: MAX_INLINE_SHARDS,
        ...(deps.planOptions?.pageSize !== undefined ? { pageSize: deps.planOptions.pageSize } : {}),
      },
    });
  }
  if (!step.done) {
    deps.log.info("plan checkpointed before the deadline", {
      sequence: step.sequence,
      shards: step.shards,
      volumesPlanned: step.volumesDone,
      remainingMs: Math.round(remainingMs()),
    });
    return { done: false, cursor: step.cursor, shardCount: step.shards, volumesPlanned: step.volumesDone };
  }
  const planned = new Map(step.volumes.map((r) => [r.volumeId, r]));
  const volumes: RunPlan["volumes"] = input.snapshots.map((s) => {
    const r = planned.get(s.volumeId);
    if (!r || r.snapshotId !== s.snapshotId) {
      throw new InvalidArgumentError(
        `the plan cursor does not plan ${s.volumeId} (${s.snapshotId}); pass the cursor the previous Plan of this run returned`,
      );
    }
    return {
      volumeId: r.volumeId,
      snapshotId: r.snapshotId,
      baseSnapshotId: r.baseSnapshotId,
      volumeSizeBytes: r.volumeSizeBytes,
      shards: r.totals.shards,
      changedBlocks: r.totals.changedBlocks,
      readBlocks: r.totals.readBlocks,
      manifestKey: r.manifestKey,
    };
  });
  // Round-robin over the volumes: the tasks running at once spread over the snapshots' quotas.
  const shards = interleaveShards(
    volumes.flatMap((v) => Array.from({ length: v.shards }, (_, shard) => ({ volumeId: v.volumeId, shard }))),
  );
  const concurrency = planTransferConcurrency(
    volumes.map((v) => v.shards),
    quotas,
  );
  if (shards.length > MAX_INLINE_SHARDS) {
    throw new TransferFailedError(
      `the plan has ${shards.length} shards, more than the ${MAX_INLINE_SHARDS} a run passes inline; ` +
        `raise transfer.shardBlocks (now ${config.transfer.shardBlocks}) in the group config`,
    );
  }
  const plan: RunPlan = {
    runId: input.runId,
    generation: input.generation,
    volumes,
  };
  const planKey = runPlanKey(repo, input.runId);
  await writeRunPlan(repo, planKey, plan);
  const changedBlocks = volumes.reduce((n, v) => n + v.changedBlocks, 0);
  deps.metrics.add(config.group, RUN_METRICS.changedBlocks, "Count", changedBlocks);
  deps.log.info("planned", {
    shards: shards.length,
    changedBlocks,
    maxConcurrency: concurrency.maxConcurrency,
    shardRate: concurrency.shardRate,
  });
  return {
    done: true,
    planKey,
    shardCount: shards.length,
    changedBlocks,
    maxConcurrency: concurrency.maxConcurrency,
    shardRate: concurrency.shardRate,
    shards,
  };
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("Plan", PlanInput, PlanOutput, planTask, deps);
export const handler = makeHandler(awsDeps);
