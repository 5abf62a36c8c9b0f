/**
 * Runs a state machine definition with aws-local-stepfunctions and makes it fail where AWS Step
 * Functions and Lambda would (docs/architecture.md, "Local run"):
 *
 * - **Task timeouts** on a scalable clock (local/sim-clock.ts): a Lambda that runs past its function
 *   timeout fails the Task with `Lambda.Unknown` and the cause AWS gives (its handler's promise is
 *   abandoned; in AWS the sandbox is stopped), a Task past its `TimeoutSeconds` with `States.Timeout`.
 *   The interpreter's own timers (real seconds, 60 s by default) are switched off.
 * - **Payloads**: a state's input (after Parameters/ItemSelector) or output, a Task's result and the
 *   results of a Map over 256 KiB (262,144 bytes of UTF-8 JSON) fail the execution with
 *   `States.DataLimitExceeded`, which no Catch catches; a Lambda response over 6 MB (6,291,556 bytes)
 *   fails the Task with `Function.ResponseSizeTooLarge` (the error type Lambda reports; catchable).
 * - **History**: the run counts the events AWS would record (`HISTORY_EVENTS`) and fails past 25,000
 *   with `States.Runtime` "The execution reached the maximum number of history events (25000).". The
 *   children of a distributed Map have histories of their own, counted (and limited) apart.
 * - **Execution timeout**: the definition's `TimeoutSeconds`, on the same clock (status TIMED_OUT).
 * - **Errors as AWS reports them**: a handler's error becomes the Task error named by its `name`, with
 *   the Lambda error object as the cause: `{"errorType","errorMessage","trace"}`.
 *
 * Wait states run on the clock too: `simulated` moves the clock by the wait at once (a wait of days
 * takes no real time), `shortened` pauses briefly without moving it (the local stack's snapshots
 * complete in real time). Retry intervals are shortened, not simulated.
 *
 * Limits are checked at the boundaries the interpreter exposes: synchronously around every Task
 * (input, result, timeouts), and from its event log for state outputs, Map results and history (a
 * violation stops the run before the next Task starts).
 */
import { setImmediate as nextTurn } from "node:timers/promises";
import { ExecutionAbortedError, ExecutionError, StateMachine } from "aws-local-stepfunctions";
import type { AslDefinition } from "#workflows/definition.ts";
import { SimulatedClock } from "./sim-clock.ts";

/** Step Functions: state input/output, Task result, Map results (UTF-8 bytes of the JSON). */
export const PAYLOAD_LIMIT_BYTES = 262_144;
/** Lambda: synchronous invocation response (what Lambda's error message names). */
export const LAMBDA_RESPONSE_LIMIT_BYTES = 6_291_556;
/** Step Functions standard workflows: events in one execution's history. */
export const HISTORY_EVENT_LIMIT = 25_000;

/**
 * The history events AWS records per state, as estimated here (docs/architecture.md, "Local run").
 * A Task: TaskStateEntered, TaskScheduled, TaskStarted, TaskSucceeded|Failed, TaskStateExited, and
 * Scheduled/Started/Failed again for each retry. A Map: MapStateEntered, MapStateStarted (MapRunStarted),
 * MapStateSucceeded (MapRunSucceeded), MapStateExited, plus MapIterationStarted/Succeeded per item of an
 * inline Map (whose states count in the parent's history). A Fail state: FailStateEntered. Others:
 * entered and exited. The execution: ExecutionStarted and its end.
 */
export const HISTORY_EVENTS = {
  Task: 5,
  TaskRetry: 3,
  Map: 4,
  MapIteration: 2,
  Parallel: 4,
  Pass: 2,
  Wait: 2,
  Choice: 2,
  Succeed: 2,
  Fail: 1,
  Execution: 2,
} as const;

/** Larger than any Task timeout we enforce ourselves, smaller than setTimeout's limit. */
const INTERPRETER_TIMER_OFF_SECONDS = 2_000_000;
const WAIT_RESOURCE = "arn:aws:lambda:us-east-1:000000000000:function:cgmirror-local-wait";

type Json = Parameters<StateMachine["run"]>[0];
type StateDef = Record<string, unknown>;
type States = Record<string, StateDef>;
export type TaskHandler = (input: unknown) => Promise<unknown>;

export interface LimitedTask {
  readonly handler: TaskHandler;
  /** The Lambda function's timeout; absent for a Task that is not a Lambda invocation. */
  readonly lambdaTimeoutSeconds?: number;
  /** Replaces the state's own `TimeoutSeconds` (a test that gives a task more room than AWS would). */
  readonly stateTimeoutSeconds?: number;
}

/** One event of the interpreter's log (aws-local-stepfunctions `EventLog`), loosely typed. */
export interface RunEvent {
  readonly type: string;
  readonly state?: { readonly name: string; readonly type: string; readonly output?: unknown };
  readonly parentState?: { readonly name: string };
  readonly index?: number;
  readonly input?: unknown;
  readonly output?: unknown;
}

export interface LimitedRunOptions {
  readonly definition: AslDefinition;
  readonly input: unknown;
  /** Every Task state of the definition (Map item processors included), by state name. */
  readonly tasks: Readonly<Record<string, LimitedTask>>;
  /** @default a real-time SimulatedClock */
  readonly clock?: SimulatedClock;
  /** @default "shortened" */
  readonly waits?: "shortened" | "simulated";
  /** Real pause of a shortened Wait. @default 50 */
  readonly shortenedWaitMs?: number;
  /** Real pause before a retry. @default 20 */
  readonly retryIntervalMs?: number;
  /** The context object (`$$`): Execution.Name, StateMachine.Id, ... */
  readonly context?: Record<string, unknown>;
  readonly onEvent?: (event: RunEvent) => void;
}

export interface LimitedRunResult {
  readonly status: "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "ABORTED";
  readonly output?: unknown;
  readonly error?: string;
  readonly cause?: string;
  /** Events of the execution's history, estimated as AWS records them (HISTORY_EVENTS). */
  readonly historyEvents: number;
  /** The largest state input/output, Task result or Map result seen, and where. */
  readonly largestPayload: { readonly bytes: number; readonly where: string };
}

/** An error no Retry or Catch handles (States.DataLimitExceeded, States.Runtime), as in AWS. */
export class TerminalStatesError extends Error {
  constructor(name: string, message: string) {
    super(message);
    this.name = name;
  }
  get isRetryable(): boolean {
    return false;
  }
  get isCatchable(): boolean {
    return false;
  }
}

export class LocalDefinitionError extends Error {
  override readonly name = "LocalDefinitionError";
}

/** UTF-8 bytes of a value's JSON, as Step Functions measures payloads. */
export function payloadBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value === undefined ? null : value), "utf8");
}

/** The error a Task reports for a Lambda function error: its type, and the Lambda error object as cause. */
function asLambdaFunctionError(error: unknown): Error {
  const e = (error ?? {}) as { name?: unknown; message?: unknown; stack?: unknown };
  const name = typeof e.name === "string" && e.name !== "" ? e.name : "Error";
  const message = typeof e.message === "string" ? e.message : String(error);
  const stack = typeof e.stack === "string" ? e.stack : `${name}: ${message}`;
  const out = new Error(
    JSON.stringify({
      errorType: name,
      errorMessage: message,
      ...(stack === "" ? {} : { trace: stack.split("\n") }),
    }),
  );
  out.name = name;
  return out;
}

function lambdaTimedOut(seconds: number, now: number): Error {
  const payload = JSON.stringify({
    errorMessage: `${new Date(now).toISOString()} local-request Task timed out after ${seconds.toFixed(2)} seconds`,
  });
  const out = new Error(
    `The cause could not be determined because Lambda did not return an error type. Returned payload: ${payload}`,
  );
  out.name = "Lambda.Unknown";
  return out;
}

interface StateInfo {
  readonly type: string;
  /** The distributed Map whose child executions run this state. */
  readonly child?: string;
  readonly distributed?: boolean;
}

function processorOf(state: StateDef): { States: States; ProcessorConfig?: { Mode?: string } } | undefined {
  return (state.ItemProcessor ?? state.Iterator) as
    | { States: States; ProcessorConfig?: { Mode?: string } }
    | undefined;
}

/** Every state by name (names are unique across a definition), with the distributed Map it runs in. */
function indexStates(states: States, child: string | undefined, out: Map<string, StateInfo>): void {
  for (const [name, state] of Object.entries(states)) {
    if (out.has(name)) throw new LocalDefinitionError(`state name ${name} is used twice in the definition`);
    const processor = processorOf(state);
    const distributed = processor?.ProcessorConfig?.Mode === "DISTRIBUTED";
    out.set(name, {
      type: String(state.Type),
      ...(child ? { child } : {}),
      ...(distributed ? { distributed } : {}),
    });
    if (processor) indexStates(processor.States, distributed ? name : child, out);
    if (Array.isArray(state.Branches)) {
      for (const b of state.Branches as { States: States }[]) indexStates(b.States, child, out);
    }
  }
}

interface WaitSpec {
  readonly Seconds?: number;
  readonly SecondsPath?: string;
  readonly Timestamp?: string;
  readonly TimestampPath?: string;
}

interface Prepared {
  readonly definition: AslDefinition;
  readonly taskTimeouts: Map<string, number>;
  readonly waits: Map<string, WaitSpec>;
  readonly executionTimeoutSeconds: number | undefined;
}

/**
 * The definition as the interpreter runs it: its timers off (the runner enforces timeouts on the
 * clock), Wait states turned into local Tasks that wait on the clock.
 */
/**
 * One interpreter per definition text: constructing it validates the definition (asl-validator, about
 * a second of CPU), which need not happen again for every run of the same definition.
 */
const machines = new Map<string, StateMachine>();
function stateMachineOf(definition: unknown): StateMachine {
  const text = JSON.stringify(definition);
  let machine = machines.get(text);
  if (!machine) {
    machine = new StateMachine(definition as never);
    if (machines.size >= 16) machines.delete(machines.keys().next().value as string);
    machines.set(text, machine);
  }
  return machine;
}

function prepareDefinition(def: AslDefinition): Prepared {
  const copy = structuredClone(def) as AslDefinition;
  const taskTimeouts = new Map<string, number>();
  const waits = new Map<string, WaitSpec>();
  const walk = (states: States) => {
    for (const [name, state] of Object.entries(states)) {
      if (state.Type === "Task") {
        if (state.TimeoutSecondsPath !== undefined || state.HeartbeatSeconds !== undefined) {
          throw new LocalDefinitionError(
            `Task ${name}: TimeoutSecondsPath and HeartbeatSeconds are not supported locally`,
          );
        }
        taskTimeouts.set(name, typeof state.TimeoutSeconds === "number" ? state.TimeoutSeconds : 60);
        state.TimeoutSeconds = INTERPRETER_TIMER_OFF_SECONDS;
      } else if (state.Type === "Wait") {
        const { Seconds, SecondsPath, Timestamp, TimestampPath } = state as WaitSpec;
        waits.set(name, {
          ...(Seconds !== undefined ? { Seconds } : {}),
          ...(SecondsPath !== undefined ? { SecondsPath } : {}),
          ...(Timestamp !== undefined ? { Timestamp } : {}),
          ...(TimestampPath !== undefined ? { TimestampPath } : {}),
        });
        const task: StateDef = {
          Type: "Task",
          Resource: WAIT_RESOURCE,
          TimeoutSeconds: INTERPRETER_TIMER_OFF_SECONDS,
        };
        for (const k of ["Comment", "InputPath", "OutputPath", "Next", "End"])
          if (k in state) task[k] = state[k];
        states[name] = task;
      }
      const processor = processorOf(state);
      if (processor) walk(processor.States);
      if (Array.isArray(state.Branches))
        for (const b of state.Branches as { States: States }[]) walk(b.States);
    }
  };
  walk(copy.States);
  const timeout = copy.TimeoutSeconds;
  delete copy.TimeoutSeconds;
  return {
    definition: copy,
    taskTimeouts,
    waits,
    executionTimeoutSeconds: typeof timeout === "number" ? timeout : undefined,
  };
}

/** Evaluates a plain reference path (`$.a.b`) against a value. */
function referencePath(path: string, value: unknown, where: string): unknown {
  if (!/^\$(\.[A-Za-z0-9_]+)*$/.test(path)) {
    throw new LocalDefinitionError(
      `${where}: only plain paths like $.a.b are supported locally, got ${path}`,
    );
  }
  let at: unknown = value;
  for (const key of path.split(".").slice(1)) {
    at = at !== null && typeof at === "object" ? (at as Record<string, unknown>)[key] : undefined;
  }
  return at;
}

function waitMs(name: string, spec: WaitSpec, input: unknown, now: number): number {
  let seconds: unknown = spec.Seconds;
  if (spec.SecondsPath !== undefined) seconds = referencePath(spec.SecondsPath, input, `Wait ${name}`);
  if (spec.Timestamp !== undefined || spec.TimestampPath !== undefined) {
    const ts = spec.Timestamp ?? referencePath(spec.TimestampPath as string, input, `Wait ${name}`);
    return Math.max(0, Date.parse(String(ts)) - now);
  }
  if (typeof seconds !== "number" || !Number.isInteger(seconds) || seconds < 0) {
    // What AWS reports for a SecondsPath that is not a non-negative integer.
    throw new TerminalStatesError(
      "States.Runtime",
      `An error occurred while executing the state '${name}'. The SecondsPath parameter does not reference a valid integer value: ${JSON.stringify(seconds)}`,
    );
  }
  return seconds * 1000;
}

/** Runs `definition` under AWS's limits (see the file header). Never throws for a failed execution. */
export async function runWithAwsLimits(options: LimitedRunOptions): Promise<LimitedRunResult> {
  const clock = options.clock ?? new SimulatedClock();
  const info = new Map<string, StateInfo>();
  indexStates(options.definition.States as States, undefined, info);
  const prepared = prepareDefinition(options.definition);

  let violation: { status: "FAILED" | "TIMED_OUT"; error?: string; cause?: string } | undefined;
  let largest = { bytes: 0, where: "(none)" };
  let abort: () => void = () => {};
  const fail = (error: string, cause: string) => {
    violation ??= { status: "FAILED", error, cause };
    abort();
    return new TerminalStatesError(error, cause);
  };
  const measure = (value: unknown, where: string, what: string): void => {
    const bytes = payloadBytes(value);
    if (bytes > largest.bytes) largest = { bytes, where };
    if (bytes > PAYLOAD_LIMIT_BYTES) {
      throw fail(
        "States.DataLimitExceeded",
        `${what} of ${where} is ${bytes} bytes, over the ${PAYLOAD_LIMIT_BYTES}-byte (256 KiB) payload quota`,
      );
    }
  };

  // ---- the Task states
  const handlers: Record<string, (input: Json) => Promise<Json>> = {};
  for (const [name, limit] of prepared.taskTimeouts) {
    const task = options.tasks[name];
    if (!task) throw new LocalDefinitionError(`no local handler for Task state ${name}`);
    handlers[name] = async (input) => {
      await nextTurn(); // lets the event log catch up: a violation seen there stops this Task
      if (violation)
        throw new TerminalStatesError(violation.error ?? "States.Runtime", violation.cause ?? "");
      measure(input, `state ${name}`, "The input (after Parameters)");
      const started = clock.now();
      const timers = [
        ...(task.lambdaTimeoutSeconds !== undefined
          ? [
              {
                timer: clock.timer(started + task.lambdaTimeoutSeconds * 1000),
                error: () => lambdaTimedOut(task.lambdaTimeoutSeconds as number, clock.now()),
              },
            ]
          : []),
        {
          timer: clock.timer(started + (task.stateTimeoutSeconds ?? limit) * 1000),
          error: () => {
            const e = new Error(
              `the Task ran longer than its TimeoutSeconds (${task.stateTimeoutSeconds ?? limit} s)`,
            );
            e.name = "States.Timeout";
            return e;
          },
        },
      ];
      let result: unknown;
      try {
        result = await Promise.race([
          Promise.resolve()
            .then(() => task.handler(input))
            .catch((error: unknown) => Promise.reject(asLambdaFunctionError(error))),
          ...timers.map((t) => t.timer.fired.then(() => Promise.reject(t.error()))),
        ]);
      } finally {
        for (const t of timers) t.timer.cancel();
      }
      const bytes = payloadBytes(result);
      if (task.lambdaTimeoutSeconds !== undefined && bytes > LAMBDA_RESPONSE_LIMIT_BYTES) {
        throw asLambdaFunctionError({
          name: "Function.ResponseSizeTooLarge",
          message: `Response payload size exceeded maximum allowed payload size (${LAMBDA_RESPONSE_LIMIT_BYTES} bytes).`,
          stack: "",
        });
      }
      measure(result, `state ${name}`, "The result");
      return (result ?? null) as Json;
    };
  }
  for (const [name, spec] of prepared.waits) {
    handlers[name] = async (input) => {
      await nextTurn();
      if (violation)
        throw new TerminalStatesError(violation.error ?? "States.Runtime", violation.cause ?? "");
      const ms = waitMs(name, spec, input, clock.now());
      if (options.waits === "simulated") clock.advance(ms);
      else await new Promise((r) => setTimeout(r, options.shortenedWaitMs ?? 50));
      return input;
    };
  }

  // ---- history and payloads, from the event log
  let history = 0;
  const children = new Map<string, number>();
  const mapResults = new Map<string, number>();
  const count = (name: string | undefined, index: number | undefined, n: number) => {
    const child = name === undefined ? undefined : info.get(name)?.child;
    if (child !== undefined && index !== undefined) {
      const key = `${child}#${index}`;
      const total = (children.get(key) ?? 0) + n;
      children.set(key, total);
      if (total > HISTORY_EVENT_LIMIT) {
        fail(
          "States.Runtime",
          `The execution reached the maximum number of history events (${HISTORY_EVENT_LIMIT}). (child execution ${index} of distributed Map ${child})`,
        );
      }
      return;
    }
    history += n;
    if (history > HISTORY_EVENT_LIMIT) {
      fail(
        "States.Runtime",
        `The execution reached the maximum number of history events (${HISTORY_EVENT_LIMIT}).`,
      );
    }
  };
  const perState = (type: string): number => HISTORY_EVENTS[type as keyof typeof HISTORY_EVENTS] ?? 2;
  const observe = (e: RunEvent) => {
    try {
      switch (e.type) {
        case "ExecutionStarted":
          count(undefined, undefined, 1);
          measure(e.input, "the execution", "The input");
          break;
        case "StateEntered": {
          const s = info.get(e.state?.name ?? "");
          count(e.state?.name, e.index, perState(s?.type ?? "Pass"));
          if (s?.type === "Map") mapResults.set(e.state!.name, 0);
          break;
        }
        case "StateRetried":
          count(e.state?.name, e.index, HISTORY_EVENTS.TaskRetry);
          break;
        case "StateExited":
          measure(e.state?.output, `state ${e.state?.name}`, "The output");
          break;
        case "MapIterationStarted":
        case "MapIterationSucceeded":
        case "MapIterationFailed": {
          const parent = e.parentState?.name ?? "";
          if (info.get(parent)?.distributed) {
            // The child execution's own ExecutionStarted / end events.
            const key = `${parent}#${e.index}`;
            children.set(key, (children.get(key) ?? 0) + 1);
          } else if (e.type === "MapIterationStarted") {
            count(parent, undefined, HISTORY_EVENTS.MapIteration);
          }
          if (e.type === "MapIterationStarted") measure(e.input, `an item of Map ${parent}`, "The input");
          if (e.type === "MapIterationSucceeded") {
            const total = (mapResults.get(parent) ?? 0) + payloadBytes(e.output) + 1;
            mapResults.set(parent, total);
            if (total > largest.bytes) largest = { bytes: total, where: `the results of Map ${parent}` };
            if (total > PAYLOAD_LIMIT_BYTES) {
              throw fail(
                "States.DataLimitExceeded",
                `The results of Map state ${parent} exceed the ${PAYLOAD_LIMIT_BYTES}-byte (256 KiB) payload quota`,
              );
            }
          }
          break;
        }
        default:
          break;
      }
    } catch (error) {
      if (!(error instanceof TerminalStatesError)) throw error;
    }
    options.onEvent?.(e);
  };

  // ---- run
  const machine = stateMachineOf(prepared.definition);
  const execution = machine.run(options.input as Json, {
    overrides: {
      taskResourceLocalHandlers: handlers,
      retryIntervalOverrides: Object.fromEntries(
        [...prepared.taskTimeouts.keys()].map((s) => [s, options.retryIntervalMs ?? 20]),
      ),
    },
    ...(options.context ? { context: options.context } : {}),
  });
  abort = execution.abort;
  const timeout =
    prepared.executionTimeoutSeconds !== undefined
      ? clock.timer(clock.now() + prepared.executionTimeoutSeconds * 1000)
      : undefined;
  void timeout?.fired.then(() => {
    violation ??= { status: "TIMED_OUT" };
    abort();
  });
  const events = (async () => {
    for await (const e of execution.eventLogs) observe(e as unknown as RunEvent);
  })();
  let settled: { output: unknown } | { error: unknown };
  try {
    settled = { output: await execution.result };
  } catch (error) {
    settled = { error };
  } finally {
    timeout?.cancel();
  }
  await events;
  count(undefined, undefined, 1); // the execution's end event
  const base = { historyEvents: history, largestPayload: largest };
  if ("output" in settled && violation === undefined) {
    return { status: "SUCCEEDED", output: settled.output, ...base };
  }
  if (violation) {
    return {
      status: violation.status,
      ...(violation.error ? { error: violation.error } : {}),
      ...(violation.cause ? { cause: violation.cause } : {}),
      ...base,
    };
  }
  const error = "error" in settled ? settled.error : undefined;
  if (error instanceof ExecutionAbortedError) return { status: "ABORTED", ...base };
  if (error instanceof ExecutionError) {
    const cause = error.cause as { name?: string; message?: string } | undefined;
    return { status: "FAILED", error: cause?.name ?? "Error", cause: cause?.message ?? "", ...base };
  }
  throw error;
}
