/**
 * Runs the synthesized definition with the local interpreter (aws-local-stepfunctions), every Lambda
 * Task state bound to a trivial in-process fake handler by state name. Proves the same definition
 * that is deployed runs locally (DESIGN.md section 5); the real handlers come with the local runner.
 */
import { ExecutionError, StateMachine } from "aws-local-stepfunctions";
import { beforeAll, describe, expect, it } from "vitest";
import { parseGroupConfig } from "#core/config/group-config.ts";
import { CONTRACTS } from "#lambdas/contracts.ts";
import { type AslDefinition, localDefinition } from "#workflows/definition.ts";
import { Errors, TransferFailedError } from "#workflows/errors.ts";
import { TASK_NAMES, TASKS, type TaskName } from "#workflows/tasks.ts";

type Json = Parameters<StateMachine["run"]>[0];
type Handler = (input: Record<string, unknown>) => unknown;

let definition: AslDefinition;
beforeAll(() => {
  definition = localDefinition();
});

const config = parseGroupConfig({
  group: "orders",
  volumes: [
    { id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0" },
    { id: "vol-0123456789abcdef1", instanceId: "i-0123456789abcdef1" },
  ],
  target: { bucket: "my-backups" },
  schedule: { expression: "rate(1 hour)" },
});

function fakes(overrides: Partial<Record<TaskName, Handler>> = {}) {
  const calls: { state: string; input: Record<string, unknown> }[] = [];
  const contractViolations: string[] = [];
  let checks = 0;
  const defaults: Record<TaskName, Handler> = {
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
      snapshots: [
        { volumeId: "vol-0123456789abcdef0", snapshotId: "snap-0123456789abcdef0" },
        { volumeId: "vol-0123456789abcdef1", snapshotId: "snap-0123456789abcdef1" },
      ],
      startedAt: "2026-01-01T00:00:00.000Z",
      coordinationMs: 42,
      frozen: false,
      reused: false,
      adopted: false,
      waitingSince: "2026-01-01T00:00:01.000Z",
    }),
    // First check: still pending, second: all completed (exercises the poll loop).
    CheckSnapshots: () => {
      checks += 1;
      return {
        allCompleted: checks >= 2,
        completed: checks >= 2 ? 2 : 1,
        pending: checks >= 2 ? 0 : 1,
        waitSeconds: 15,
      };
    },
    Plan: () => ({
      done: true,
      planKey: "groups/orders/runs/r/plan.json",
      shardCount: 3,
      changedBlocks: 300,
      maxConcurrency: 3,
      shardRate: 100,
      shards: [
        { volumeId: "vol-0123456789abcdef0", shard: 0 },
        { volumeId: "vol-0123456789abcdef0", shard: 1 },
        { volumeId: "vol-0123456789abcdef1", shard: 0 },
      ],
    }),
    Transfer: () => ({
      ok: true,
      done: true,
      checkpoint: null,
      blocks: 100,
      blocksDone: 100,
      storedBytes: 1024,
    }),
    Prepare: (input) => ({
      ok: true,
      volumeId: input.volumeId,
      index: { versionId: `v-${String(input.volumeId)}`, sha256: "a".repeat(64) },
      sizeBytes: 8 * 2 ** 30,
      reused: false,
    }),
    Commit: (input) => ({
      generation: input.generation,
      committedAt: "2026-01-01T00:05:00.000Z",
      alreadyCommitted: false,
    }),
    Revert: () => ({
      alreadyCommitted: false,
      needsRepair: false,
      revertedVersions: 1,
      deletedObjects: 3,
      deletedSnapshots: 2,
      keptSnapshots: 0,
    }),
    ReleaseLock: () => ({ released: true, prunedSnapshots: 0, cleanedObjects: 0 }),
  };
  const handlers: Record<string, (input: Json) => Promise<Json>> = {};
  for (const task of TASK_NAMES) {
    for (const state of TASKS[task].states) {
      handlers[state] = async (input) => {
        calls.push({ state, input: input as Record<string, unknown> });
        // The definition must pass exactly what each task's contract expects, and the fakes must
        // answer what the real handlers answer: both checked against lambdas/contracts.ts.
        const parsed = CONTRACTS[task].input.safeParse(input);
        if (!parsed.success) contractViolations.push(`${state} input: ${parsed.error.message}`);
        const output = await (overrides[task] ?? defaults[task])(input as Record<string, unknown>);
        const checked = CONTRACTS[task].output.safeParse(output);
        if (!checked.success) contractViolations.push(`${state} output: ${checked.error.message}`);
        return output as Json;
      };
    }
  }
  return { handlers, calls, contractViolations, states: () => calls.map((c) => c.state) };
}

async function run(input: Json, handlers: Record<string, (input: Json) => Promise<Json>>) {
  const machine = new StateMachine(definition as never);
  const execution = machine.run(input, {
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
      Execution: { Name: "run-1", Input: input, StartTime: "2026-01-01T00:00:00.000Z" },
      StateMachine: {
        Id: "arn:aws:states:us-east-1:000000000000:stateMachine:cgmirror-orders",
        Name: "cgmirror-orders",
      },
    },
  });
  return execution.result;
}

describe("the synthesized workflow run by aws-local-stepfunctions", () => {
  it("GIVEN every task succeeds WHEN the group runs THEN it commits, in order, and releases the lock", async () => {
    const f = fakes();
    const output = await run({ config } as unknown as Json, f.handlers);
    expect(output).toEqual({
      status: "committed",
      group: "orders",
      runId: "run-1",
      generation: 5,
      committedAt: "2026-01-01T00:05:00.000Z",
      coordinationMs: 42,
    });
    const states = f.states();
    expect(states.slice(0, 5)).toEqual([
      "AcquireLock",
      "Recover",
      "Snapshot",
      "CheckSnapshots",
      "CheckSnapshots",
    ]);
    expect(states.filter((s) => s === "TransferShard")).toHaveLength(3);
    expect(states.filter((s) => s === "PrepareVolume")).toHaveLength(2);
    expect(states.slice(-2)).toEqual(["Commit", "ReleaseLock"]);
    expect(states).not.toContain("Revert");
    expect(f.contractViolations).toEqual([]);
  });

  it("GIVEN a Map item WHEN Transfer runs THEN it receives a small shard descriptor with the run id", async () => {
    const f = fakes();
    await run({ config } as unknown as Json, f.handlers);
    const item = f.calls.find((c) => c.state === "TransferShard")?.input;
    expect(item).toEqual({
      bucket: "my-backups",
      prefix: "groups/orders",
      group: "orders",
      runId: "run-1",
      generation: 5,
      planKey: "groups/orders/runs/r/plan.json",
      volumeId: "vol-0123456789abcdef0",
      shard: 0,
      rate: 100,
    });
    const commit = f.calls.find((c) => c.state === "Commit")?.input;
    expect(commit?.prepared).toHaveLength(2);
    expect(commit?.fencing).toBe(7);
  });

  it("GIVEN a Transfer that answers done: false with a checkpoint WHEN the Map item continues THEN it invokes Transfer again with that checkpoint until done, then commits", async () => {
    const seen = new Map<string, number>();
    const f = fakes({
      Transfer: (input) => {
        const id = `${String(input.volumeId)}#${String(input.shard)}`;
        const n = (seen.get(id) ?? 0) + 1;
        seen.set(id, n);
        const prev = (input.transfer as { checkpoint?: { key: string } } | undefined)?.checkpoint?.key;
        expect(prev).toBe(n === 1 ? undefined : `groups/orders/runs/run-1/checkpoints/${id}-${n - 1}.json`);
        const done = n === 3;
        return {
          ok: true,
          done,
          checkpoint: done
            ? null
            : { key: `groups/orders/runs/run-1/checkpoints/${id}-${n}.json`, sha256: "b".repeat(64) },
          blocks: 100,
          blocksDone: done ? 100 : 30 * n,
          storedBytes: 1,
        };
      },
    });
    const output = await run({ config } as unknown as Json, f.handlers);
    expect(output).toMatchObject({ status: "committed" });
    expect([...seen.values()]).toEqual([3, 3, 3]);
    expect(f.contractViolations).toEqual([]);
  });

  it("GIVEN a Plan that answers done: false with a cursor WHEN the run continues THEN ResumePlan is invoked with that cursor until done, then the shards transfer", async () => {
    const cursors: unknown[] = [];
    let n = 0;
    const f = fakes({
      Plan: (input) => {
        cursors.push(input.resume);
        n++;
        if (n < 3) {
          return {
            done: false,
            cursor: {
              key: `groups/orders/runs/run-1/plan/cursors/000${n + 1}-x.json`,
              sha256: "c".repeat(64),
            },
            shardCount: n,
            volumesPlanned: 0,
          };
        }
        return {
          done: true,
          planKey: "groups/orders/runs/r/plan.json",
          shardCount: 1,
          changedBlocks: 100,
          maxConcurrency: 1,
          shardRate: 100,
          shards: [{ volumeId: "vol-0123456789abcdef0", shard: 0 }],
        };
      },
    });
    const output = await run({ config } as unknown as Json, f.handlers);
    expect(output).toMatchObject({ status: "committed" });
    expect(f.states().filter((s) => s === "Plan" || s === "ResumePlan")).toEqual([
      "Plan",
      "ResumePlan",
      "ResumePlan",
    ]);
    expect(cursors).toEqual([
      undefined,
      { key: "groups/orders/runs/run-1/plan/cursors/0002-x.json", sha256: "c".repeat(64) },
      { key: "groups/orders/runs/run-1/plan/cursors/0003-x.json", sha256: "c".repeat(64) },
    ]);
    expect(f.states().filter((s) => s === "TransferShard")).toHaveLength(1);
    expect(f.contractViolations).toEqual([]);
  });

  it("GIVEN the lock is held WHEN the group runs THEN it ends as skipped without touching anything", async () => {
    const f = fakes({
      AcquireLock: () => ({ acquired: false, heldBy: "run-0", expiresAt: "2026-01-01T01:00:00Z" }),
    });
    const output = await run({ config } as unknown as Json, f.handlers);
    expect(output).toEqual({
      status: "skipped",
      group: "orders",
      runId: "run-1",
      heldBy: "run-0",
      expiresAt: "2026-01-01T01:00:00Z",
    });
    expect(f.states()).toEqual(["AcquireLock"]);
    expect(f.contractViolations).toEqual([]);
  });

  it("fails with the original error after Revert and ReleaseLock when a Transfer shard fails", async () => {
    const f = fakes({
      Transfer: (input) => {
        if (input.shard === 1) throw new TransferFailedError("segment upload rejected: AccessDenied");
        return { ok: true, done: true, checkpoint: null, blocks: 1, blocksDone: 1, storedBytes: 1 };
      },
    });
    const error = await run({ config } as unknown as Json, f.handlers).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ExecutionError);
    const cause = (error as ExecutionError).cause as { name: string; message: string };
    expect(cause.name).toBe(Errors.TransferFailed);
    expect(String(cause.message)).toContain("AccessDenied");
    const states = f.states();
    expect(states).toContain("Revert");
    expect(states.at(-1)).toBe("ReleaseLockAfterRevert");
    expect(states).not.toContain("Commit");
    expect(states.some((s) => s.startsWith("Prepare"))).toBe(false);
    const revertInput = f.calls.find((c) => c.state === "Revert")?.input;
    expect(revertInput?.error).toMatchObject({ Error: Errors.TransferFailed });
    expect(f.calls.find((c) => c.state === "ReleaseLockAfterRevert")?.input.outcome).toBe("reverted");
    expect(f.contractViolations).toEqual([]);
  });

  it("fails as ReleaseLockFailedError, naming the committed generation, when only the lock release fails after the commit", async () => {
    const f = fakes({
      ReleaseLock: () => {
        throw Object.assign(new Error("lock object is gone"), { name: "LockLostError" });
      },
    });
    const error = await run({ config } as unknown as Json, f.handlers).then(
      () => undefined,
      (e: unknown) => e,
    );
    const cause = (error as ExecutionError).cause as { name: string; message: string };
    expect(cause.name).toBe(Errors.ReleaseLockFailed);
    expect(cause.message).toContain("generation 5 of group orders IS committed");
    expect(cause.message).toContain("LockLostError: lock object is gone");
    expect(f.states()).toContain("Commit");
    expect(f.states()).not.toContain("Revert");
  });

  it("fails with PrepareFailedError after attempting every volume under the collectAll policy", async () => {
    const f = fakes({
      Prepare: (input) => {
        if (input.volumeId === "vol-0123456789abcdef0") {
          throw Object.assign(new Error("index write refused"), { name: "CommitConflictError" });
        }
        return {
          ok: true,
          volumeId: input.volumeId,
          index: { versionId: "v", sha256: "b".repeat(64) },
          sizeBytes: 0,
          reused: false,
        };
      },
    });
    const collectAll = { ...config, prepare: { policy: "collectAll" } };
    const error = await run({ config: collectAll } as unknown as Json, f.handlers).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(((error as ExecutionError).cause as Error).name).toBe(Errors.PrepareFailed);
    const states = f.states();
    expect(states.filter((s) => s === "PrepareVolumeCollect")).toHaveLength(2);
    expect(states).toContain("Revert");
    expect(states).not.toContain("Commit");
  });

  it("fails fast under the failFast policy: the first failed prepare reverts", async () => {
    const f = fakes({
      Prepare: () => {
        throw Object.assign(new Error("index write refused"), { name: "CommitConflictError" });
      },
    });
    const error = await run({ config } as unknown as Json, f.handlers).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(((error as ExecutionError).cause as Error).name).toBe("CommitConflictError");
    expect(f.states()).toContain("Revert");
    expect(f.states()).not.toContain("Commit");
  });
});
