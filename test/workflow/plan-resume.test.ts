/**
 * Resumable planning through the synthesized state machine and the real local runner (issue 10: a
 * plan that cannot finish within Lambda's 15 minutes): the clock runs SCALE times faster, Plan keeps
 * AWS's 900 s timeout (3.6 real seconds, enforced by the runner with Lambda.Unknown), and every List
 * request is slow, so the plan of two volumes needs several invocations: Plan answers done: false with
 * a cursor and ResumePlan goes on from it. The shards the run transfers are exactly those of an
 * uninterrupted plan, the run commits, and the committed index holds the synthetic content. A second
 * case kills a resumed Plan invocation mid-way (it keeps running, like a Lambda whose response was
 * lost) and lets Step Functions retry it beside the zombie.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ebsAdmin } from "@cgmirror/ebs-emulator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { type GroupConfig, parseGroupConfig } from "#core/config/group-config.ts";
import { createRepo, type Repo } from "#core/format/layout.ts";
import type { BlockSource } from "#core/ports/block-source.ts";
import { targetShardsPerVolume } from "#core/transfer/concurrency.ts";
import { planCursorsPrefix, planRunStep } from "#core/transfer/plan-run.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import { readRunPlan, runPlanKey } from "#lambdas/shared.ts";
import { localClients } from "#local/clients.ts";
import { createLocalDeps, type LocalDeps, runLocalBackup } from "#local/runner.ts";
import { SimulatedClock } from "#local/sim-clock.ts";
import { type LocalStack, startLocalStack } from "#local/stack.ts";
import { TransientError } from "#workflows/errors.ts";
import { TASK_NAMES, TASKS } from "#workflows/tasks.ts";
import { checkSampled, SyntheticSnapshotPort } from "../support/synthetic-snapshots.ts";

/** Simulated ms per real ms: Plan's 15 minutes last 3.6 real seconds. */
const SCALE = 250;
/** Every task but Plan keeps its timeout in real seconds: only Plan's deadline is under test. */
const OTHERS_UNCOMPRESSED = {
  lambdaTimeoutSeconds: Object.fromEntries(
    TASK_NAMES.filter((t) => t !== "Plan").map((t) => [t, TASKS[t].timeoutSeconds * SCALE]),
  ),
};
/** Plan stops 600 simulated s (2.4 real) before its deadline: each invocation lists for ≈ 1.2 real s. */
const PLAN_RESERVE_MS = 600_000;
/**
 * Real ms each List request takes (a slow, throttled List): at most 6 pages per invocation, and the
 * whole listing (≈ 26 pages, 5.2 real s) longer than one 3.6-second invocation, where a plan that cannot
 * resume fails with Lambda.Unknown.
 */
const LIST_DELAY_MS = 200;
const PAGE = 100;
const VOLUME_GIB = 16;
const BLOCKS = (VOLUME_GIB * 2 ** 30) / 524_288;
const WRITTEN = 1200;
const SYNTH = { zeroFraction: 0.85, compressibleFraction: 0.5 };

let dir: string;
let stack: LocalStack;
let clients: ReturnType<typeof localClients>;
const opened: LocalDeps[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "cgm-plan-resume-"));
  stack = await startLocalStack({ stateDir: join(dir, "state") });
  clients = localClients(stack);
});
afterAll(async () => {
  for (const d of opened) d.close();
  clients?.destroy();
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function group(name: string, volumes: string[]): { config: GroupConfig; repo: Repo } {
  const config = parseGroupConfig({
    group: name,
    volumes: volumes.map((id) => ({ id })),
    target: { bucket: stack.bucket, prefix: `groups/${name}` },
    schedule: { expression: "rate(1 hour)" },
    transfer: { shardBlocks: 200, shardRps: 100 },
    snapshots: { keep: 1, completionTimeoutMinutes: 60 },
  });
  const repo = createRepo({
    store: new S3ObjectStore({ client: clients.s3, bucket: stack.bucket }),
    prefix: config.target.prefix,
    group: config.group,
  });
  return { config, repo };
}

/** The emulator's block source with every List request LIST_DELAY_MS slower. */
function slowLists(source: BlockSource): BlockSource {
  return {
    listBlocks: async (r) => {
      await new Promise((res) => setTimeout(res, LIST_DELAY_MS));
      return source.listBlocks(r);
    },
    getBlock: (r) => source.getBlock(r),
  };
}

function deps(): TaskDeps {
  const d = createLocalDeps({ endpoints: stack, simulator: clients.simulator });
  opened.push(d);
  const port = new SyntheticSnapshotPort(ebsAdmin(stack.ebsEndpoint), VOLUME_GIB, WRITTEN / BLOCKS, SYNTH);
  const source = slowLists(d.blockSource());
  return {
    ...d,
    snapshots: () => port,
    blockSource: () => source,
    planOptions: { stopBeforeDeadlineMs: PLAN_RESERVE_MS, pageSize: PAGE },
  };
}

interface PlanCall {
  readonly state: string;
  readonly resumed: boolean;
  readonly simulatedMs: number;
  readonly done?: boolean;
}

/** The run's plan objects but its cursors, relative to the run's prefix: suffix → bytes (base64). */
async function planObjects(repo: Repo, runId: string): Promise<Map<string, string>> {
  const prefix = `${repo.prefix}/runs/${runId}/`;
  const cursors = planCursorsPrefix(repo, runId);
  const out = new Map<string, string>();
  for await (const o of repo.store.list(`${prefix}plan/`)) {
    if (o.key.startsWith(cursors) || !(o.key.endsWith(".blocks") || o.key.endsWith("shards.json"))) continue;
    const body = Buffer.from((await repo.store.get(o.key)).body).toString("base64");
    // shards.json holds no run id; shard lists neither: equal bytes across runs.
    out.set(o.key.slice(prefix.length), body);
  }
  return out;
}

/**
 * Records every Plan invocation and, when the plan is done, what it wrote (the run deletes its
 * runs/ files after the commit) together with the run plan's volumes.
 */
function recordPlans(
  clock: SimulatedClock,
  repo: Repo,
  calls: PlanCall[],
  seen: {
    objects?: Map<string, string>;
    runId?: string;
    volumes?: { volumeId: string; snapshotId: string }[];
  },
) {
  return (task: string, state: string, fn: (e: unknown) => Promise<unknown>) =>
    task !== "Plan"
      ? fn
      : async (event: unknown) => {
          const e = event as { runId: string; resume?: unknown };
          const started = clock.now();
          const r = (await fn(event)) as { done: boolean; planKey?: string };
          calls.push({
            state,
            resumed: e.resume !== undefined,
            simulatedMs: clock.now() - started,
            done: r.done,
          });
          if (r.done && seen.objects === undefined) {
            seen.runId = e.runId;
            seen.objects = await planObjects(repo, e.runId);
            seen.volumes = (await readRunPlan(repo, runPlanKey(repo, e.runId))).volumes;
          }
          return r;
        };
}

/** The same plan in one uninterrupted step (no deadline), in memory: its objects, as `planObjects`. */
async function uninterruptedPlan(
  config: GroupConfig,
  runId: string,
  volumes: { volumeId: string; snapshotId: string }[],
): Promise<Map<string, string>> {
  const repo = createRepo({
    store: new MemoryObjectStore(),
    prefix: config.target.prefix,
    group: config.group,
  });
  const d = createLocalDeps({ endpoints: stack, simulator: clients.simulator });
  opened.push(d);
  const t = config.transfer;
  const step = await planRunStep(
    { repo, source: d.blockSource() },
    {
      input: {
        runId,
        volumes: volumes.map((v) => ({
          volumeId: v.volumeId,
          snapshotId: v.snapshotId,
          baseSnapshotId: null,
        })),
        shardBlocks: t.shardBlocks,
        targetShards: targetShardsPerVolume(volumes.length, t),
        maxShards: 3000,
        pageSize: PAGE,
      },
    },
  );
  expect(step.done).toBe(true);
  return planObjects(repo, runId);
}

describe("a plan longer than one Lambda invocation, time compressed", () => {
  it("GIVEN slow List requests WHEN the group is backed up THEN Plan resumes from its cursor over several invocations within its deadline, the shards are those of an uninterrupted plan, and the run commits", async () => {
    const volumes = ["vol-91a0000000000001", "vol-91a0000000000002"];
    const { config, repo } = group("planresume", volumes);
    const clock = new SimulatedClock({ scale: SCALE });
    const calls: PlanCall[] = [];
    const seen: Parameters<typeof recordPlans>[3] = {};
    const states: string[] = [];
    const run = await runLocalBackup({
      config,
      deps: deps(),
      clock,
      time: OTHERS_UNCOMPRESSED,
      wrap: recordPlans(clock, repo, calls, seen),
      onState: (s) => states.push(s),
    });
    expect(run, `${run.error}: ${run.cause}`).toMatchObject({ outcome: "committed", generation: 1 });
    console.log(`plan-resume: ${calls.length} Plan invocations, ${run.historyEvents} history events`);
    expect(calls.length).toBeGreaterThanOrEqual(3);
    expect(calls[0]).toMatchObject({ state: "Plan", resumed: false, done: false });
    expect(calls.slice(1).every((c) => c.state === "ResumePlan" && c.resumed)).toBe(true);
    expect(calls.at(-1)!.done).toBe(true);
    expect(states.filter((s) => s === "ResumePlan").length).toBe(calls.length - 1);
    // The loop carries a pointer, not the plan: the state stays small (the runner fails a run past 256 KiB).
    expect(run.largestPayload.bytes, run.largestPayload.where).toBeLessThan(32 * 1024);
    // No invocation outlived its function timeout (the runner would have failed it with Lambda.Unknown).
    expect(Math.max(...calls.map((c) => c.simulatedMs))).toBeLessThan(TASKS.Plan.timeoutSeconds * 1000);

    const expected = await uninterruptedPlan(config, seen.runId!, seen.volumes!);
    expect([...expected.keys()].filter((k) => k.endsWith(".blocks")).length).toBeGreaterThanOrEqual(6);
    expect(seen.objects).toEqual(expected);
    expect(await checkSampled(repo, volumes, WRITTEN, VOLUME_GIB, SYNTH)).toBeGreaterThan(100);
  }, 300_000);

  it("GIVEN a resumed Plan invocation killed mid-way (it keeps running) WHEN Step Functions retries it beside the zombie THEN the shards are still exactly those of an uninterrupted plan and the run commits", async () => {
    const volumes = ["vol-91a0000000000003", "vol-91a0000000000004"];
    const { config, repo } = group("planresumecrash", volumes);
    const clock = new SimulatedClock({ scale: SCALE });
    const calls: PlanCall[] = [];
    const seen: Parameters<typeof recordPlans>[3] = {};
    const record = recordPlans(clock, repo, calls, seen);
    let killed = 0;
    let zombie: Promise<unknown> | undefined;
    const run = await runLocalBackup({
      config,
      deps: deps(),
      clock,
      time: OTHERS_UNCOMPRESSED,
      wrap: (task, state, fn) => {
        const recorded = record(task, state, fn);
        if (task !== "Plan") return recorded;
        return async (event) => {
          if (state !== "ResumePlan" || killed > 0) return recorded(event);
          killed++;
          // The first resumed invocation dies after a while; its work goes on unobserved.
          zombie = fn(event);
          zombie.catch(() => {});
          await new Promise((r) => setTimeout(r, 600));
          throw new TransientError("the sandbox of this invocation died (injected)");
        };
      },
    });
    expect(run, `${run.error}: ${run.cause}`).toMatchObject({ outcome: "committed", generation: 1 });
    expect(killed).toBe(1);
    expect(calls.filter((c) => c.state === "ResumePlan").length).toBeGreaterThanOrEqual(1);
    await zombie?.catch(() => {});
    const expected = await uninterruptedPlan(config, seen.runId!, seen.volumes!);
    expect(seen.objects).toEqual(expected);
    expect(await checkSampled(repo, volumes, WRITTEN, VOLUME_GIB, SYNTH)).toBeGreaterThan(100);
  }, 300_000);
});
