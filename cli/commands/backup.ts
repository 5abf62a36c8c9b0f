/** `cgmirror backup`: one run of the consistency-group state machine, locally or in AWS. */
import { randomBytes } from "node:crypto";
import { resolve } from "node:path";
import { S3Client } from "@aws-sdk/client-s3";
import { SFNClient } from "@aws-sdk/client-sfn";
import { Command, Option } from "commander";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { type ExecutionOutcome, runExecution } from "#adapters/sfn-execution.ts";
import type { GroupConfig } from "#core/group-config.ts";
import { createRepo, type Repo } from "#core/layout.ts";
import { type RunProgress, readRunProgress } from "#core/transfer-worker.ts";
import { causeMessage, Errors } from "#workflows/errors.ts";
import { localClients } from "../../local/clients.ts";
import { createLocalDeps, parseInjectedFailure, runLocalBackup } from "../../local/runner.ts";
import { attachOrStartLocalStack, defaultStateDir } from "../../local/stack.ts";
import type { VolumeSimulator } from "../../local/volumes/simulator.ts";
import { formatBytes, printJson, UsageError } from "../output.ts";
import { ProgressLine } from "../progress.ts";
import { loadConfigFile } from "./config.ts";

/** Execution names double as run ids: unique, sortable, and valid for Step Functions (≤ 80 chars). */
export function newExecutionName(group: string): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "");
  return `${group.slice(0, 40)}-${stamp}-${randomBytes(4).toString("hex")}`;
}

/**
 * How a backup run ended (docs/operations.md, "Outcomes and exit codes"):
 * - committed / skipped: success (another live run held the lock);
 * - reverted: the run failed and reverted, the previous group is current;
 * - revertFailed: the run failed and its revert did not finish (the next run's Recover finishes it);
 * - releaseFailed: the group IS committed, only releasing the lock failed (it expires by itself);
 * - failed: the execution failed without reverting: a Step Functions limit no Catch handles
 *   (States.DataLimitExceeded, States.Runtime) or a failure before the lock was taken;
 * - timedOut / aborted: the execution was stopped (run timeout, StopExecution) without reverting.
 * After failed, timedOut and aborted the next run takes the lock over at once (its holder is no
 * longer RUNNING) and its Recover finishes or reverts what this run wrote.
 */
export type BackupOutcome =
  | "committed"
  | "skipped"
  | "reverted"
  | "revertFailed"
  | "releaseFailed"
  | "failed"
  | "timedOut"
  | "aborted";

/** The CLI's exit code for each outcome; 2 is a usage or input error (cli/main.ts). */
export const BACKUP_EXIT_CODES: Readonly<Record<BackupOutcome, number>> = {
  committed: 0,
  skipped: 0,
  reverted: 1,
  revertFailed: 1,
  releaseFailed: 3,
  failed: 1,
  timedOut: 4,
  aborted: 5,
};

const STATE_MACHINE_ARN =
  /^arn:(aws[a-z-]*):states:([a-z]{2}(?:-[a-z]+)+-\d+):(\d{12}):stateMachine:([A-Za-z0-9_-]{1,80})$/;

/** The Region of a state machine ARN; the CLI calls Step Functions (and the bucket) there. */
export function regionOfStateMachineArn(arn: string): string {
  const m = STATE_MACHINE_ARN.exec(arn);
  if (!m) {
    throw new UsageError(
      `expected a state machine ARN like arn:aws:states:eu-west-1:123456789012:stateMachine:Name (the group's StateMachineArn<Group> output of cdk deploy), got ${JSON.stringify(arn)}`,
    );
  }
  return m[2] as string;
}

/** Errors that end an execution without any Catch (so without Revert). */
const UNCATCHABLE = new Set(["States.DataLimitExceeded", "States.Runtime"]);

/** Maps a finished execution of the deployed state machine to the backup's outcome. */
export function outcomeOfExecution(out: Pick<ExecutionOutcome, "status" | "output" | "error" | "cause">): {
  outcome: BackupOutcome;
  generation?: number;
} {
  if (out.status === "SUCCEEDED") {
    const o = out.output as { status?: string; generation?: number } | undefined;
    return {
      outcome: o?.status === "skipped" ? "skipped" : "committed",
      ...(typeof o?.generation === "number" ? { generation: o.generation } : {}),
    };
  }
  if (out.status === "TIMED_OUT") return { outcome: "timedOut" };
  if (out.status === "ABORTED") return { outcome: "aborted" };
  if (out.error === Errors.ReleaseLockFailed) {
    const g = /generation (\d+) of group/.exec(out.cause ?? "");
    return { outcome: "releaseFailed", ...(g ? { generation: Number(g[1]) } : {}) };
  }
  if (out.error === Errors.RevertFailed) return { outcome: "revertFailed" };
  if (out.error !== undefined && UNCATCHABLE.has(out.error)) return { outcome: "failed" };
  return { outcome: "reverted" };
}

export interface BackupResult {
  readonly outcome: BackupOutcome;
  readonly group: string;
  readonly generation?: number;
  readonly error?: string;
  readonly cause?: string;
  readonly execution: string;
  readonly durationMs: number;
}

/** On a terminal: polls the run's transfer progress objects and shows blocks, bytes and ETA. */
export function watchProgress(repo: Repo, runId: string, enabled: boolean): () => Promise<void> {
  if (!enabled) return async () => {};
  let line: ProgressLine | undefined; // created at the first report, so rate and ETA count from there
  let stopped = false;
  let last: RunProgress | undefined;
  const loop = (async () => {
    while (!stopped) {
      await new Promise((r) => setTimeout(r, 500));
      const p = await readRunProgress(repo, runId).catch(() => undefined);
      if (p && p.shards.length > 0) {
        last = p;
        line ??= new ProgressLine("transfer", true);
        line.update(p.blocksDone, p.blocksTotal, p.bytesDone);
      }
    }
  })();
  return async () => {
    stopped = true;
    await loop;
    if (line && last) line.done(`transfer: ${last.blocksDone} blocks read (${formatBytes(last.bytesDone)})`);
  };
}

/** With --local, the config's volumes must exist in the simulator: checked before anything is written. */
async function checkLocalVolumes(config: GroupConfig, sim: VolumeSimulator): Promise<void> {
  const have = new Map((await sim.list()).map((v) => [v.id, v]));
  const problems: string[] = [];
  for (const v of config.volumes) {
    const sv = have.get(v.id);
    if (!sv) problems.push(`volume ${v.id} does not exist in the local stack`);
    else if ((v.instanceId ?? undefined) !== (sv.instanceId ?? undefined)) {
      problems.push(
        `volume ${v.id} is attached to ${sv.instanceId ?? "no instance"}, the config says ${v.instanceId ?? "none"}`,
      );
    }
  }
  if (problems.length > 0) {
    throw new UsageError(
      `the config does not match the simulated volumes: ${problems.join("; ")}. ` +
        "List them with: npx cgmirror local volume list",
    );
  }
}

export async function localBackup(options: {
  config: GroupConfig;
  stateDir: string;
  injectFailure?: string;
  onState?: (state: string) => void;
  progress?: boolean;
}): Promise<BackupResult> {
  const inject = options.injectFailure ? parseInjectedFailure(options.injectFailure) : undefined;
  const stack = await attachOrStartLocalStack({ stateDir: options.stateDir });
  const clients = localClients(stack);
  const { simulator } = clients;
  const deps = createLocalDeps({ endpoints: stack, simulator });
  try {
    await checkLocalVolumes(options.config, simulator);
    // Locally the group's bucket is the local stack's.
    const config: GroupConfig = {
      ...options.config,
      target: { ...options.config.target, bucket: stack.bucket },
    };
    const executionName = newExecutionName(config.group);
    const repo = createRepo({
      store: deps.store(stack.bucket),
      prefix: config.target.prefix,
      group: config.group,
    });
    const stopProgress = watchProgress(repo, executionName, options.progress === true);
    const run = await runLocalBackup({
      config,
      deps,
      executionName,
      ...(inject ? { injectFailure: inject } : {}),
      ...(options.onState ? { onState: options.onState } : {}),
    }).finally(stopProgress);
    return {
      outcome: run.outcome,
      group: config.group,
      ...(run.generation !== undefined ? { generation: run.generation } : {}),
      ...(run.error ? { error: run.error } : {}),
      ...(run.cause ? { cause: run.cause } : {}),
      execution: run.executionName,
      durationMs: run.durationMs,
    };
  } finally {
    deps.close();
    clients.destroy();
    await stack.stop();
  }
}

export function printOutcome(r: BackupResult): void {
  const why = `${r.error ?? "?"}: ${r.cause !== undefined ? causeMessage(r.cause) : "(no cause)"}`;
  switch (r.outcome) {
    case "committed":
      console.log(
        `committed: group ${r.group} generation ${r.generation} (${(r.durationMs / 1000).toFixed(1)} s)`,
      );
      return;
    case "skipped":
      console.log(`skipped: another run of group ${r.group} holds the lock`);
      return;
    case "reverted":
      console.log(`reverted: group ${r.group} is unchanged; cause: ${why}`);
      return;
    case "revertFailed":
      console.log(
        `failed: the run failed and its revert did not finish; the previous group stays committed and the next run takes the lock over and its Recover finishes the revert; cause: ${why}`,
      );
      return;
    case "releaseFailed":
      console.log(
        `committed, but the lock release failed: group ${r.group} generation ${r.generation ?? "?"} IS committed; the next run takes the lock over (this execution has ended); cause: ${why}`,
      );
      return;
    case "failed":
      console.log(
        `failed: the execution of group ${r.group} stopped without reverting; HEAD names the last committed group, and the next run takes the lock over and its Recover reverts this run; cause: ${why}`,
      );
      return;
    case "timedOut":
    case "aborted":
      console.log(
        `${r.outcome === "timedOut" ? "timed out" : "aborted"}: execution ${r.execution} stopped without reverting; HEAD names the last committed group, and the next run takes the lock over and its Recover finishes or reverts this run`,
      );
      return;
  }
}

export function backupCommand(): Command {
  return new Command("backup")
    .description("run one backup of a consistency group: committed, reverted, or skipped (lock held)")
    .requiredOption("--group <name>", "consistency group name (must match the config)")
    .requiredOption("--config <file>", "the group config")
    .option("--local", "run the state machine locally on the embedded stack (.cgmirror/)")
    .option(
      "--inject-failure <TASK[:VOLUME]>",
      "with --local: make a task fail (for one volume), to see a revert",
    )
    .option(
      "--state-machine-arn <arn>",
      "in AWS: the group's deployed state machine, output StateMachineArn<Group> (default: $CGM_STATE_MACHINE_ARN)",
    )
    .addOption(new Option("--state-dir <dir>", "local state directory").hideHelp())
    .option("--json", "print {outcome, generation, ...} as JSON")
    .action(
      async (opts: {
        group: string;
        config: string;
        local?: boolean;
        injectFailure?: string;
        stateMachineArn?: string;
        stateDir?: string;
        json?: boolean;
      }) => {
        const config = await loadConfigFile(opts.config);
        if (config.group !== opts.group) {
          throw new UsageError(`--group ${opts.group} does not match the config's group "${config.group}"`);
        }
        let result: BackupResult;
        const tty = process.stdout.isTTY && !opts.json;
        if (opts.local) {
          result = await localBackup({
            config,
            stateDir: resolve(opts.stateDir ?? process.env.CGM_LOCAL_STATE_DIR ?? defaultStateDir()),
            ...(opts.injectFailure ? { injectFailure: opts.injectFailure } : {}),
            ...(tty ? { onState: (s: string) => process.stdout.write(`  ${s}\n`), progress: true } : {}),
          });
        } else {
          if (opts.injectFailure) throw new UsageError("--inject-failure works only with --local");
          const arn = opts.stateMachineArn ?? process.env.CGM_STATE_MACHINE_ARN;
          if (!arn) {
            throw new UsageError(
              "give --state-machine-arn (the group's StateMachineArn<Group> output of `cdk deploy`) or set CGM_STATE_MACHINE_ARN; or use --local",
            );
          }
          // The stack (state machine and bucket) lives in one Region: the ARN's.
          const region = regionOfStateMachineArn(arn);
          const sfn = new SFNClient({ region });
          const s3 = new S3Client({ region });
          const started = Date.now();
          const name = newExecutionName(config.group);
          const repo = createRepo({
            store: new S3ObjectStore({ client: s3, bucket: config.target.bucket }),
            prefix: config.target.prefix,
            group: config.group,
          });
          const stopProgress = watchProgress(repo, name, tty === true);
          try {
            const out = await runExecution(sfn, {
              stateMachineArn: arn,
              input: { config },
              name,
            }).finally(stopProgress);
            const { outcome, generation } = outcomeOfExecution(out);
            result = {
              outcome,
              group: config.group,
              ...(generation !== undefined ? { generation } : {}),
              ...(out.error ? { error: out.error } : {}),
              ...(out.cause ? { cause: out.cause } : {}),
              execution: out.executionArn,
              durationMs: Date.now() - started,
            };
          } finally {
            sfn.destroy();
            s3.destroy();
          }
        }
        if (opts.json) printJson(result);
        else printOutcome(result);
        process.exitCode = BACKUP_EXIT_CODES[result.outcome];
      },
    );
}
