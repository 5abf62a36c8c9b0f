/**
 * Plan (DESIGN.md section 4, step 4): per volume, list the changed blocks between the committed
 * generation's snapshot and the new one (every written block for a new volume), write shard lists to
 * S3, and return one small Map item per shard.
 */

import { readCommittedManifest } from "#core/format/generation.ts";
import { assertFenced } from "#core/protocol/commit.ts";
import {
  countBlocksUpTo,
  interleaveShards,
  planTransferConcurrency,
  shardBlocksFor,
  targetShardsPerVolume,
} from "#core/transfer/concurrency.ts";
import { planVolume } from "#core/transfer/planner.ts";
import { TransferFailedError } from "#workflows/errors.ts";
import { awsDeps } from "./aws-deps.ts";
import { MAX_INLINE_SHARDS, PlanInput, type PlanInputT, PlanOutput, type PlanOutputT } from "./contracts.ts";
import { RUN_METRICS } from "./metric-names.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { leaseOf, type RunPlan, repoOf, runPlanKey, writeRunPlan } from "./shared.ts";

export async function planTask(input: PlanInputT, deps: TaskDeps): Promise<PlanOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  await assertFenced(repo, leaseOf(input.runId, input.fencing));
  const committed = await readCommittedManifest(repo);
  const bases = new Map(committed?.volumes.map((v) => [v.volumeId, v.sourceSnapshotId]) ?? []);
  // A base snapshot deleted outside cgmirror cannot be diffed against: copy that volume in full.
  const wanted = [...bases.values()].filter((b): b is string => typeof b === "string");
  const present = new Set(
    wanted.length === 0
      ? []
      : (await deps.snapshots().describeSnapshots(wanted))
          .filter((s) => s.state === "completed")
          .map((s) => s.snapshotId),
  );
  const volumes: RunPlan["volumes"] = [];
  const t = config.transfer;
  const quotas = {
    snapshotBlockRps: t.snapshotBlockRps,
    accountBlockRps: t.accountBlockRps,
    shardRps: t.shardRps,
    maxConcurrency: t.maxConcurrency,
  };
  // Enough shards per volume for the tasks the quotas feed: a small change set is cut finer.
  const target = targetShardsPerVolume(input.snapshots.length, quotas);
  for (const s of input.snapshots) {
    let base = bases.get(s.volumeId) ?? null;
    if (base !== null && !present.has(base)) {
      deps.log.warn("base snapshot is gone; planning a full copy of the volume", {
        volumeId: s.volumeId,
        base,
      });
      base = null;
    }
    const counted = await countBlocksUpTo(
      deps.blockSource(),
      { snapshotId: s.snapshotId, baseSnapshotId: base },
      target * t.shardBlocks,
    );
    const r = await planVolume(
      { repo, source: deps.blockSource() },
      {
        runId: input.runId,
        volumeId: s.volumeId,
        snapshotId: s.snapshotId,
        baseSnapshotId: base,
        shardBlocks: shardBlocksFor(counted, t.shardBlocks, target),
      },
    );
    volumes.push({
      volumeId: s.volumeId,
      snapshotId: s.snapshotId,
      baseSnapshotId: base,
      volumeSizeBytes: r.volumeSizeBytes,
      shards: r.totals.shards,
      changedBlocks: r.totals.changedBlocks,
      readBlocks: r.totals.readBlocks,
      manifestKey: r.manifestKey,
    });
  }
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
