/**
 * The local runner: executes the state machine that infra/ synthesizes (CgmirrorStack, read from the
 * synthesized template, CloudFormation tokens resolved) with aws-local-stepfunctions. Every Task state is
 * bound in-process to its real handler (lambdas/*.ts `makeHandler`) over local dependencies: the local
 * S3 server and EBS direct API emulator, and the volume simulator for snapshots and freezes. A Task the
 * runner cannot bind stops the run before it starts: nothing falls through to a real Lambda call.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { S3Client } from "@aws-sdk/client-s3";
import { ebsAdmin } from "@cgmirror/ebs-emulator/admin-client";
import { createEbsClient, EbsBlockSource } from "#adapters/ebs-source.ts";
import { EbsSnapshotWriter } from "#adapters/ebs-writer.ts";
import { usePrecomputedPayloadHash } from "#adapters/s3-payload-hash.ts";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { executionArnOf } from "#adapters/sfn-arns.ts";
import type { GroupConfig } from "#core/config/group-config.ts";
import type { ObjectStore } from "#core/ports/object-store.ts";
import type { RunStatusPort } from "#core/ports/run-status.ts";
import { HANDLER_MAKERS } from "#lambdas/makers.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import type { AslDefinition, CfnTemplate } from "#workflows/definition.ts";
import { Errors } from "#workflows/errors.ts";
import { findLocalIncompatibilities } from "#workflows/local-compat.ts";
import { TASK_NAMES, TASKS, type TaskName } from "#workflows/tasks.ts";
import { type RunEvent, runWithAwsLimits } from "./aws-limits.ts";
import { cachedDefinition, definitionShape } from "./definition-cache.ts";
import { SimulatedClock } from "./sim-clock.ts";
import { emulatorSnapshotCatalog } from "./snapshot-catalog.ts";
import type { LocalEndpoints } from "./stack.ts";
import { LocalFreezePort, LocalSnapshotPort } from "./volumes/ports.ts";
import type { VolumeSimulator } from "./volumes/simulator.ts";

export class RunnerError extends Error {
  override readonly name = "RunnerError";
}

type Handler = (event: unknown) => Promise<unknown>;

const definitions = new Map<string, AslDefinition>();

/**
 * The definition of the state machine CgmirrorStack deploys for this group: the stack is synthesized
 * (asset bundling skipped, nothing else changed, into a temporary directory removed afterwards) and the
 * definition read from its template. Cached in memory and on disk (local/definition-cache.ts, keyed by
 * the config and the code that shapes the definition), so a local backup synthesizes only after a change.
 */
export async function synthesizedDefinition(config: GroupConfig): Promise<AslDefinition> {
  const key = JSON.stringify(definitionShape(config));
  let def = definitions.get(key);
  if (!def) {
    def = (await cachedDefinition(config, () => synthesize(config))).definition;
    const findings = findLocalIncompatibilities(def);
    if (findings.length > 0) {
      throw new RunnerError(
        `the synthesized definition uses constructs the local interpreter cannot run: ${findings
          .map((f) => `${f.where}: ${f.problem}`)
          .join("; ")}`,
      );
    }
    definitions.set(key, def);
  }
  return def;
}

/** Synthesizes CgmirrorStack for this one group and reads its workflow's definition (no cache). */
export async function synthesize(config: GroupConfig): Promise<AslDefinition> {
  const [{ App }, { CgmirrorStack }, { definitionFromTemplate }] = await Promise.all([
    import("aws-cdk-lib"),
    import("#infra/stack.ts"),
    import("#workflows/definition.ts"),
  ]);
  const outdir = await mkdtemp(join(tmpdir(), "cgmirror-local-synth-"));
  try {
    // Only the workflow definitions are read: no bundling, and none of the template validation `cdk
    // synth` runs (test/unit/infra-*.test.ts check the deployable template; here it cost ≈ 3–8 CPU-s).
    const app = new App({
      outdir,
      builtinCloudFormationValidation: false,
      context: { "aws:cdk:bundling-stacks": [] },
    });
    const stack = new CgmirrorStack(app, "CgmirrorLocal", { groups: [config] });
    const template = app.synth().getStackByName(stack.stackName).template as CfnTemplate;
    return definitionFromTemplate(template);
  } finally {
    await rm(outdir, { recursive: true, force: true });
  }
}

/** Every Task state of a definition, Map item processors included. */
export function taskStates(def: { States: Record<string, Record<string, unknown>> }): string[] {
  const out: string[] = [];
  for (const [name, state] of Object.entries(def.States)) {
    if (state.Type === "Task") out.push(name);
    const processor = (state.ItemProcessor ?? state.Iterator) as
      | { States: Record<string, Record<string, unknown>> }
      | undefined;
    if (processor?.States) out.push(...taskStates(processor));
    if (Array.isArray(state.Branches)) {
      for (const b of state.Branches as { States: Record<string, Record<string, unknown>> }[]) {
        out.push(...taskStates(b));
      }
    }
  }
  return out;
}

/** The state machine of a group in a local run: what `$$.StateMachine.Id` is there. */
export function localStateMachineArn(group: string): string {
  // The local definition's account and Region (workflows/definition.ts), not imported: it loads aws-cdk-lib.
  return `arn:aws:states:us-east-1:000000000000:stateMachine:cgmirror-${group}`;
}

type ExecutionStatus = "RUNNING" | "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "ABORTED";

/** The executions this process runs or ran, by execution ARN: all that the local run status knows. */
const localExecutions = new Map<string, ExecutionStatus>();

/**
 * The run status port of local runs: an execution this process runs is `running`, one it ran has
 * `ended`; any other run id (another process, the CLI's repair) is `unknown`, so its lock keeps its
 * lease, as for an execution that Step Functions does not know.
 */
export function localRunStatus(stateMachineArn: string): RunStatusPort {
  return {
    async runState(runId) {
      const arn = executionArnOf(stateMachineArn, runId);
      const status = arn === undefined ? undefined : localExecutions.get(arn);
      if (status === undefined) return "unknown";
      return status === "RUNNING" ? "running" : "ended";
    },
  };
}

export interface LocalDepsOptions {
  readonly endpoints: LocalEndpoints;
  readonly simulator: VolumeSimulator;
  /** Collects the handlers' log lines (quiet by default). */
  readonly log?: (level: "info" | "warn" | "error", message: string, extra?: Record<string, unknown>) => void;
}

export interface LocalDeps extends TaskDeps {
  readonly metricsRecorded: { group: string; name: string; value: number }[];
  close(): void;
}

/** TaskDeps over the local stack. */
export function createLocalDeps(options: LocalDepsOptions): LocalDeps {
  const e = options.endpoints;
  const credentials = { accessKeyId: e.accessKeyId, secretAccessKey: e.secretAccessKey };
  const s3 = usePrecomputedPayloadHash(
    new S3Client({ endpoint: e.s3Endpoint, region: e.region, forcePathStyle: true, credentials }),
  );
  const ebs = createEbsClient({ endpoint: e.ebsEndpoint, region: e.region, credentials });
  const source = new EbsBlockSource(ebs);
  const snapshots = new LocalSnapshotPort({ simulator: options.simulator, admin: ebsAdmin(e.ebsEndpoint) });
  const freeze = new LocalFreezePort({ simulator: options.simulator });
  const snapshotWriter = new EbsSnapshotWriter({
    client: ebs,
    catalog: emulatorSnapshotCatalog(ebsAdmin(e.ebsEndpoint)),
  });
  const stores = new Map<string, ObjectStore>();
  const log = options.log ?? (() => {});
  const metricsRecorded: { group: string; name: string; value: number }[] = [];
  return {
    store(bucket) {
      let store = stores.get(bucket);
      if (!store) {
        store = new S3ObjectStore({ client: s3, bucket });
        stores.set(bucket, store);
      }
      return store;
    },
    blockSource: () => source,
    snapshots: () => snapshots,
    snapshotWriter: () => snapshotWriter,
    freeze: () => freeze,
    runStatus: localRunStatus,
    clock: { now: () => Date.now() },
    // Local runs are short: report progress every second so `cgmirror backup` can show it.
    transferOptions: { progressIntervalMs: 1000 },
    log: {
      info: (m, x) => log("info", m, x),
      warn: (m, x) => log("warn", m, x),
      error: (m, x) => log("error", m, x),
    },
    metrics: {
      add: (group, name, _unit, value) => metricsRecorded.push({ group, name, value }),
      flush: () => {},
    },
    metricsRecorded,
    close() {
      s3.destroy();
      ebs.destroy();
    },
  };
}

/** A failure to inject: the named task fails (for one volume's items only, when `volumeId` is given). */
export interface InjectedFailure {
  readonly task: TaskName;
  readonly volumeId?: string;
}

/** The error an injected failure raises: the contract name that task would fail with for real. */
export class InjectedFailureError extends Error {
  override readonly name: string;
  constructor(task: TaskName, message: string) {
    super(message);
    this.name =
      task === "Transfer"
        ? Errors.TransferFailed
        : task === "Prepare"
          ? Errors.PrepareFailed
          : task === "Snapshot" || task === "CheckSnapshots"
            ? Errors.SnapshotFailed
            : Errors.Internal;
  }
}

/** Parses `TASK:VOLUME` or `TASK` (as given to `cgmirror backup --inject-failure`). */
export function parseInjectedFailure(spec: string): InjectedFailure {
  const [task, volumeId] = spec.split(":");
  if (!TASK_NAMES.includes(task as TaskName)) {
    throw new RunnerError(
      `--inject-failure takes TASK[:VOLUME] with TASK one of ${TASK_NAMES.join(", ")}, got "${spec}"`,
    );
  }
  return { task: task as TaskName, ...(volumeId ? { volumeId } : {}) };
}

function volumeOf(event: unknown): string | undefined {
  const e = event as { volumeId?: unknown; shard?: { volumeId?: unknown }; volume?: { volumeId?: unknown } };
  const v = e?.volumeId ?? e?.shard?.volumeId ?? e?.volume?.volumeId;
  return typeof v === "string" ? v : undefined;
}

export interface LocalRunOptions {
  readonly config: GroupConfig;
  readonly deps: TaskDeps;
  /** @default a new UUID-based execution name */
  readonly executionName?: string;
  readonly injectFailure?: InjectedFailure;
  /** Wraps every bound handler (tests use it to crash or count calls). */
  readonly wrap?: (task: TaskName, state: string, fn: Handler) => Handler;
  /** Called with the name of every state entered. */
  readonly onState?: (state: string) => void;
  /**
   * The run's clock (local/sim-clock.ts): `scale` simulated ms per real ms (a "15-minute" Lambda
   * timeout trips after 900 / scale real seconds), and how Wait states pass: `shortened` (a brief real
   * pause, the clock does not move: the local stack's snapshots complete in real time) or `simulated`
   * (the clock jumps by the wait). Handlers get this clock as `deps.clock`, on top of the deps' own.
   * @default { scale: 1, waits: "shortened" }
   */
  readonly time?: {
    readonly scale?: number;
    readonly waits?: "shortened" | "simulated";
    /**
     * Lambda timeouts (seconds, on the run's clock) that replace workflows/tasks.ts's for these tasks.
     * A test that compresses time to study one task's deadline (the scale test: Transfer's 15
     * minutes) gives the other tasks room, so a loaded machine cannot time them out instead.
     */
    readonly lambdaTimeoutSeconds?: Partial<Record<TaskName, number>>;
  };
  /**
   * The clock itself, when the caller needs it too (a test's slow snapshots, several runs in a row on
   * one timeline); `time.scale` is then the clock's.
   * @default a new SimulatedClock over `deps.clock`
   */
  readonly clock?: SimulatedClock;
}

/** How a local run ended; the same outcomes as `cgmirror backup` (cli/commands/backup.ts). */
export type LocalRunOutcome =
  | "committed"
  | "skipped"
  | "reverted"
  | "revertFailed"
  | "releaseFailed"
  | "failed"
  | "timedOut"
  | "aborted";

export interface LocalRunResult {
  /**
   * `releaseFailed`: the group IS committed, only the lock release failed (ReleaseLockFailedError);
   * `revertFailed`: the run failed and its revert did not finish (RevertFailedError; the next run's
   * Recover finishes it); `reverted`: the run failed and reverted; `failed`: the execution failed
   * without reaching Revert (a Step Functions limit such as States.DataLimitExceeded, or a failure
   * before the lock was taken); `timedOut`: the state machine's timeout stopped it.
   */
  readonly outcome: LocalRunOutcome;
  readonly executionName: string;
  readonly generation?: number;
  /** The error that sent the run to Revert (or that failed the execution). */
  readonly error?: string;
  readonly cause?: string;
  readonly output?: unknown;
  readonly durationMs: number;
  /** History events of the execution, estimated as AWS records them (local/aws-limits.ts). */
  readonly historyEvents: number;
  /** The largest state payload of the run, in bytes, and where. */
  readonly largestPayload: { readonly bytes: number; readonly where: string };
}

/**
 * The deps of one invocation, asked for when it starts (defineTask does so first): with the Lambda
 * timeout the runner enforces, `remainingMs` counts down from it on `deps.clock`, as Lambda's
 * `getRemainingTimeInMillis` does. Deps that bring their own `remainingMs` keep it.
 */
export function invocationDeps(deps: TaskDeps, timeoutSeconds: number | undefined): TaskDeps {
  if (timeoutSeconds === undefined || deps.remainingMs) return deps;
  const deadline = deps.clock.now() + timeoutSeconds * 1000;
  return { ...deps, remainingMs: () => deadline - deps.clock.now() };
}

/** Binds every Task state of `def` to a handler; throws RunnerError naming any state it cannot bind. */
export function bindHandlers(
  def: AslDefinition,
  deps: TaskDeps,
  options: Pick<LocalRunOptions, "injectFailure" | "wrap"> & {
    /**
     * The Lambda timeout (seconds on `deps.clock`) the runner enforces per state: each invocation's
     * `deps.remainingMs` counts down from it, as Lambda's `getRemainingTimeInMillis` does.
     */
    readonly lambdaTimeoutSeconds?: ReadonlyMap<string, number>;
  } = {},
): Record<string, Handler> {
  const byState = new Map<string, TaskName>();
  for (const task of TASK_NAMES) for (const state of TASKS[task].states) byState.set(state, task);
  const unbound = taskStates(def).filter((s) => !byState.has(s));
  if (unbound.length > 0) {
    throw new RunnerError(
      `no local handler for Task state(s) ${unbound.join(", ")}: they would call a real Lambda function. ` +
        "Add them to workflows/tasks.ts",
    );
  }
  const handlers: Record<string, Handler> = {};
  for (const state of taskStates(def)) {
    const task = byState.get(state)!;
    const timeout = options.lambdaTimeoutSeconds?.get(state);
    let fn: Handler = HANDLER_MAKERS[task](() => invocationDeps(deps, timeout));
    const inject = options.injectFailure;
    if (inject && inject.task === task) {
      const real = fn;
      fn = async (event) => {
        if (inject.volumeId === undefined || volumeOf(event) === inject.volumeId) {
          throw new InjectedFailureError(
            task,
            `injected failure of ${task}${inject.volumeId ? ` for ${inject.volumeId}` : ""} (--inject-failure)`,
          );
        }
        return real(event);
      };
    }
    if (options.wrap) fn = options.wrap(task, state, fn);
    handlers[state] = fn;
  }
  return handlers;
}

/** The Task state names of the definition, each with its task's Lambda timeout (workflows/tasks.ts). */
function lambdaTimeouts(
  def: AslDefinition,
  overrides: Partial<Record<TaskName, number>> = {},
): Map<string, number> {
  const out = new Map<string, number>();
  for (const task of TASK_NAMES)
    for (const state of TASKS[task].states) out.set(state, overrides[task] ?? TASKS[task].timeoutSeconds);
  return new Map(taskStates(def).map((s) => [s, out.get(s)!]));
}

/** Runs one backup of the group through the synthesized state machine, locally, under AWS's limits. */
export async function runLocalBackup(options: LocalRunOptions): Promise<LocalRunResult> {
  const def = await synthesizedDefinition(options.config);
  const clock =
    options.clock ?? new SimulatedClock({ base: options.deps.clock, scale: options.time?.scale ?? 1 });
  const deps: TaskDeps = { ...options.deps, clock };
  const timeouts = lambdaTimeouts(def, options.time?.lambdaTimeoutSeconds);
  const handlers = bindHandlers(def, deps, { ...options, lambdaTimeoutSeconds: timeouts });
  const overridden = new Set(
    [...timeouts.keys()].filter((state) =>
      TASK_NAMES.some(
        (t) => options.time?.lambdaTimeoutSeconds?.[t] !== undefined && TASKS[t].states.includes(state),
      ),
    ),
  );
  const executionName = options.executionName ?? `local-${randomUUID()}`;
  const input = { config: options.config };
  const started = Date.now();
  let reverted = false;
  const stateMachineArn = localStateMachineArn(options.config.group);
  const executionArn = executionArnOf(stateMachineArn, executionName);
  if (!executionArn) throw new RunnerError(`${JSON.stringify(executionName)} cannot be an execution name`);
  localExecutions.set(executionArn, "RUNNING");
  let status: ExecutionStatus = "FAILED";
  const run = await runWithAwsLimits({
    definition: def,
    input,
    tasks: Object.fromEntries(
      Object.entries(handlers).map(([state, handler]) => [
        state,
        {
          handler,
          lambdaTimeoutSeconds: timeouts.get(state)!,
          // A task given more room than AWS's (time.lambdaTimeoutSeconds) gets it at the state too.
          ...(overridden.has(state) ? { stateTimeoutSeconds: timeouts.get(state)! + 60 } : {}),
        },
      ]),
    ),
    clock,
    waits: options.time?.waits ?? "shortened",
    context: {
      Execution: { Name: executionName, Input: input, StartTime: new Date(clock.now()).toISOString() },
      StateMachine: { Id: stateMachineArn, Name: `cgmirror-${options.config.group}` },
    },
    onEvent: (e: RunEvent) => {
      if (e.type !== "StateEntered" || !e.state?.name) return;
      if (e.state.name === "Revert") reverted = true;
      options.onState?.(e.state.name);
    },
  })
    .then((r) => {
      status = r.status;
      return r;
    })
    .finally(() => localExecutions.set(executionArn, status));
  const base = {
    executionName,
    durationMs: Date.now() - started,
    historyEvents: run.historyEvents,
    largestPayload: run.largestPayload,
  };
  if (run.status === "SUCCEEDED") {
    const output = run.output as { status?: string; generation?: number } | undefined;
    return {
      outcome: output?.status === "skipped" ? "skipped" : "committed",
      ...(typeof output?.generation === "number" ? { generation: output.generation } : {}),
      output,
      ...base,
    };
  }
  const outcome: LocalRunOutcome =
    run.status === "TIMED_OUT"
      ? "timedOut"
      : run.status === "ABORTED"
        ? "aborted"
        : run.error === Errors.ReleaseLockFailed
          ? "releaseFailed"
          : run.error === Errors.RevertFailed
            ? "revertFailed"
            : reverted
              ? "reverted"
              : "failed";
  return {
    outcome,
    ...(run.error ? { error: run.error } : {}),
    ...(run.cause !== undefined ? { cause: run.cause } : {}),
    ...base,
  };
}
