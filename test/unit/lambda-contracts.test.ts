import { describe, expect, it } from "vitest";
import { parseGroupConfig } from "#core/config/group-config.ts";
import { createRepo } from "#core/format/layout.ts";
import { acquireLock } from "#core/protocol/lock.ts";
import { makeHandler as acquire } from "#lambdas/acquire-lock.ts";
import { makeHandler as commit } from "#lambdas/commit.ts";
import { AcquireLockInput, AcquireLockOutput, MAX_INLINE_SHARDS, PlanOutput } from "#lambdas/contracts.ts";
import { MissingEnvironmentError, requireEnv } from "#lambdas/env.ts";
import { defineTask, MAX_ERROR_MESSAGE_CHARS, toContractError } from "#lambdas/runtime.ts";
import { makeHandler as transfer } from "#lambdas/transfer.ts";
import { Errors, NotImplementedError } from "#workflows/errors.ts";
import { memoryDeps } from "./lambda-fixtures.ts";
import { FakeBlockSource } from "./transfer-fixtures.ts";

const deps = memoryDeps(new FakeBlockSource({ volumeBlocks: 8, has: () => true }));
const config = parseGroupConfig({
  group: "orders",
  volumes: [{ id: "vol-0123456789abcdef0" }],
  target: { bucket: "my-backups" },
  schedule: { expression: "rate(1 hour)" },
});

async function errorOf(p: Promise<unknown>): Promise<Error> {
  return p.then(
    () => {
      throw new Error("expected a rejection");
    },
    (e: unknown) => e as Error,
  );
}

describe("task input validation", () => {
  it("fails with InvalidInputError naming every bad field, what was expected and what was received", async () => {
    const error = await errorOf(
      transfer(() => deps)({
        bucket: "b",
        prefix: "p",
        group: "g",
        runId: "bad run id",
        volumeId: "vol-1",
        shard: -1,
      }),
    );
    expect(error.name).toBe(Errors.InvalidInput);
    expect(error.message).toContain("task Transfer received an input that does not match its contract");
    expect(error.message).toContain(
      'runId: expected a run id (the execution name) of [A-Za-z0-9._:-], got "bad run id"',
    );
    expect(error.message).toContain("generation: expected number, got nothing (the field is missing)");
    expect(error.message).toContain("planKey:");
    expect(error.message).toContain("shard: expected a number >= 0, got -1");
  });

  it("fails with InvalidInputError on unknown fields (contract drift between workflow and handler)", async () => {
    const error = await errorOf(
      commit(() => deps)({ config, runId: "r", fencing: 1, generation: 1, extra: true }),
    );
    expect(error.name).toBe(Errors.InvalidInput);
    expect(error.message).toContain('unknown key "extra"');
  });

  it("GIVEN the largest plan that may pass inline THEN its Map items stay far below 256 KiB", () => {
    const shards = Array.from({ length: MAX_INLINE_SHARDS }, (_, shard) => ({
      volumeId: "vol-0123456789abcdef0",
      shard: 100_000 + shard,
    }));
    const output = PlanOutput.parse({
      done: true,
      planKey: "groups/orders-with-a-long-name/runs/0123456789abcdef0123456789abcdef01234567/plan.json",
      shardCount: shards.length,
      changedBlocks: 1e9,
      maxConcurrency: 10,
      shardRate: 100,
      shards,
    });
    expect(Buffer.byteLength(JSON.stringify(output))).toBeLessThan(200 * 1024);
    expect(() => PlanOutput.parse({ ...output, shards: [...shards, shards[0]] })).toThrow();
  });
});

describe("errors a task hands to the state machine", () => {
  it("GIVEN a huge message and a deep stack THEN the message is cut, the trace is one line, and the log has it all", async () => {
    const logged: string[] = [];
    const d = memoryDeps(new FakeBlockSource({ volumeBlocks: 8, has: () => true }));
    const task = defineTask(
      "AcquireLock",
      AcquireLockInput,
      AcquireLockOutput,
      async () => {
        const e = Object.assign(new Error(`lock refused ${"x".repeat(100_000)}`), {
          name: "CommitConflictError",
        });
        e.stack = `${e.name}: ${e.message}\n${"    at frame (file:///var/task/index.mjs:1:1)\n".repeat(80)}`;
        throw e;
      },
      () => ({ ...d, log: { ...d.log, error: (_m, x) => logged.push(JSON.stringify(x)) } }),
    );
    const error = await errorOf(task({ config, runId: "run-1" }));
    expect(error.name).toBe("CommitConflictError");
    expect(error.message.length).toBeLessThan(MAX_ERROR_MESSAGE_CHARS + 80);
    expect(error.message).toMatch(/^lock refused x+… \(\d+ more characters in the task's log\)$/);
    expect(error.stack?.split("\n")).toHaveLength(1);
    expect(logged[0]!.length).toBeGreaterThan(100_000);
  });
});

describe("AcquireLock", () => {
  it("GIVEN a live lock whose holder's execution has ended THEN it takes the lock over at once, asking about the holder as an execution of its own state machine", async () => {
    const d = memoryDeps(new FakeBlockSource({ volumeBlocks: 8, has: () => true }));
    const repo = createRepo({ store: d.store("my-backups"), prefix: config.target.prefix, group: "orders" });
    await acquireLock(repo, { runId: "dead-run", ttlMs: 3_600_000 });
    const asked: string[] = [];
    const machine = "arn:aws:states:eu-west-1:123456789012:stateMachine:Cgmirror-orders";
    const handler = acquire(() => ({
      ...d,
      runStatus: (arn) => ({
        runState: async (runId) => {
          asked.push(`${arn} ${runId}`);
          return "ended";
        },
      }),
    }));
    expect(await handler({ config, runId: "run-2", stateMachineId: machine })).toMatchObject({
      acquired: true,
      takenOverFrom: "dead-run",
    });
    expect(asked).toEqual([`${machine} dead-run`]);
    // Without the state machine id (an older definition) the lease is waited out as before.
    expect(await handler({ config, runId: "run-4" })).toMatchObject({ acquired: false, heldBy: "run-2" });
  });
});

describe("toContractError", () => {
  it("GIVEN throttling from any service THEN it becomes ThrottledError (retried by the workflow)", () => {
    for (const name of [
      "ThrottlingException",
      "RequestLimitExceeded",
      "SlowDown",
      "BlockSourceThrottledError",
    ]) {
      expect(toContractError(Object.assign(new Error("slow"), { name })).name).toBe(Errors.Throttled);
    }
    expect(
      toContractError(Object.assign(new Error("x"), { name: "Foo", $metadata: { httpStatusCode: 429 } }))
        .name,
    ).toBe(Errors.Throttled);
  });

  it("GIVEN 5xx, network errors or exhausted transfer retries THEN it becomes TransientError", () => {
    expect(
      toContractError(Object.assign(new Error("x"), { name: "Foo", $metadata: { httpStatusCode: 500 } }))
        .name,
    ).toBe(Errors.Transient);
    expect(toContractError(Object.assign(new Error("reset"), { code: "ECONNRESET" })).name).toBe(
      Errors.Transient,
    );
    expect(
      toContractError(Object.assign(new Error("x"), { name: "TransferRetriesExhaustedError" })).name,
    ).toBe(Errors.Transient);
  });

  it("GIVEN contract and core errors THEN their names pass through; unknown ones become InternalError with the original name", () => {
    expect(toContractError(new NotImplementedError("X", "y")).name).toBe(Errors.NotImplemented);
    expect(toContractError(Object.assign(new Error("x"), { name: "CommitConflictError" })).name).toBe(
      Errors.CommitConflict,
    );
    expect(toContractError(Object.assign(new Error("x"), { name: "SourceAccessError" })).name).toBe(
      Errors.TransferFailed,
    );
    const internal = toContractError(new TypeError("boom"));
    expect(internal.name).toBe(Errors.Internal);
    expect(internal.message).toBe("TypeError: boom");
  });
});

describe("requireEnv", () => {
  it("fails with MissingEnvironmentError naming the variable", () => {
    expect(() => requireEnv({}, "POWERTOOLS_SERVICE_NAME")).toThrow(MissingEnvironmentError);
    expect(() => requireEnv({ X: " " }, "X")).toThrow(/environment variable X is not set/);
    expect(requireEnv({ X: "v" }, "X")).toBe("v");
  });
});
