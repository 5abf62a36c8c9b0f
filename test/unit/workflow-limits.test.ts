/**
 * The synthesized definition under AWS's limits (local/aws-limits.ts): a collectAll run of the
 * largest group the config allows (100 volumes) whose every volume fails to prepare with a huge
 * message and a deep stack trace still fits Step Functions' 256 KiB, and its cause an execution's
 * 32 KiB. The Prepare handler is the real task wrapper (lambdas/runtime.ts `defineTask`), so the
 * bound is the one deployed; the other tasks answer like the real ones (lambdas/contracts.ts).
 */
import { beforeAll, describe, expect, it } from "vitest";
import { parseGroupConfig } from "#core/config/group-config.ts";
import { PrepareInput, PrepareOutput } from "#lambdas/contracts.ts";
import { defineTask, type TaskDeps } from "#lambdas/runtime.ts";
import { type LimitedTask, PAYLOAD_LIMIT_BYTES, runWithAwsLimits } from "#local/aws-limits.ts";
import { type AslDefinition, localDefinition } from "#workflows/definition.ts";
import { Errors } from "#workflows/errors.ts";
import { TASK_NAMES, TASKS, type TaskName } from "#workflows/tasks.ts";

let definition: AslDefinition;
beforeAll(() => {
  definition = localDefinition();
});

const VOLUMES = Array.from({ length: 100 }, (_, i) => `vol-${i.toString(16).padStart(17, "0")}`);
const config = parseGroupConfig({
  group: "big",
  volumes: VOLUMES.map((id) => ({ id })),
  target: { bucket: "my-backups" },
  schedule: { expression: "rate(1 hour)" },
  prepare: { policy: "collectAll" },
});

const quiet: TaskDeps = {
  store: () => {
    throw new Error("no store in this test");
  },
  blockSource: () => {
    throw new Error("no EBS in this test");
  },
  snapshots: () => {
    throw new Error("no EC2 in this test");
  },
  freeze: () => {
    throw new Error("no SSM in this test");
  },
  clock: { now: () => Date.now() },
  log: { info: () => {}, warn: () => {}, error: () => {} },
  metrics: { add: () => {}, flush: () => {} },
};

/** An error as a real failure looks: a long message and a deep stack trace. */
function deepError(name: string, message: string): Error {
  const e = Object.assign(new Error(message), { name });
  e.stack = [
    `${name}: ${message}`,
    ...Array.from({ length: 60 }, (_, i) => `    at frame${i} (file:///var/task/index.mjs:1:${1000 + i})`),
  ].join("\n");
  return e;
}

function tasks(revertInputs: unknown[]): Record<string, LimitedTask> {
  const prepare = defineTask(
    "Prepare",
    PrepareInput,
    PrepareOutput,
    async (input) => {
      const i = VOLUMES.indexOf(input.volumeId);
      // Half fail at once (not retried), half are throttled until the retries run out (caught).
      if (i % 2 === 0) throw deepError("CommitConflictError", `index write refused ${"x".repeat(60_000)}`);
      throw deepError("SlowDown", `Please reduce your request rate. ${"y".repeat(60_000)}`);
    },
    () => quiet,
  );
  const answers: Record<TaskName, (input: Record<string, unknown>) => unknown> = {
    AcquireLock: () => ({
      acquired: true,
      fencing: 7,
      expiresAt: "2026-01-01T12:00:00.000Z",
      takenOverFrom: null,
    }),
    Recover: () => ({
      action: "none",
      revertedVersions: 0,
      deletedSnapshots: 0,
      headGeneration: 4,
      nextGeneration: 5,
    }),
    Snapshot: () => ({
      snapshots: VOLUMES.map((volumeId, i) => ({
        volumeId,
        snapshotId: `snap-${i.toString(16).padStart(17, "0")}`,
      })),
      startedAt: "2026-01-01T00:00:00.000Z",
      coordinationMs: 42,
      frozen: false,
      reused: false,
      adopted: false,
      waitingSince: "2026-01-01T00:00:01.000Z",
    }),
    CheckSnapshots: () => ({ allCompleted: true, completed: 100, pending: 0, waitSeconds: 15 }),
    Plan: () => ({
      done: true,
      planKey: "groups/big/runs/r/plan.json",
      shardCount: 100,
      changedBlocks: 100,
      maxConcurrency: 10,
      shardRate: 100,
      shards: VOLUMES.map((volumeId) => ({ volumeId, shard: 0 })),
    }),
    Transfer: () => ({ ok: true, done: true, checkpoint: null, blocks: 1, blocksDone: 1, storedBytes: 1 }),
    Prepare: (input) => prepare(input),
    Commit: () => {
      throw new Error("must not commit");
    },
    Revert: (input) => {
      revertInputs.push(input);
      return {
        alreadyCommitted: false,
        needsRepair: false,
        revertedVersions: 0,
        deletedObjects: 0,
        deletedSnapshots: 0,
        keptSnapshots: 0,
      };
    },
    ReleaseLock: () => ({ released: true, prunedSnapshots: 0, cleanedObjects: 0 }),
  };
  const out: Record<string, LimitedTask> = {};
  for (const task of TASK_NAMES) {
    for (const state of TASKS[task].states) {
      out[state] = {
        handler: async (input) => answers[task](input as Record<string, unknown>),
        lambdaTimeoutSeconds: TASKS[task].timeoutSeconds,
      };
    }
  }
  return out;
}

describe("the workflow within Step Functions' payload quota", () => {
  it("GIVEN 100 volumes that all fail to prepare with long causes and stack traces under collectAll THEN the run reverts with every volume named and the state stays far below 256 KiB", async () => {
    const revertInputs: unknown[] = [];
    const run = await runWithAwsLimits({
      definition,
      input: { config },
      tasks: tasks(revertInputs),
      context: {
        Execution: { Name: "run-1", StartTime: "2026-01-01T00:00:00.000Z" },
        StateMachine: {
          Id: "arn:aws:states:us-east-1:000000000000:stateMachine:cgmirror-big",
          Name: "cgmirror-big",
        },
      },
      retryIntervalMs: 0,
    });
    expect(run.status).toBe("FAILED");
    expect(run.error).toBe(Errors.PrepareFailed);
    // Far below the quota, wherever it was largest (the prepare Map's results, the Revert input...).
    expect(run.largestPayload.bytes).toBeLessThan(PAYLOAD_LIMIT_BYTES / 2);
    // The execution's cause names every volume and error, and fits an execution's cause (32 KiB).
    expect(run.cause!.length).toBeLessThan(32_768);
    for (const v of VOLUMES) expect(run.cause).toContain(v);
    expect(run.cause).toContain("CommitConflictError");
    expect(run.cause).toContain(Errors.Throttled);
    // Revert got the bounded per-volume details.
    const error = (revertInputs[0] as { error: { Error: string; volumes: { cause: string }[] } }).error;
    expect(error.Error).toBe(Errors.PrepareFailed);
    expect(error.volumes).toHaveLength(100);
    for (const v of error.volumes) expect(v.cause.length).toBeLessThan(1024);
  }, 120_000);
});
