/**
 * `cgmirror restore --to-snapshots --state-machine-arn <arn>`: the restore runs in AWS as the deployed
 * restore state machine (workflows/restore.ts); the CLI starts an execution named by the restore id and
 * follows it to its end.
 */
import { randomBytes } from "node:crypto";
import { type SFNClient, StartExecutionCommand } from "@aws-sdk/client-sfn";
import { type FollowOptions, followExecution } from "#adapters/sfn-follow.ts";
import type { GroupConfig } from "#core/config/group-config.ts";
import type { RestoreWorkflowInputT } from "#lambdas/contracts.ts";
import { CliError, ExitCode } from "../errors.ts";

export interface RestoredSnapshot {
  readonly volumeId: string;
  readonly snapshotId: string;
  readonly status: string;
  readonly blocksWritten: number;
  /** Of them, blocks written as zeros (absent from executions of an older deployment). */
  readonly zeroBlocks?: number;
  readonly parentSnapshotId: string | null;
  readonly parentGeneration: number | null;
}

export interface AwsRestoreResult {
  readonly restoreId: string;
  readonly generation: number;
  readonly pointInTime: string;
  readonly snapshots: readonly RestoredSnapshot[];
  readonly executionArn: string;
}

/** The restore failed in AWS: the execution's error and cause (what its cleanup deleted). */
export class RestoreExecutionError extends CliError {
  override readonly name = "RestoreExecutionError";
  constructor(message: string) {
    super(message, ExitCode.failed);
  }
}

/** A restore id that is a valid execution name: restore-<UTC time>-<random>. */
export function newRestoreId(now = new Date()): string {
  const t = now.toISOString().replace(/[-:]/g, "").replace(/\..*/, "");
  return `restore-${t}-${randomBytes(4).toString("hex")}`;
}

export interface AwsRestoreOptions {
  readonly config: GroupConfig;
  readonly stateMachineArn: string;
  readonly generation?: number | undefined;
  readonly volumes?: readonly string[] | undefined;
  readonly parents?: Readonly<Record<string, string>> | undefined;
  readonly autoParent: boolean;
  /** @default newRestoreId() */
  readonly restoreId?: string;
  readonly follow?: FollowOptions;
}

/** Starts the restore state machine and follows the execution; throws RestoreExecutionError when it fails. */
export async function awsRestoreToSnapshots(sfn: SFNClient, o: AwsRestoreOptions): Promise<AwsRestoreResult> {
  const restoreId = o.restoreId ?? newRestoreId();
  const input: RestoreWorkflowInputT = {
    config: o.config as unknown as Record<string, unknown>,
    restoreId,
    generation: o.generation ?? null,
    volumes: o.volumes && o.volumes.length > 0 ? [...o.volumes] : null,
    parents: o.parents && Object.keys(o.parents).length > 0 ? { ...o.parents } : null,
    autoParent: o.autoParent,
  };
  const start = await sfn.send(
    new StartExecutionCommand({
      stateMachineArn: o.stateMachineArn,
      name: restoreId,
      input: JSON.stringify(input),
    }),
  );
  if (!start.executionArn) throw new Error("StartExecution returned no execution ARN");
  const out = await followExecution(sfn, start.executionArn, o.follow);
  if (out.status !== "SUCCEEDED") {
    const what =
      out.status === "FAILED" ? "failed" : out.status === "TIMED_OUT" ? "timed out" : "was aborted";
    throw new RestoreExecutionError(
      `the restore ${what} (execution ${start.executionArn})` +
        (out.error ? `: ${out.error}` : "") +
        (out.cause ? ` - ${out.cause}` : "") +
        (out.status === "FAILED"
          ? ""
          : `; delete any snapshot tagged cgmirror:restore-id=${restoreId} (the cleanup did not run)`),
    );
  }
  const r = out.output as Omit<AwsRestoreResult, "executionArn">;
  return {
    restoreId: r.restoreId,
    generation: r.generation,
    pointInTime: r.pointInTime,
    snapshots: r.snapshots,
    executionArn: start.executionArn,
  };
}
