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
  planStopBeforeDeadlineSeconds: 120,
  compressionRatio: 1,
  segmentBytes: 64 * 2 ** 20,
  progressIntervalSeconds: 15,
  lambdaGb: TASKS.Transfer.memoryMiB / 1024,
  lambdaTimeoutSeconds: TASKS.Transfer.timeoutSeconds,
};
/**
 * The run's other states (lock, recover, snapshot, snapshot check, plan's own work, prepare, commit,
 * release), from `npm run bench:overhead` (a local run of the synthesized state machine, one volume,
 * measured 2026-11-30 at load average 10–11 on the 2-core development machine) and AWS latencies.
 */
const OVERHEAD = {
  measuredLocally: {
    /** Their handlers' own wall time per run, highest of three runs (median 0.88 s). */
    handlerSeconds: 1.36,
    /** The critical path's task invocations: AcquireLock, Recover, Snapshot, CheckSnapshots, Plan, Prepare, Commit, ReleaseLock. */
    lambdaInvocations: 8,
    /** Their object store calls: 5 + 20 + 3 + 7 + 16 + 10 + 11 (one volume). */
    s3Requests: 72,
    /** EC2 calls (describe, create, delete snapshots): 1 + 2 + 1 + 1 + 2. */
    ec2Requests: 7,
    /** States entered outside the Transfer Map (Tasks, Choices, Passes, the Map itself). */
    states: 16,
  },
  typical: {
    /**
     * Each function is cold: an hourly schedule leaves every environment idle for an hour, and Lambda
     * keeps one "for a non-deterministic period"; a cold start lasts "from under 100 ms to over 1
     * second" (https://docs.aws.amazon.com/lambda/latest/operatorguide/execution-environments.html).
     */
    coldStartSeconds: 1,
    /** Small S3 requests: median latencies "in the tens of milliseconds" (S3 performance whitepaper, below). */
    s3RequestSeconds: 0.05,
    /** Not from an AWS document: an assumption. */
    ec2RequestSeconds: 0.3,
    /** Not from an AWS document: an assumption per state (scheduling a Task, a Choice). */
    stateSeconds: 0.1,
  },
  pessimistic: {
    coldStartSeconds: 2,
    /** AWS advises retrying a small GET or PUT after 2 s: assume a few slow ones, 200 ms on average. */
    s3RequestSeconds: 0.2,
    ec2RequestSeconds: 1,
    stateSeconds: 0.3,
  },
  sources: [
    "https://docs.aws.amazon.com/lambda/latest/operatorguide/execution-environments.html",
    "https://docs.aws.amazon.com/whitepapers/latest/s3-optimizing-performance-best-practices/timeouts-and-retries-for-latency-sensitive-applications.html",
  ],
};

function otherStatesSeconds(l: typeof OVERHEAD.typical): number {
  const m = OVERHEAD.measuredLocally;
  return (
    m.handlerSeconds +
    m.lambdaInvocations * l.coldStartSeconds +
    m.s3Requests * l.s3RequestSeconds +
    m.ec2Requests * l.ec2RequestSeconds +
    m.states * l.stateSeconds
  );
}

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
  // Plan resumes from a cursor when its listing outlasts one invocation (docs/transfer.md).
  const planInvocations = Math.max(
    1,
    Math.ceil(
      planSeconds / (A.lambdaTimeoutSeconds - A.planStopBeforeDeadlineSeconds - A.invocationStartSeconds),
    ),
  );
  const other = otherStatesSeconds(OVERHEAD.typical);
  const otherPessimistic = otherStatesSeconds(OVERHEAD.pessimistic);
  const totalSeconds = planSeconds + transferSeconds + other;
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
    plan_invocations: planInvocations,
    other_states_s: Math.round(other),
    other_states_pessimistic_s: Math.round(otherPessimistic),
    total_over_bound_pessimistic: Number(
      ((planSeconds + transferSeconds + otherPessimistic) / quotaBoundSeconds).toFixed(3),
    ),
    /** The most the other states may take for total ≤ 1.2 × the bound. */
    other_states_budget_s: Math.round(1.2 * quotaBoundSeconds - planSeconds - transferSeconds),
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
    otherStates: OVERHEAD,
    prices: PRICES,
    runs: sizes.map(project),
  }),
);
