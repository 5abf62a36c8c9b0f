/**
 * `npm run bench:aws` — a projection of one backup run in AWS at AWS's default quotas, for 100 GiB,
 * 2 TiB and 16 TiB changed on one volume. Prints ONE JSON line. A model, not a measurement: it plans
 * the Map exactly as Plan does (core/transfer/concurrency.ts over the config defaults) and schedules
 * the shards' invocations as the resumable worker runs them (each reads at the planned rate, stops
 * taking blocks when less than `stopBeforeDeadlineMs` of Lambda's 15 minutes is left, checkpoints,
 * and the Map item invokes it again), on `maxConcurrency` slots in Map item order.
 *
 * Assumptions (each a field of `assumptions` in the output): a Transfer task sustains its planned rate
 * (100 blocks/s = 50 MiB/s: docs/performance.md measures what one vCPU does per GiB); per invocation a
 * start (cold start, dedup index, shard list, listing) and an end (last segment, checkpoint or result
 * run, summary) of a few seconds; Plan lists 10,000 blocks per page; a fixed overhead for the other
 * states (lock, recover, snapshot check, prepare, commit, release); the snapshot wait is not counted.
 * Prices: us-east-1 list prices as recorded in README.md's cost model on 2026-11-30 (EBS direct APIs
 * pricing: https://docs.aws.amazon.com/ebs/latest/userguide/ebsapi-pricing.html), S3 GET $0.0004 per
 * 1,000 (S3 pricing page, same date, not re-checked here).
 */
import { parseGroupConfig } from "#core/config/group-config.ts";
import {
  planTransferConcurrency,
  shardBlocksFor,
  targetShardsPerVolume,
} from "#core/transfer/concurrency.ts";
import { TASKS } from "#workflows/tasks.ts";

const BLOCK = 524_288;
const GiB = 2 ** 30;
const A = {
  invocationStartSeconds: 3,
  invocationEndSeconds: 4,
  stopBeforeDeadlineSeconds: 120,
  listPageBlocks: 10_000,
  listPageSeconds: 0.15,
  otherStatesSeconds: 60,
  compressionRatio: 1,
  segmentBytes: 64 * 2 ** 20,
  progressIntervalSeconds: 15,
  lambdaGb: TASKS.Transfer.memoryMiB / 1024,
  lambdaTimeoutSeconds: TASKS.Transfer.timeoutSeconds,
};
const PRICES = {
  date: "2026-11-30",
  region: "us-east-1",
  getSnapshotBlockPer1000: 0.003,
  listBlocksPer1000: 0.0006,
  lambdaArmGbSecond: 0.0000133334,
  lambdaPerMillionRequests: 0.2,
  s3PutPer1000: 0.005,
  s3GetPer1000: 0.0004,
  stepFunctionsPer1000Transitions: 0.025,
};

const config = parseGroupConfig({
  group: "projection",
  volumes: [{ id: "vol-0123456789abcdef0" }],
  target: { bucket: "my-cgmirror-bucket" },
  schedule: { expression: "rate(1 day)" },
});

function project(changedBytes: number) {
  const t = config.transfer;
  const blocks = Math.ceil(changedBytes / BLOCK);
  const quotas = {
    snapshotBlockRps: t.snapshotBlockRps,
    accountBlockRps: t.accountBlockRps,
    shardRps: t.shardRps,
    maxConcurrency: t.maxConcurrency,
  };
  // As Plan does: count up to target × shardBlocks, cut a small change set finer.
  const target = targetShardsPerVolume(1, quotas);
  const counted = Math.min(blocks, target * t.shardBlocks);
  const countPages = Math.ceil(counted / A.listPageBlocks);
  const shardBlocks = shardBlocksFor(counted, t.shardBlocks, target);
  const shardSizes: number[] = [];
  for (let left = blocks; left > 0; left -= shardBlocks) shardSizes.push(Math.min(left, shardBlocks));
  const plan = planTransferConcurrency([shardSizes.length], quotas);
  const rate = plan.shardRate;
  // Each shard: invocations back to back on one Map slot.
  const readPerInvocation = A.lambdaTimeoutSeconds - A.stopBeforeDeadlineSeconds - A.invocationStartSeconds;
  let invocations = 0;
  let longest = 0;
  let lambdaSeconds = 0;
  const shardSeconds = shardSizes.map((n) => {
    let left = n;
    let total = 0;
    while (left > 0) {
      const reads = Math.min(left, Math.floor(readPerInvocation * rate));
      const d = A.invocationStartSeconds + reads / rate + A.invocationEndSeconds;
      invocations++;
      longest = Math.max(longest, d);
      lambdaSeconds += d;
      total += d;
      left -= reads;
    }
    return total;
  });
  // The Map: items in order on maxConcurrency slots.
  const slots = new Array<number>(plan.maxConcurrency).fill(0);
  for (const s of shardSeconds) {
    let i = 0;
    for (let k = 1; k < slots.length; k++) if (slots[k]! < slots[i]!) i = k;
    slots[i]! += s;
  }
  const transferSeconds = Math.max(...slots);
  const listPages = Math.ceil(blocks / A.listPageBlocks) + countPages;
  const planSeconds = listPages * A.listPageSeconds;
  const totalSeconds = planSeconds + transferSeconds + A.otherStatesSeconds;
  const quotaBoundSeconds = changedBytes / (1000 * BLOCK);
  const segments = Math.ceil((changedBytes * A.compressionRatio) / A.segmentBytes) + invocations;
  const progressPuts = Math.ceil(lambdaSeconds / A.progressIntervalSeconds);
  // Per invocation: a checkpoint or the summary, a partial or the result run; per shard its list.
  const s3Puts = segments + progressPuts + 2 * invocations + shardSizes.length + 20;
  const s3Gets = 4 * invocations + shardSizes.length * 2 + 50;
  const transitions = 30 + invocations * 3 + shardSizes.length * 2;
  const gbSeconds = lambdaSeconds * A.lambdaGb;
  const usd =
    (blocks / 1000) * PRICES.getSnapshotBlockPer1000 +
    (listPages / 1000) * PRICES.listBlocksPer1000 * 2 +
    gbSeconds * PRICES.lambdaArmGbSecond +
    (invocations / 1e6) * PRICES.lambdaPerMillionRequests +
    (s3Puts / 1000) * PRICES.s3PutPer1000 +
    (s3Gets / 1000) * PRICES.s3GetPer1000 +
    (transitions / 1000) * PRICES.stepFunctionsPer1000Transitions;
  return {
    changed_gib: changedBytes / GiB,
    blocks,
    shards: shardSizes.length,
    planned_concurrency: plan.maxConcurrency,
    shard_rate: rate,
    invocations,
    longest_invocation_s: Math.round(longest),
    transfer_s: Math.round(transferSeconds),
    total_s: Math.round(totalSeconds),
    quota_bound_s: Math.round(quotaBoundSeconds),
    total_over_bound: Number((totalSeconds / quotaBoundSeconds).toFixed(3)),
    lambda_gb_s: Math.round(gbSeconds),
    s3_puts: s3Puts,
    s3_gets: s3Gets,
    usd: Number(usd.toFixed(2)),
  };
}

const sizes = [100 * GiB, 2048 * GiB, 16384 * GiB];
console.log(
  JSON.stringify({
    bench: "aws-projection",
    model: "bench/aws.bench.ts",
    defaults: config.transfer,
    assumptions: A,
    prices: PRICES,
    runs: sizes.map(project),
  }),
);
