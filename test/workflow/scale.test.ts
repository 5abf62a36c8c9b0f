/**
 * Real scale through the real local runner (issue 10, finding 1 and the scale test): a synthetic
 * multi-TiB first backup — two 2 TiB volumes whose snapshots the EBS emulator serves without storing
 * their data — under AWS's limits with time compressed:
 *
 * - the clock runs SCALE times faster: Lambda's 15 minutes last 900 / SCALE real seconds, and the
 *   runner fails any invocation that outlives its function timeout with Lambda.Unknown, as AWS does;
 *   the worker's retry back-off is compressed likewise;
 * - the GetSnapshotBlock quotas are AWS's defaults (1,000/s per snapshot, 1,000/s per account) scaled
 *   down by QUOTA_SCALE, enforced by the emulator and given to Plan through the config;
 * - shards are far larger than one invocation can read at its share of the quota, so every shard
 *   completes only by checkpointing and resuming.
 *
 * The run must commit, some shard must have resumed at least twice, and the committed index must
 * hold the synthetic content (sampled blocks, read back through restore's code path). A second case
 * kills a resumed invocation mid-way (it keeps running, like a Lambda whose response was lost) and
 * lets Step Functions retry it: the generation is still exact.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ebsAdmin } from "@cgmirror/ebs-emulator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { type GroupConfig, parseGroupConfig } from "#core/config/group-config.ts";
import { createRepo, type Repo } from "#core/format/layout.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import { localClients } from "#local/clients.ts";
import { createLocalDeps, type LocalDeps, runLocalBackup } from "#local/runner.ts";
import { SimulatedClock } from "#local/sim-clock.ts";
import { type LocalStack, startLocalStack } from "#local/stack.ts";
import { TransientError } from "#workflows/errors.ts";
import { TASK_NAMES, TASKS } from "#workflows/tasks.ts";
import { checkSampled, SyntheticSnapshotPort } from "../support/synthetic-snapshots.ts";

/** Simulated ms per real ms: a 15-minute Lambda lasts 9 real seconds, a 60 s one 0.6 s. */
const SCALE = 100;
/** AWS's 1,000 GetSnapshotBlock/s per snapshot and per account, scaled down. */
const QUOTA_SCALE = 0.08;
const QUOTA = 1000 * QUOTA_SCALE;
const VOLUME_GIB = 2048;
const BLOCKS = (VOLUME_GIB * 2 ** 30) / 524_288;
/**
 * Every task but Transfer keeps its timeout in real seconds (× SCALE on the compressed clock): the
 * test is about Transfer's deadline, and a "60-second" AcquireLock lasting 0.6 real seconds would time
 * out whenever another process holds the CPU.
 */
const OTHER_TASKS_UNCOMPRESSED = {
  lambdaTimeoutSeconds: Object.fromEntries(
    TASK_NAMES.filter((t) => t !== "Transfer").map((t) => [t, TASKS[t].timeoutSeconds * SCALE]),
  ),
};
/** Written blocks per volume (sparse: a multi-TiB volume, a transfer this machine can do in seconds). */
const WRITTEN = 400;
const SYNTH = { zeroFraction: 0.2, compressibleFraction: 0.5 };

let dir: string;
let stack: LocalStack;
let clients: ReturnType<typeof localClients>;
const opened: LocalDeps[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "cgm-scale-"));
  stack = await startLocalStack({ stateDir: join(dir, "state") });
  clients = localClients(stack);
  await ebsAdmin(stack.ebsEndpoint).setFaults({
    dataPlaneRpsPerSnapshot: QUOTA,
    dataPlaneRpsPerAccount: QUOTA,
  });
});
afterAll(async () => {
  for (const d of opened) d.close();
  clients?.destroy();
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function group(
  name: string,
  volumes: string[],
  shardBlocks: number,
  shardRps = 20,
): { config: GroupConfig; repo: Repo } {
  const config = parseGroupConfig({
    group: name,
    volumes: volumes.map((id) => ({ id })),
    target: { bucket: stack.bucket, prefix: `groups/${name}` },
    schedule: { expression: "rate(1 hour)" },
    transfer: {
      shardBlocks,
      snapshotBlockRps: QUOTA,
      accountBlockRps: QUOTA,
      // What one task reads at (a worker's capability, not a quota).
      shardRps,
    },
    snapshots: { keep: 1, completionTimeoutMinutes: 60 },
  });
  const repo = createRepo({
    store: new S3ObjectStore({ client: clients.s3, bucket: stack.bucket }),
    prefix: config.target.prefix,
    group: config.group,
  });
  return { config, repo };
}

function deps(written: number): TaskDeps {
  const d = createLocalDeps({
    endpoints: stack,
    simulator: clients.simulator,
    ...(process.env.CGM_SCALE_LOG
      ? { log: (l: string, m: string, x?: unknown) => console.log(l, m, JSON.stringify(x)) }
      : {}),
  });
  opened.push(d);
  const port = new SyntheticSnapshotPort(ebsAdmin(stack.ebsEndpoint), VOLUME_GIB, written / BLOCKS, SYNTH);
  return {
    ...d,
    snapshots: () => port,
    transferOptions: {
      progressIntervalMs: 1000,
      // The worker's back-off (100 ms .. 5 s in AWS) compressed like the clock.
      backoffBaseMs: 1,
      backoffCapMs: Math.ceil(5000 / SCALE),
      // What an invocation does after it stops taking blocks (drain the blocks in flight, upload its
      // last segment, write the checkpoint) is real I/O, which the clock does not compress: 8 MiB
      // segments and a 600 s reserve (6 real seconds here, on a loaded machine) stand for 64 MiB
      // and the default 120 s in AWS, where that tail takes a few seconds. It also leaves each
      // invocation 300 simulated seconds (3 real) of reading: the transfer is bound by the scaled
      // account quota (800 blocks at 80/s ≈ 10 real seconds however idle the machine), so every
      // shard needs several invocations.
      segmentBytes: 8 * 1024 * 1024,
      stopBeforeDeadlineMs: 600_000,
    },
  };
}

interface Invocation {
  readonly shard: string;
  readonly resumed: boolean;
  readonly simulatedMs: number;
  readonly done?: boolean;
}

/** Wraps TransferShard to record every invocation: which shard, whether resumed, how long (simulated). */
function recordTransfers(clock: SimulatedClock, out: Invocation[]) {
  return (task: string, _state: string, fn: (e: unknown) => Promise<unknown>) =>
    task !== "Transfer"
      ? fn
      : async (event: unknown) => {
          const e = event as { volumeId: string; shard: number; transfer?: unknown };
          const started = clock.now();
          const r = (await fn(event)) as { done: boolean };
          out.push({
            shard: `${e.volumeId}#${e.shard}`,
            resumed: e.transfer !== undefined,
            simulatedMs: clock.now() - started,
            done: r.done,
          });
          return r;
        };
}

describe("a multi-TiB first backup under AWS's limits, time compressed", () => {
  it("GIVEN two 2 TiB volumes and quotas scaled down WHEN backed up THEN every shard completes through resumed invocations within Lambda's deadline and the index holds the synthetic content", async () => {
    const volumes = ["vol-5ca1e00000000001", "vol-5ca1e00000000002"];
    // The scaled account quota bounds the transfer (≈ 10 real s, 1,000 simulated) and each invocation
    // reads for 300 simulated s (the 600 s reserve): shards resume twice or more on an idle machine too.
    const { config, repo } = group("scale", volumes, 200, 10);
    const clock = new SimulatedClock({ scale: SCALE });
    const invocations: Invocation[] = [];
    const states: string[] = [];
    const run = await runLocalBackup({
      config,
      deps: deps(WRITTEN),
      clock,
      time: OTHER_TASKS_UNCOMPRESSED,
      wrap: recordTransfers(clock, invocations),
      onState: (s) => {
        states.push(s);
        if (process.env.CGM_SCALE_LOG) console.log("state", s, new Date(clock.now()).toISOString());
      },
    });
    expect(run, `${run.error}: ${run.cause}`).toMatchObject({ outcome: "committed", generation: 1 });

    // Every shard finished, and some only through two resumptions or more.
    const perShard = new Map<string, Invocation[]>();
    for (const inv of invocations) perShard.set(inv.shard, [...(perShard.get(inv.shard) ?? []), inv]);
    expect(perShard.size).toBeGreaterThanOrEqual(4);
    const resumptions = [...perShard.values()].map((list) => list.filter((i) => i.resumed).length);
    console.log(`scale: ${invocations.length} Transfer invocations, resumptions per shard ${resumptions}`);
    expect(Math.max(...resumptions)).toBeGreaterThanOrEqual(2);
    for (const list of perShard.values()) expect(list.some((i) => i.done)).toBe(true);
    // No invocation outlived its function timeout (the runner would have failed it with Lambda.Unknown).
    expect(Math.max(...invocations.map((i) => i.simulatedMs))).toBeLessThan(
      TASKS.Transfer.timeoutSeconds * 1000,
    );

    expect(await checkSampled(repo, volumes, WRITTEN, VOLUME_GIB, SYNTH)).toBeGreaterThan(70);
  }, 180_000);

  it("GIVEN a resumed invocation killed mid-way (it keeps running) WHEN Step Functions retries it THEN the run commits an exact generation", async () => {
    const volumes = ["vol-5ca1e00000000003"];
    // 10 blocks/s per task, 300 simulated s (3 real) of reading per invocation: shards resume however
    // fast or idle the machine is.
    const { config, repo } = group("scalecrash", volumes, 120, 10);
    const clock = new SimulatedClock({ scale: SCALE });
    const invocations: Invocation[] = [];
    let killed = 0;
    const record = recordTransfers(clock, invocations);
    const run = await runLocalBackup({
      config,
      deps: deps(240),
      clock,
      time: OTHER_TASKS_UNCOMPRESSED,
      wrap: (task, state, fn) => {
        const recorded = record(task, state, fn);
        if (task !== "Transfer") return recorded;
        return async (event) => {
          const resumed = (event as { transfer?: unknown }).transfer !== undefined;
          if (!resumed || killed > 0) return recorded(event);
          killed++;
          // The first resumed invocation dies after a while; its work goes on unobserved.
          const zombie = recorded(event);
          zombie.catch(() => {});
          await new Promise((r) => setTimeout(r, 2000));
          throw new TransientError("the sandbox of this invocation died (injected)");
        };
      },
    });
    expect(run, `${run.error}: ${run.cause}`).toMatchObject({ outcome: "committed", generation: 1 });
    expect(killed).toBe(1);
    expect(invocations.filter((i) => i.resumed).length).toBeGreaterThanOrEqual(2);
    expect(await checkSampled(repo, volumes, 240, VOLUME_GIB, SYNTH)).toBeGreaterThan(20);
  }, 180_000);
});
