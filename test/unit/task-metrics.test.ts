/**
 * The metrics the backup tasks publish (lambdas/metric-names.ts), which the dashboard and alarms
 * (infra/stack.ts) read: the REAL handlers run by the local interpreter over in-memory deps with a
 * controlled clock, so every value is known exactly.
 */
import { StateMachine } from "aws-local-stepfunctions";
import { beforeAll, describe, expect, it } from "vitest";
import { parseGroupConfig } from "#core/config/group-config.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { HANDLER_MAKERS } from "#lambdas/makers.ts";
import { RUN_METRICS } from "#lambdas/metric-names.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import { type AslDefinition, localDefinition } from "#workflows/definition.ts";
import { TASK_NAMES, TASKS, type TaskName } from "#workflows/tasks.ts";
import { memoryDeps } from "./lambda-fixtures.ts";
import { FakeBlockSource } from "./transfer-fixtures.ts";

type Json = Parameters<StateMachine["run"]>[0];

let definition: AslDefinition;
beforeAll(() => {
  definition = localDefinition();
});

const config = parseGroupConfig({
  group: "orders",
  volumes: [
    { id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0", mountPoint: "/data" },
    { id: "vol-0123456789abcdef1", instanceId: "i-0123456789abcdef1", mountPoint: "/log" },
  ],
  target: { bucket: "my-backups" },
  schedule: { expression: "rate(1 hour)" },
  transfer: { shardBlocks: 64 },
});

/**
 * Binds the handlers; `executionStartedAt` replaces `$$.Execution.StartTime` in Commit's input (the
 * interpreter sets the real start time, and RunDuration is measured against the frozen clock).
 */
function bind(
  deps: TaskDeps,
  executionStartedAt: number,
  wrap: (task: TaskName, fn: (e: unknown) => Promise<unknown>) => typeof fn = (_t, f) => f,
) {
  const handlers: Record<string, (input: Json) => Promise<Json>> = {};
  for (const task of TASK_NAMES) {
    const handler = HANDLER_MAKERS[task](() => deps);
    const started = new Date(executionStartedAt).toISOString();
    const fn = wrap(
      task,
      task === "Commit"
        ? (e) => handler({ ...(e as Record<string, unknown>), executionStartedAt: started })
        : handler,
    );
    for (const state of TASKS[task].states) handlers[state] = async (input) => (await fn(input)) as Json;
  }
  return handlers;
}

function run(name: string, handlers: Record<string, (input: Json) => Promise<Json>>) {
  const input = { config } as unknown as Json;
  return new StateMachine(definition as never).run(input, {
    overrides: {
      taskResourceLocalHandlers: handlers,
      waitTimeOverrides: { WaitForSnapshots: 0 },
      retryIntervalOverrides: Object.fromEntries(
        Object.values(TASKS)
          .flatMap((t) => t.states)
          .map((s) => [s, 0]),
      ),
    },
    context: {
      Execution: { Name: name, Input: input, StartTime: new Date().toISOString() },
      StateMachine: {
        Id: "arn:aws:states:us-east-1:000000000000:stateMachine:cgmirror-orders",
        Name: "cgmirror-orders",
      },
    },
  }).result;
}

describe("metrics the backup tasks publish", () => {
  it("GIVEN a committed run, a failed run and a later run THEN RecoveryPointAge, RunDuration, bytes, throttling and RunReverted carry the exact values", async () => {
    // 200 blocks per volume, 150 written; the first GET of blocks 5 and 6 is throttled (then retried).
    const source = new FakeBlockSource({ volumeBlocks: 200, has: (i) => i % 4 !== 3 });
    const firstTry = new Set<number>();
    source.getFault = (index) => {
      if ((index === 5 || index === 6) && !firstTry.has(index)) {
        firstTry.add(index);
        return "throttle";
      }
      return undefined;
    };
    const deps = memoryDeps(source);
    const of = (name: string) => deps.recordedMetrics.filter((m) => m.name === name);
    const t0 = Date.now();
    deps.setTime(t0);

    const stored: number[] = [];
    const recording = bind(deps, t0 - 120_000, (task, fn) =>
      task === "Transfer"
        ? async (event) => {
            const out = (await fn(event)) as { storedBytes: number };
            stored.push(out.storedBytes);
            return out;
          }
        : fn,
    );
    // The execution started 2 minutes before the (frozen) clock: RunDuration is 120 s.
    await run("run-1", recording);
    expect(of(RUN_METRICS.committed).map((m) => m.value)).toEqual([1]);
    // No committed generation before this run: AcquireLock publishes no age; Commit publishes 0.
    expect(of(RUN_METRICS.recoveryPointAge).map((m) => m.value)).toEqual([0]);
    expect(of(RUN_METRICS.runDuration).map((m) => m.value)).toEqual([120]);
    const sum = (name: string) => of(name).reduce((a, m) => a + m.value, 0);
    // Both volumes' 150 written blocks, per shard (3 shards per volume).
    expect(of(RUN_METRICS.bytesChanged)).toHaveLength(6);
    expect(sum(RUN_METRICS.bytesChanged)).toBe(2 * 150 * BLOCK_SIZE);
    expect(sum(RUN_METRICS.bytesStored)).toBe(stored.reduce((a, b) => a + b, 0));
    expect(sum(RUN_METRICS.bytesStored)).toBeGreaterThan(0);
    // One source serves both volumes: the first GET of block 5 and of block 6 was throttled, 2 in all.
    expect(sum(RUN_METRICS.ebsThrottled)).toBe(2);
    expect(of(RUN_METRICS.runReverted)).toHaveLength(0);
    expect(of("GroupCommitted").every((m) => m.group === "orders")).toBe(true);

    // One hour later a run fails in Transfer and reverts: the age is published at its start.
    deps.setTime(t0 + 3_600_000);
    const failing = bind(deps, t0 + 3_600_000, (task, fn) =>
      task === "Transfer"
        ? async () => {
            throw Object.assign(new Error("AccessDenied on GetSnapshotBlock"), { name: "SourceAccessError" });
          }
        : fn,
    );
    await expect(run("run-2", failing)).rejects.toThrow();
    expect(of(RUN_METRICS.recoveryPointAge).map((m) => m.value)).toEqual([0, 3600]);
    expect(of(RUN_METRICS.runReverted).map((m) => m.value)).toEqual([1]);
    expect(of(RUN_METRICS.committed)).toHaveLength(1);
    expect(of(RUN_METRICS.runDuration)).toHaveLength(1);

    // Two hours after the first: the next run sees a 2-hour-old recovery point, then commits a new one.
    deps.setTime(t0 + 7_200_000);
    await run("run-3", bind(deps, t0 + 7_200_000 - 30_000));
    expect(of(RUN_METRICS.recoveryPointAge).map((m) => m.value)).toEqual([0, 3600, 7200, 0]);
    expect(of(RUN_METRICS.runDuration).map((m) => m.value)).toEqual([120, 30]);
    expect(of(RUN_METRICS.committed)).toHaveLength(2);
  });

  it("GIVEN a run that failed and could not revert WHEN a later run takes its lock over THEN Recover reverts it and publishes RunReverted once", async () => {
    const source = new FakeBlockSource({ volumeBlocks: 64, has: (i) => i % 2 === 0 });
    const deps = memoryDeps(source);
    const of = (name: string) => deps.recordedMetrics.filter((m) => m.name === name);
    const t0 = Date.now();
    deps.setTime(t0);
    await run("run-1", bind(deps, t0));
    // Commit fails and so does Revert: the run ends holding the lock, its work left behind.
    const broken = bind(deps, t0, (task, fn) =>
      task === "Commit" || task === "Revert"
        ? async () => {
            throw Object.assign(new Error("injected"), { name: "SourceAccessError" });
          }
        : fn,
    );
    await expect(run("run-2", broken)).rejects.toThrow();
    expect(of(RUN_METRICS.runReverted)).toHaveLength(0);
    // After its lease (run timeout + 30 min) the next run takes the group over; Recover reverts run-2.
    deps.setTime(t0 + (config.runTimeoutMinutes + 31) * 60_000);
    await run("run-3", bind(deps, t0));
    expect(of(RUN_METRICS.runReverted).map((m) => m.value)).toEqual([1]);
    expect(of(RUN_METRICS.committed)).toHaveLength(2);
  });
});
