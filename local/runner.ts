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
import { ExecutionError, StateMachine } from "aws-local-stepfunctions";
import { createEbsClient, EbsBlockSource } from "#adapters/ebs-source.ts";
import { usePrecomputedPayloadHash } from "#adapters/s3-payload-hash.ts";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import type { GroupConfig } from "#core/group-config.ts";
import type { ObjectStore } from "#core/ports/object-store.ts";
import { HANDLER_MAKERS } from "#lambdas/makers.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import type { AslDefinition, CfnTemplate } from "#workflows/definition.ts";
import { Errors } from "#workflows/errors.ts";
import { findLocalIncompatibilities } from "#workflows/local-compat.ts";
import { TASK_NAMES, TASKS, type TaskName } from "#workflows/tasks.ts";
import { cachedDefinition } from "./definition-cache.ts";
import { ebsAdmin } from "./ebs-emulator/admin-client.ts";
import type { LocalEndpoints } from "./stack.ts";
import { LocalFreezePort, LocalSnapshotPort } from "./volumes/ports.ts";
import type { VolumeSimulator } from "./volumes/simulator.ts";

export class RunnerError extends Error {
  override readonly name = "RunnerError";
}

type Json = Parameters<StateMachine["run"]>[0];
type Handler = (event: unknown) => Promise<unknown>;

const definitions = new Map<string, AslDefinition>();

/**
 * The definition of the state machine CgmirrorStack deploys for this group: the stack is synthesized
 * (asset bundling skipped, nothing else changed, into a temporary directory removed afterwards) and the
 * definition read from its template. Cached in memory and on disk (local/definition-cache.ts, keyed by
 * the config and the code that shapes the definition), so a local backup synthesizes only after a change.
 */
export async function synthesizedDefinition(config: GroupConfig): Promise<AslDefinition> {
  const key = JSON.stringify(config);
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

async function synthesize(config: GroupConfig): Promise<AslDefinition> {
  const [{ App }, { CgmirrorStack }, { definitionFromTemplate }] = await Promise.all([
    import("aws-cdk-lib"),
    import("#infra/stack.ts"),
    import("#workflows/definition.ts"),
  ]);
  const outdir = await mkdtemp(join(tmpdir(), "cgmirror-local-synth-"));
  try {
    const app = new App({ outdir, context: { "aws:cdk:bundling-stacks": [] } });
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

/** Wait states of a definition (their waits are shortened locally). */
function waitStates(def: { States: Record<string, Record<string, unknown>> }): string[] {
  return Object.entries(def.States)
    .filter(([, s]) => s.Type === "Wait")
    .map(([n]) => n);
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
    freeze: () => freeze,
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
}

export interface LocalRunResult {
  /**
   * `releaseFailed`: the group IS committed, only the lock release failed (ReleaseLockFailedError);
   * `revertFailed`: the run failed and its revert did not finish (RevertFailedError; the next run's
   * Recover finishes it); `reverted`: any other failure (the run reverted).
   */
  readonly outcome: "committed" | "skipped" | "reverted" | "releaseFailed" | "revertFailed";
  readonly executionName: string;
  readonly generation?: number;
  /** The error that sent the run to Revert. */
  readonly error?: string;
  readonly cause?: string;
  readonly output?: unknown;
  readonly durationMs: number;
}

/** Binds every Task state of `def` to a handler; throws RunnerError naming any state it cannot bind. */
export function bindHandlers(
  def: AslDefinition,
  deps: TaskDeps,
  options: Pick<LocalRunOptions, "injectFailure" | "wrap"> = {},
): Record<string, (input: Json) => Promise<Json>> {
  const byState = new Map<string, TaskName>();
  for (const task of TASK_NAMES) for (const state of TASKS[task].states) byState.set(state, task);
  const unbound = taskStates(def).filter((s) => !byState.has(s));
  if (unbound.length > 0) {
    throw new RunnerError(
      `no local handler for Task state(s) ${unbound.join(", ")}: they would call a real Lambda function. ` +
        "Add them to workflows/tasks.ts",
    );
  }
  const handlers: Record<string, (input: Json) => Promise<Json>> = {};
  for (const state of taskStates(def)) {
    const task = byState.get(state)!;
    let fn: Handler = HANDLER_MAKERS[task](() => deps);
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
    const bound = fn;
    handlers[state] = async (input) => (await bound(input)) as Json;
  }
  return handlers;
}

/** Runs one backup of the group through the synthesized state machine, locally. */
export async function runLocalBackup(options: LocalRunOptions): Promise<LocalRunResult> {
  const def = await synthesizedDefinition(options.config);
  const handlers = bindHandlers(def, options.deps, options);
  const executionName = options.executionName ?? `local-${randomUUID()}`;
  const input = { config: options.config } as unknown as Json;
  const started = Date.now();
  const execution = new StateMachine(def as never).run(input, {
    overrides: {
      taskResourceLocalHandlers: handlers,
      // Waits are shortened: snapshot polling goes as fast as the emulator completes snapshots.
      waitTimeOverrides: Object.fromEntries(waitStates(def).map((s) => [s, 50])),
      retryIntervalOverrides: Object.fromEntries(taskStates(def).map((s) => [s, 20])),
    },
    context: { Execution: { Name: executionName, Input: input, StartTime: new Date().toISOString() } },
  });
  const watcher = options.onState
    ? (async () => {
        for await (const ev of execution.eventLogs) {
          const e = ev as { type?: string; state?: { name?: string } };
          if (e.type === "StateEntered" && e.state?.name) options.onState?.(e.state.name);
        }
      })().catch(() => {})
    : undefined;
  try {
    const output = (await execution.result) as { status?: string; generation?: number };
    await watcher;
    return {
      outcome: output?.status === "skipped" ? "skipped" : "committed",
      executionName,
      ...(typeof output?.generation === "number" ? { generation: output.generation } : {}),
      output,
      durationMs: Date.now() - started,
    };
  } catch (err) {
    await watcher;
    if (err instanceof ExecutionError) {
      const cause = err.cause as { name?: string; message?: string } | undefined;
      return {
        outcome:
          cause?.name === Errors.ReleaseLockFailed
            ? "releaseFailed"
            : cause?.name === Errors.RevertFailed
              ? "revertFailed"
              : "reverted",
        executionName,
        error: cause?.name ?? "Error",
        cause: cause?.message ?? String(err.message),
        durationMs: Date.now() - started,
      };
    }
    throw err;
  }
}
