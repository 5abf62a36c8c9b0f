/**
 * `cgmirror restore --to-snapshots`: a generation into one new EBS snapshot per volume, all or nothing
 * (core/restore/restore-snapshots.ts). With `--local` the restore state machine runs through the local
 * runner (restore-local.ts); with `--state-machine-arn` in AWS (restore-sfn.ts); otherwise in this
 * process, against `$CGM_EBS_ENDPOINT` (an EBS emulator; its admin API stands in for EC2's
 * DescribeSnapshots/DeleteSnapshot) or AWS's EBS direct APIs and EC2.
 */
import { EC2Client } from "@aws-sdk/client-ec2";
import { ebsAdmin } from "@cgmirror/ebs-emulator/admin-client";
import { createEbsClient } from "#adapters/ebs-source.ts";
import { EbsSnapshotWriter, ec2SnapshotCatalog, type SnapshotCatalog } from "#adapters/ebs-writer.ts";
import type { Repo } from "#core/format/layout.ts";
import { restoreGroupToSnapshots } from "#core/restore/restore-snapshots.ts";
import { emulatorSnapshotCatalog } from "../../local/snapshot-catalog.ts";
import type { CliContext } from "../context.ts";
import { printJson, table, UsageError } from "../output.ts";
import { ProgressLine } from "../progress.ts";
import type { RepoOptions } from "./repo.ts";
import { manifestOrExplain, withRepo } from "./repo-run.ts";

export interface RestoreSnapshotsFlags {
  readonly generation?: number;
  readonly volume?: string;
  readonly parentSnapshot?: readonly string[];
  readonly full?: boolean;
  readonly json?: boolean;
  readonly stateMachineArn?: string;
}

/** `vol-a=snap-…` pairs → volume id → snapshot id. */
export function parseParents(values: readonly string[] = []): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values) {
    const m = /^(vol-[0-9a-z]+)=(snap-[0-9a-f]+)$/.exec(v);
    if (!m)
      throw new UsageError(
        `--parent-snapshot takes <volume id>=<snapshot id>, like vol-0abc=snap-0123, got "${v}"`,
      );
    if (out[m[1]!]) throw new UsageError(`--parent-snapshot names ${m[1]} twice`);
    out[m[1]!] = m[2]!;
  }
  return out;
}

/** The EBS writer of the context: the local stack's emulator, $CGM_EBS_ENDPOINT's, or AWS. */
function writerFor(ctx: CliContext): { writer: EbsSnapshotWriter; close: () => void } {
  const endpoint = ctx.stack?.ebsEndpoint ?? process.env.CGM_EBS_ENDPOINT;
  const client = createEbsClient({
    ...(endpoint ? { endpoint } : {}),
    ...(ctx.stack ? { region: ctx.stack.region } : {}),
    ...(ctx.stack
      ? { credentials: { accessKeyId: ctx.stack.accessKeyId, secretAccessKey: ctx.stack.secretAccessKey } }
      : {}),
  });
  let ec2: EC2Client | undefined;
  let catalog: SnapshotCatalog;
  if (endpoint) catalog = emulatorSnapshotCatalog(ebsAdmin(endpoint));
  else {
    ec2 = new EC2Client({});
    catalog = ec2SnapshotCatalog(ec2);
  }
  return {
    writer: new EbsSnapshotWriter({ client, catalog }),
    close: () => {
      client.destroy();
      ec2?.destroy();
    },
  };
}

/** `restore --to-snapshots`. */
/** The snapshots a restore made, one row per volume (the local, in-process and AWS paths alike). */
export function restoredSnapshotsTable(
  volumes: readonly {
    readonly volumeId: string;
    readonly snapshotId: string;
    readonly parentSnapshotId?: string | null | undefined;
    readonly parentGeneration?: number | null | undefined;
    readonly blocksWritten: number;
    readonly zeroBlocks?: number | undefined;
    readonly status: string;
  }[],
): string {
  return table(
    ["VOLUME", "SNAPSHOT", "PARENT", "BLOCKS WRITTEN", "ZERO BLOCKS", "STATUS"],
    volumes.map((v) => [
      v.volumeId,
      v.snapshotId,
      v.parentSnapshotId ? `${v.parentSnapshotId} (gen ${v.parentGeneration})` : "-",
      v.blocksWritten,
      v.zeroBlocks ?? "-",
      v.status,
    ]),
  );
}

export async function restoreSnapshotsAction(
  opts: RepoOptions & RestoreSnapshotsFlags & { toDir?: string; injectFailure?: string },
): Promise<void> {
  if (opts.toDir) throw new UsageError("give exactly one of --to-dir <dir> or --to-snapshots");
  const arn = opts.stateMachineArn ?? (opts.local ? undefined : process.env.CGM_RESTORE_STATE_MACHINE_ARN);
  if (arn) {
    if (opts.local) throw new UsageError("--state-machine-arn runs the restore in AWS; leave out --local");
    if (opts.injectFailure) throw new UsageError("--inject-failure works only with --local");
    await restoreViaStateMachine(opts, arn);
    return;
  }
  if (opts.local) {
    // The same restore state machine as in AWS, run by the local runner under AWS's limits.
    await (await import("./restore-local.ts")).localRestoreToSnapshots(opts);
    return;
  }
  if (opts.injectFailure) throw new UsageError("--inject-failure works only with --local");
  await withRepo(opts, (repo, ctx) => restoreToSnapshotsAction(repo, ctx, opts));
}

export async function restoreToSnapshotsAction(
  repo: Repo,
  ctx: CliContext,
  opts: RestoreSnapshotsFlags,
): Promise<void> {
  const manifest = await manifestOrExplain(repo, opts.generation);
  const volumeIds = opts.volume ? [opts.volume] : manifest.volumes.map((v) => v.volumeId);
  if (opts.volume && !manifest.volumes.some((v) => v.volumeId === opts.volume)) {
    throw new UsageError(
      `generation ${manifest.generation} has no volume ${opts.volume}; it has ${manifest.volumes.map((v) => v.volumeId).join(", ")}`,
    );
  }
  const parents = parseParents(opts.parentSnapshot);
  if (opts.full && Object.keys(parents).length > 0)
    throw new UsageError("--full and --parent-snapshot exclude each other");
  const { writer, close } = writerFor(ctx);
  const tty = process.stdout.isTTY && !opts.json;
  let line: ProgressLine | undefined;
  const started = Date.now();
  try {
    const result = await restoreGroupToSnapshots(repo, writer, {
      generation: manifest.generation,
      volumeIds,
      parents,
      autoParent: !opts.full,
      onVolume: (volumeId, parent) => {
        line = new ProgressLine(
          `restoring ${volumeId} into a snapshot${parent ? ` on ${parent.snapshotId} (generation ${parent.generation})` : ""}`,
          tty,
        );
      },
      onProgress: (s) => line?.update(s.blocksWritten, undefined, s.bytesWritten),
    });
    line?.done(`restored ${volumeIds.length} volume(s) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    if (opts.json) {
      printJson(result);
      return;
    }
    console.log(restoredSnapshotsTable(result.volumes));
    console.log(
      `generation ${result.generation} (point in time ${result.pointInTime}) restored into ${result.volumes.length} snapshot(s), restore id ${result.restoreId}; create volumes from them to start the instances again`,
    );
  } finally {
    close();
  }
}

/** `restore --to-snapshots --state-machine-arn`: the deployed restore state machine does the work. */
async function restoreViaStateMachine(opts: RepoOptions & RestoreSnapshotsFlags, arn: string): Promise<void> {
  if (!opts.config) {
    throw new UsageError(
      "--state-machine-arn needs --config <file>: the restore state machine reads the group's repository as the config says",
    );
  }
  const [{ loadConfigFile }, { regionOfStateMachineArn }, { applyAwsOptions }, { SFNClient }, sfnRun] =
    await Promise.all([
      import("./config.ts"),
      import("./backup.ts"),
      import("../state.ts"),
      import("@aws-sdk/client-sfn"),
      import("./restore-sfn.ts"),
    ]);
  const config = await loadConfigFile(opts.config);
  if (opts.group && opts.group !== config.group) {
    throw new UsageError(`--group ${opts.group} does not match the config's group "${config.group}"`);
  }
  const parents = parseParents(opts.parentSnapshot);
  if (opts.full && Object.keys(parents).length > 0)
    throw new UsageError("--full and --parent-snapshot exclude each other");
  let region: string;
  try {
    region = regionOfStateMachineArn(arn);
  } catch {
    throw new UsageError(
      `expected the restore state machine's ARN (stack output RestoreStateMachineArn), like arn:aws:states:eu-west-1:123456789012:stateMachine:Name, got ${JSON.stringify(arn)}`,
    );
  }
  applyAwsOptions(opts);
  const sfn = new SFNClient({ region });
  const tty = process.stdout.isTTY && !opts.json;
  try {
    const result = await sfnRun.awsRestoreToSnapshots(sfn, {
      config,
      stateMachineArn: arn,
      generation: opts.generation,
      volumes: opts.volume ? [opts.volume] : undefined,
      parents,
      autoParent: !opts.full,
      follow: tty ? { onState: (s) => console.error(`  ${s}`) } : {},
    });
    if (opts.json) {
      printJson(result);
      return;
    }
    console.log(restoredSnapshotsTable(result.snapshots));
    console.log(
      `generation ${result.generation} (point in time ${result.pointInTime}) restored into ${result.snapshots.length} snapshot(s) by execution ${result.executionArn}, restore id ${result.restoreId}; create volumes from them to start the instances again`,
    );
  } finally {
    sfn.destroy();
  }
}
