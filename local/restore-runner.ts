/**
 * Runs the restore workflow (workflows/restore.ts, the construct the stack deploys) locally under
 * AWS's limits (local/aws-limits.ts), every Task state bound in-process to the real RestoreVolume
 * handler over local dependencies (the EBS direct API emulator and the local S3 server).
 */
import { randomUUID } from "node:crypto";
import type { RestoreWorkflowInputT } from "#lambdas/contracts.ts";
import { LIFECYCLE_HANDLER_MAKERS } from "#lambdas/makers.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import type { AslDefinition } from "#workflows/definition.ts";
import { LIFECYCLE_TASKS } from "#workflows/lifecycle-tasks.ts";
import { type LimitedRunResult, runWithAwsLimits } from "./aws-limits.ts";
import { cachedDefinitionByKey, restoreDefinitionCacheKey } from "./definition-cache.ts";
import { RunnerError, taskStates } from "./runner.ts";
import { SimulatedClock } from "./sim-clock.ts";

type Handler = (event: unknown) => Promise<unknown>;

let definition: Promise<AslDefinition> | undefined;

/**
 * The restore workflow's definition: from the disk cache (local/definition-cache.ts, keyed by the code
 * that shapes it), else synthesized and stored; once per process.
 */
export function restoreWorkflowDefinition(): Promise<AslDefinition> {
  definition ??= cachedDefinitionByKey(restoreDefinitionCacheKey(), () =>
    import("#workflows/definition.ts").then((m) => m.restoreDefinition()),
  ).then((r) => r.definition);
  return definition;
}

export interface LocalRestoreOptions {
  readonly input: RestoreWorkflowInputT;
  readonly deps: TaskDeps;
  /** Wraps the handler of every Task state (tests inject failures or count calls). */
  readonly wrap?: (state: string, fn: Handler) => Handler;
  readonly onState?: (state: string) => void;
  /** @default a SimulatedClock at scale 1 over `deps.clock` */
  readonly clock?: SimulatedClock;
}

export interface LocalRestoreResult extends LimitedRunResult {
  readonly executionName: string;
  /** Task invocations by state name. */
  readonly invocations: Readonly<Record<string, number>>;
}

/** One execution of the restore workflow, named by the restore id (as the CLI names it in AWS). */
export async function runLocalRestore(options: LocalRestoreOptions): Promise<LocalRestoreResult> {
  const def = await restoreWorkflowDefinition();
  const clock = options.clock ?? new SimulatedClock({ base: options.deps.clock, scale: 1 });
  const deps: TaskDeps = { ...options.deps, clock };
  const spec = LIFECYCLE_TASKS.RestoreVolume;
  const unbound = taskStates(def).filter((s) => !spec.states.includes(s));
  if (unbound.length > 0) {
    throw new RunnerError(
      `no local handler for Task state(s) ${unbound.join(", ")} of the restore workflow; add them to workflows/lifecycle-tasks.ts`,
    );
  }
  const invocations: Record<string, number> = {};
  const tasks = Object.fromEntries(
    taskStates(def).map((state) => {
      let fn: Handler = LIFECYCLE_HANDLER_MAKERS.RestoreVolume(() => deps);
      if (options.wrap) fn = options.wrap(state, fn);
      const counted: Handler = (event) => {
        invocations[state] = (invocations[state] ?? 0) + 1;
        return fn(event);
      };
      return [state, { handler: counted, lambdaTimeoutSeconds: spec.timeoutSeconds }];
    }),
  );
  const executionName = options.input.restoreId || `restore-${randomUUID()}`;
  const run = await runWithAwsLimits({
    definition: def,
    input: options.input,
    tasks,
    clock,
    context: {
      Execution: {
        Name: executionName,
        Input: options.input,
        StartTime: new Date(clock.now()).toISOString(),
      },
      StateMachine: {
        Id: "arn:aws:states:us-east-1:000000000000:stateMachine:cgmirror-restore",
        Name: "cgmirror-restore",
      },
    },
    onEvent: (e) => {
      if (e.type === "StateEntered" && e.state?.name) options.onState?.(e.state.name);
    },
  });
  return { ...run, executionName, invocations };
}
