/** `cgmirror backup`: one run of the consistency-group state machine, locally or in AWS. */
import { randomBytes } from "node:crypto";
import { Command } from "commander";
import type { ExecutionOutcome } from "#adapters/sfn-execution.ts";
import { causeMessage, Errors } from "#workflows/errors.ts";
import { TASK_NAMES } from "#workflows/tasks.ts";
import { ExitCode } from "../errors.ts";
import { formatBytes, printJson, UsageError } from "../output.ts";
import { applyAwsOptions, awsOptions, stateDirOf, stateDirOption } from "../state.ts";
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
 * - releaseFailed: the group IS committed, only releasing the lock failed (the next run takes it over);
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

/** The CLI's exit code for each outcome (the table in cli/errors.ts). */
export const BACKUP_EXIT_CODES: Readonly<Record<BackupOutcome, number>> = {
  committed: ExitCode.ok,
  skipped: ExitCode.ok,
  reverted: ExitCode.failed,
  revertFailed: ExitCode.failed,
  releaseFailed: ExitCode.releaseFailed,
  failed: ExitCode.failed,
  timedOut: ExitCode.timedOut,
  aborted: ExitCode.aborted,
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
  /** Of a committed run: what its generation changed and stored (from the manifest). */
  readonly changedBlocks?: number;
  readonly changedBytes?: number;
  readonly storedBytes?: number;
}

export function printOutcome(r: BackupResult): void {
  const why = `${r.error ?? "?"}: ${r.cause !== undefined ? causeMessage(r.cause) : "(no cause)"}`;
  switch (r.outcome) {
    case "committed":
      console.log(
        `committed: group ${r.group} generation ${r.generation} (${(r.durationMs / 1000).toFixed(1)} s` +
          (r.changedBlocks !== undefined
            ? `; ${r.changedBlocks} changed blocks, ${formatBytes(r.changedBytes ?? 0)} changed, ${formatBytes(r.storedBytes ?? 0)} stored)`
            : ")"),
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

/** Checks `--inject-failure TASK[:VOLUME]` against the task names and the config's volumes. */
export function checkInjectedFailure(
  spec: string,
  volumeIds: readonly string[],
): { task: (typeof TASK_NAMES)[number]; volumeId?: string } {
  const [task, volumeId, extra] = spec.split(":");
  if (extra !== undefined || !TASK_NAMES.includes(task as (typeof TASK_NAMES)[number])) {
    throw new UsageError(
      `--inject-failure takes TASK[:VOLUME] with TASK one of ${TASK_NAMES.join(", ")}; got "${spec}"`,
    );
  }
  if (volumeId !== undefined && !volumeIds.includes(volumeId)) {
    throw new UsageError(
      `--inject-failure ${spec}: ${volumeId || "(empty)"} is not a volume of the group; it has ${volumeIds.join(", ")}`,
    );
  }
  return { task: task as (typeof TASK_NAMES)[number], ...(volumeId ? { volumeId } : {}) };
}

export function backupCommand(): Command {
  return new Command("backup")
    .description("run one backup of a consistency group: committed, reverted, or skipped (lock held)")
    .requiredOption("--group <name>", "consistency group name (must match the config)")
    .requiredOption("--config <file>", "the group config")
    .option("--local", "run the state machine locally on the embedded stack (.cgmirror/)")
    .option(
      "--inject-failure <TASK[:VOLUME]>",
      `with --local: make a task fail (for one volume of the group), to see a revert; TASK is one of ${TASK_NAMES.join(", ")}. A run whose injection never fired (e.g. Transfer of a volume with no changed blocks) fails and says so`,
    )
    .option(
      "--state-machine-arn <arn>",
      "in AWS: the group's deployed state machine, output StateMachineArn<Group> (default: $CGM_STATE_MACHINE_ARN)",
    )
    .addOption(stateDirOption())
    .addOption(awsOptions()[1]!)
    .option("--json", "print {outcome, generation, ...} as JSON")
    .action(
      async (opts: {
        group: string;
        config: string;
        local?: boolean;
        injectFailure?: string;
        stateMachineArn?: string;
        stateDir?: string;
        profile?: string;
        json?: boolean;
      }) => {
        const config = await loadConfigFile(opts.config);
        if (config.group !== opts.group) {
          throw new UsageError(`--group ${opts.group} does not match the config's group "${config.group}"`);
        }
        const { progressWanted } = await import("../display.ts");
        const progress = progressWanted(opts.json);
        let result: BackupResult;
        if (opts.local) {
          const inject = opts.injectFailure
            ? checkInjectedFailure(
                opts.injectFailure,
                config.volumes.map((v) => v.id),
              )
            : undefined;
          const { localBackup } = await import("./backup-run.ts");
          result = await localBackup({
            config,
            stateDir: stateDirOf(opts),
            ...(inject ? { injectFailure: inject } : {}),
            progress,
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
          applyAwsOptions(opts);
          const { awsBackup } = await import("./backup-run.ts");
          result = await awsBackup({ config, stateMachineArn: arn, region, progress });
        }
        if (opts.json) printJson(result);
        else printOutcome(result);
        process.exitCode = BACKUP_EXIT_CODES[result.outcome];
      },
    );
}
