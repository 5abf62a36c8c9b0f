/**
 * The local run fails where AWS fails (local/aws-limits.ts): Task and Lambda timeouts on a scalable
 * clock, the 256 KiB payload quota (state input/output, Task results, Map results), the 6 MB Lambda
 * response, the 25,000-event history, the execution timeout. Small definitions with fake handlers;
 * no network, no real waiting.
 */
import { describe, expect, it } from "vitest";
import {
  HISTORY_EVENT_LIMIT,
  HISTORY_EVENTS,
  LAMBDA_RESPONSE_LIMIT_BYTES,
  type LimitedTask,
  PAYLOAD_LIMIT_BYTES,
  runWithAwsLimits,
} from "#local/aws-limits.ts";
import { SimulatedClock } from "#local/sim-clock.ts";
import type { AslDefinition } from "#workflows/definition.ts";

const FN = "arn:aws:lambda:us-east-1:000000000000:function:fake";
const never = () => new Promise<never>(() => {});
const task = (handler: (input: unknown) => unknown, lambdaTimeoutSeconds = 900): LimitedTask => ({
  handler: async (input) => handler(input),
  lambdaTimeoutSeconds,
});
const catchAll = (next: string) => [{ ErrorEquals: ["States.ALL"], ResultPath: "$.error", Next: next }];

/** Work -> Done; with `caught`, Work's errors are caught into Caught (a Pass) -> Done. */
function oneTask(extra: Record<string, unknown> = {}, caught = true): AslDefinition {
  return {
    StartAt: "Work",
    States: {
      Work: {
        Type: "Task",
        Resource: FN,
        TimeoutSeconds: 930,
        Next: "Done",
        ...(caught ? { Catch: catchAll("Caught") } : {}),
        ...extra,
      },
      ...(caught ? { Caught: { Type: "Pass", Next: "Done" } } : {}),
      Done: { Type: "Succeed" },
    },
  };
}

describe("the local run enforces AWS's limits", () => {
  it("GIVEN a Lambda that runs past its 15-minute timeout on a fast clock THEN the Task fails with Lambda.Unknown as in AWS, and Catch sees it", async () => {
    // 900 s = 0.9 s, and the Task's 930 s another 30 ms later: a margin the clock's millisecond timers
    // keep in order on a loaded machine (at 100,000× it was 0.3 ms, and States.Timeout won once).
    const clock = new SimulatedClock({ scale: 1_000 });
    const states: string[] = [];
    const run = await runWithAwsLimits({
      definition: oneTask(),
      input: {},
      tasks: { Work: task(never, 900) },
      clock,
      onEvent: (e) => e.type === "StateEntered" && states.push(e.state!.name),
    });
    expect(run.status).toBe("SUCCEEDED");
    expect(states).toEqual(["Work", "Caught", "Done"]);
    const error = (run.output as { error: { Error: string; Cause: string } }).error;
    expect(error.Error).toBe("Lambda.Unknown");
    expect(error.Cause).toContain("Lambda did not return an error type");
    expect(error.Cause).toContain("Task timed out after 900.00 seconds");
  });

  it("GIVEN a Task whose TimeoutSeconds is shorter than the function's THEN it fails with States.Timeout", async () => {
    const run = await runWithAwsLimits({
      definition: oneTask({ TimeoutSeconds: 60 }, false),
      input: {},
      tasks: { Work: task(never, 900) },
      clock: new SimulatedClock({ scale: 10_000 }), // 60 s = 6 ms, 84 ms before the Lambda's 900 s
    });
    expect(run).toMatchObject({ status: "FAILED", error: "States.Timeout" });
  });

  it("GIVEN a handler that fails THEN the Task error is its name and the cause is the Lambda error object with its trace", async () => {
    const run = await runWithAwsLimits({
      definition: oneTask({}, false),
      input: {},
      tasks: {
        Work: task(() => {
          throw Object.assign(new Error("index write refused"), { name: "CommitConflictError" });
        }),
      },
    });
    expect(run.status).toBe("FAILED");
    expect(run.error).toBe("CommitConflictError");
    const cause = JSON.parse(run.cause!) as { errorType: string; errorMessage: string; trace: string[] };
    expect(cause.errorType).toBe("CommitConflictError");
    expect(cause.errorMessage).toBe("index write refused");
    expect(cause.trace[0]).toBe("CommitConflictError: index write refused");
  });

  it("fails with States.DataLimitExceeded, which States.ALL does not catch, when a Task returns more than 256 KiB", async () => {
    const states: string[] = [];
    const run = await runWithAwsLimits({
      definition: oneTask(),
      input: {},
      tasks: { Work: task(() => ({ blob: "x".repeat(PAYLOAD_LIMIT_BYTES) })) },
      onEvent: (e) => e.type === "StateEntered" && states.push(e.state!.name),
    });
    expect(run).toMatchObject({ status: "FAILED", error: "States.DataLimitExceeded" });
    expect(run.cause).toMatch(/The result of state Work is \d+ bytes/);
    expect(states).not.toContain("Caught");
  });

  it("fails with States.DataLimitExceeded when a state's output grows past 256 KiB", async () => {
    const half = "y".repeat(PAYLOAD_LIMIT_BYTES / 2);
    let after = 0;
    const run = await runWithAwsLimits({
      definition: {
        StartAt: "A",
        States: {
          A: { Type: "Task", Resource: FN, TimeoutSeconds: 60, ResultPath: "$.a", Next: "B" },
          B: { Type: "Task", Resource: FN, TimeoutSeconds: 60, ResultPath: "$.b", Next: "C" },
          C: { Type: "Task", Resource: FN, TimeoutSeconds: 60, End: true },
        },
      },
      input: {},
      tasks: {
        A: task(() => half),
        B: task(() => half),
        C: task(() => {
          after++;
          return {};
        }),
      },
    });
    expect(run).toMatchObject({ status: "FAILED", error: "States.DataLimitExceeded" });
    expect(run.cause).toContain("The output of state B");
    expect(after).toBe(0); // the run stopped before the next Task
  });

  it("fails with States.DataLimitExceeded when a Map's results exceed 256 KiB although each item is small", async () => {
    const run = await runWithAwsLimits({
      definition: {
        StartAt: "Each",
        States: {
          Each: {
            Type: "Map",
            ItemsPath: "$.items",
            ItemProcessor: {
              ProcessorConfig: { Mode: "INLINE" },
              StartAt: "Item",
              States: { Item: { Type: "Task", Resource: FN, TimeoutSeconds: 60, End: true } },
            },
            ResultSelector: { "n.$": "States.ArrayLength($)" },
            End: true,
          },
        },
      },
      input: { items: Array.from({ length: 100 }, (_, i) => i) },
      tasks: { Item: task(() => ({ part: "z".repeat(3000) })) },
    });
    expect(run).toMatchObject({ status: "FAILED", error: "States.DataLimitExceeded" });
    expect(run.cause).toContain("The results of Map state Each");
  });

  it("fails the Task with Function.ResponseSizeTooLarge when a Lambda answers more than 6 MB", async () => {
    const run = await runWithAwsLimits({
      definition: oneTask(),
      input: {},
      tasks: { Work: task(() => "r".repeat(LAMBDA_RESPONSE_LIMIT_BYTES)) },
    });
    expect(run.status).toBe("SUCCEEDED");
    const error = (run.output as { error: { Error: string; Cause: string } }).error;
    expect(error.Error).toBe("Function.ResponseSizeTooLarge");
    expect(error.Cause).toContain("maximum allowed payload size (6291556 bytes)");
  });

  it("counts history events per state as AWS records them", async () => {
    let calls = 0;
    const run = await runWithAwsLimits({
      definition: {
        StartAt: "Work",
        States: {
          Work: {
            Type: "Task",
            Resource: FN,
            TimeoutSeconds: 60,
            Retry: [{ ErrorEquals: ["TransientError"], MaxAttempts: 2 }],
            Next: "Pause",
          },
          Pause: { Type: "Wait", Seconds: 3600, Next: "Done" },
          Done: { Type: "Succeed" },
        },
      },
      input: {},
      tasks: {
        Work: task(() => {
          if (++calls === 1) throw Object.assign(new Error("blip"), { name: "TransientError" });
          return {};
        }),
      },
      waits: "simulated",
    });
    expect(run.status).toBe("SUCCEEDED");
    expect(run.historyEvents).toBe(
      HISTORY_EVENTS.Execution +
        HISTORY_EVENTS.Task +
        HISTORY_EVENTS.TaskRetry +
        HISTORY_EVENTS.Wait +
        HISTORY_EVENTS.Succeed,
    );
  });

  it("fails with States.Runtime once the history passes 25,000 events", async () => {
    let calls = 0;
    const run = await runWithAwsLimits({
      definition: {
        StartAt: "Poll",
        States: {
          Poll: { Type: "Task", Resource: FN, TimeoutSeconds: 60, ResultPath: "$.poll", Next: "Again?" },
          "Again?": {
            Type: "Choice",
            Choices: [{ Variable: "$.poll.done", BooleanEquals: true, Next: "Done" }],
            Default: "Poll",
          },
          Done: { Type: "Succeed" },
        },
      },
      input: {},
      tasks: {
        Poll: task(() => {
          calls++;
          return { done: false };
        }),
      },
    });
    expect(run).toMatchObject({ status: "FAILED", error: "States.Runtime" });
    expect(run.cause).toContain("maximum number of history events (25000)");
    const perLoop = HISTORY_EVENTS.Task + HISTORY_EVENTS.Choice;
    // It stopped at the limit, not later: at most one more Task ran after the event that crossed it.
    expect(calls).toBeLessThanOrEqual(Math.ceil(HISTORY_EVENT_LIMIT / perLoop) + 1);
    expect(run.historyEvents).toBeGreaterThan(HISTORY_EVENT_LIMIT);
  });

  it("GIVEN a Wait of a day and simulated waits THEN the clock moves a day and no real day passes", async () => {
    const clock = new SimulatedClock();
    const before = clock.now();
    const real = Date.now();
    const run = await runWithAwsLimits({
      definition: {
        StartAt: "Pause",
        States: { Pause: { Type: "Wait", SecondsPath: "$.seconds", End: true } },
      },
      input: { seconds: 86_400 },
      tasks: {},
      clock,
      waits: "simulated",
    });
    expect(run).toMatchObject({ status: "SUCCEEDED", output: { seconds: 86_400 } });
    expect(clock.now() - before).toBeGreaterThanOrEqual(86_400_000);
    expect(Date.now() - real).toBeLessThan(60_000);
  });

  it("GIVEN the state machine's TimeoutSeconds THEN a run that waits longer ends TIMED_OUT", async () => {
    const run = await runWithAwsLimits({
      definition: {
        StartAt: "Work",
        TimeoutSeconds: 3600,
        States: { Work: { Type: "Task", Resource: FN, TimeoutSeconds: 4000, End: true } },
      },
      input: {},
      tasks: { Work: { handler: never } },
      // 3,600 s = 0.36 s, 40 ms before the Task's own 4,000 s.
      clock: new SimulatedClock({ scale: 10_000 }),
    });
    expect(run.status).toBe("TIMED_OUT");
  });
});
