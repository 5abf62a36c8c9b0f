/** `cgmirror status`, `restore`, `verify`, `repair`: commands over a group's repository (definitions only). */
import { Command } from "commander";
import { UsageError } from "../output.ts";
import { parseGeneration, parsePositiveInt } from "../parse.ts";
import { awsOptions, stateDirOption } from "../state.ts";

export interface RepoOptions {
  readonly group?: string;
  readonly config?: string;
  readonly bucket?: string;
  readonly prefix?: string;
  readonly local?: boolean;
  readonly stateDir?: string;
  readonly region?: string;
  readonly profile?: string;
  readonly json?: boolean;
}

/** The options every repository command takes: which group, where its repository is, output. */
export function repoOptions(cmd: Command): Command {
  const [region, profile] = awsOptions();
  return cmd
    .option("--group <name>", "consistency group name (default: the config's)")
    .option("--config <file>", "group config (names the bucket and prefix)")
    .option(
      "--bucket <name>",
      "bucket (default: the config's, the local stack's with --local, or $CGM_BUCKET)",
    )
    .option("--prefix <prefix>", "repository key prefix (default: the config's, else groups/<group>)")
    .option("--local", "use the embedded local stack (.cgmirror/)")
    .addOption(stateDirOption())
    .addOption(region!)
    .addOption(profile!)
    .option("--json", "print JSON");
}

const run = () => import("./repo-run.ts");

export function statusCommand(): Command {
  return repoOptions(
    new Command("status").description(
      "the committed generation, the generations, the lock, the RPO age and the newest runs",
    ),
  )
    .option("--limit <n>", "show at most the newest n generations", parsePositiveInt, 20)
    .action(async (opts) => (await run()).statusAction(opts));
}

export function restoreCommand(): Command {
  return repoOptions(
    new Command("restore").description(
      "restore a generation to raw image files (one per volume, named by volume id) or into new EBS snapshots (--to-snapshots), every block verified",
    ),
  )
    .option("--generation <n>", "generation to restore (default: HEAD)", parseGeneration)
    .option("--to-dir <dir>", "directory for the images")
    .option("--to-snapshots", "write one new EBS snapshot per volume (all or nothing)")
    .option(
      "--parent-snapshot <vol=snap>",
      "with --to-snapshots: incremental on this snapshot of the volume (repeatable)",
      (v: string, acc: string[] = []) => [...acc, v],
    )
    .option("--full", "with --to-snapshots: write every block, never on a parent snapshot")
    .option(
      "--state-machine-arn <arn>",
      "with --to-snapshots and --config: run the restore in AWS as the deployed restore state machine, output RestoreStateMachineArn (default: $CGM_RESTORE_STATE_MACHINE_ARN)",
    )
    .option("--volume <vol-id>", "restore only this volume")
    .option("--force", "overwrite existing image files")
    .option(
      "--inject-failure <STATE[:VOLUME]>",
      "with --local --to-snapshots: make a task of the restore state machine fail (RestoreVolume for one volume, PrepareRestore or FinalizeRestore), to see the all-or-nothing cleanup",
    )
    .action(async (opts) => {
      if (opts.injectFailure && !opts.toSnapshots)
        throw new UsageError("--inject-failure works only with --local --to-snapshots");
      if (opts.toSnapshots) return (await import("./restore-snapshots.ts")).restoreSnapshotsAction(opts);
      return (await run()).restoreAction(opts);
    });
}

export function verifyCommand(): Command {
  return repoOptions(
    new Command("verify").description(
      "check a generation: every reference resolves and agrees with its segment; with --read-data, re-hash the data",
    ),
  )
    .option("--generation <n>", "generation to verify (default: HEAD)", parseGeneration)
    .option(
      "--read-data [fraction]",
      "also re-read and re-hash block data: all of it, or a fraction of the segments (0-1)",
    )
    .action(async (opts) => (await run()).verifyAction(opts));
}

export function repairCommand(): Command {
  return repoOptions(
    new Command("repair").description(
      "explain why runs stop on this repository (HEAD missing, deleted or rolled back) and, with confirmation, point HEAD at the newest committed generation that verifies",
    ),
  )
    .option("--yes", "apply without asking")
    .option("--read-data", "also re-hash every block of each candidate (slower, stronger)")
    .action(async (opts) => (await run()).repairAction(opts));
}
