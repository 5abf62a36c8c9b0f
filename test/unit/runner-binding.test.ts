import { describe, expect, it } from "vitest";
import type { TaskDeps } from "#lambdas/runtime.ts";
import {
  bindHandlers,
  invocationDeps,
  parseInjectedFailure,
  RunnerError,
  taskStates,
} from "#local/runner.ts";
import { type AslDefinition, localDefinition } from "#workflows/definition.ts";
import { TASK_NAMES, TASKS } from "#workflows/tasks.ts";

const deps = {} as TaskDeps; // binding only; no handler runs here

describe("local runner binding", () => {
  const def = localDefinition();

  it("GIVEN the workflow definition THEN every Task state, Map item processors included, gets a local handler", () => {
    const states = taskStates(def);
    const expected = TASK_NAMES.flatMap((t) => TASKS[t].states);
    expect(new Set(states)).toEqual(new Set(expected));
    expect(Object.keys(bindHandlers(def, deps)).sort()).toEqual([...new Set(states)].sort());
  });

  it("fails loudly, naming the state, when a Task would fall through to a real Lambda call", () => {
    const extra: AslDefinition = {
      ...def,
      States: {
        ...def.States,
        Mystery: { Type: "Task", Resource: "arn:aws:lambda:us-east-1:000000000000:function:x", End: true },
      },
    };
    expect(() => bindHandlers(extra, deps)).toThrow(RunnerError);
    expect(() => bindHandlers(extra, deps)).toThrow(/no local handler for Task state\(s\) Mystery/);
  });

  it("fails with a clear message for an --inject-failure of an unknown task", () => {
    expect(parseInjectedFailure("Transfer:vol-a")).toEqual({ task: "Transfer", volumeId: "vol-a" });
    expect(() => parseInjectedFailure("Transfr:vol-a")).toThrow(
      /TASK one of AcquireLock, .*ReleaseLock, got "Transfr:vol-a"/,
    );
  });

  it("GIVEN the timeout the runner enforces for a state WHEN an invocation starts THEN its remainingMs counts down from it on the run's clock", () => {
    let now = 1_000_000;
    const base = { clock: { now: () => now } } as TaskDeps;
    const d = invocationDeps(base, 1800);
    expect(d.remainingMs?.()).toBe(1_800_000);
    now += 600_000;
    expect(d.remainingMs?.()).toBe(1_200_000);
    // Each invocation starts its own count.
    expect(invocationDeps(base, 1800).remainingMs?.()).toBe(1_800_000);
    // Lambda's own count (defineTask's context) wins; no timeout, no count.
    const lambda = { ...base, remainingMs: () => 42 };
    expect(invocationDeps(lambda, 1800).remainingMs?.()).toBe(42);
    expect(invocationDeps(base, undefined).remainingMs).toBeUndefined();
  });
});
