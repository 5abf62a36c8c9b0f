/**
 * `cgmirror restore --local --to-snapshots`: the restore state machine the stack deploys
 * (workflows/restore.ts), run by the local runner (local/restore-runner.ts) under AWS's limits
 * (local/aws-limits.ts) against the local stack's EBS emulator and S3 server — the same path as
 * `--state-machine-arn` in AWS, every Task bound in-process to the real RestoreVolume handler.
 */
import { type GroupConfig, parseGroupConfig } from "#core/config/group-config.ts";
import { createRepo } from "#core/format/layout.ts";
import type { RestoreWorkflowInputT } from "#lambdas/contracts.ts";
import { localClients } from "../../local/clients.ts";
import { runLocalRestore } from "../../local/restore-runner.ts";
import { createLocalDeps } from "../../local/runner.ts";
import { attachOrStartLocalStack } from "../../local/stack.ts";
import { defaultPrefix } from "../context.ts";
import { printJson, UsageError } from "../output.ts";
import { stateDirOf } from "../state.ts";
import { loadConfigFile } from "./config.ts";
import type { RepoOptions } from "./repo.ts";
import { manifestOrExplain } from "./repo-run.ts";
import { newRestoreId, type RestoredSnapshot, RestoreExecutionError } from "./restore-sfn.ts";
import { parseParents, type RestoreSnapshotsFlags, restoredSnapshotsTable } from "./restore-snapshots.ts";

/** The Task states of the restore workflow `--inject-failure` can name. */
export const RESTORE_TASK_STATES = ["PrepareRestore", "RestoreVolume", "FinalizeRestore"] as const;
type RestoreTaskState = (typeof RESTORE_TASK_STATES)[number];

/** A failure the local run injects (`--inject-failure STATE[:VOLUME]`). */
export interface RestoreInjection {
  readonly state: RestoreTaskState;
  readonly volumeId?: string;
}

/** Parses `--inject-failure STATE[:VOLUME]`; the volume is checked against the generation later. */
export function parseRestoreInjection(spec: string): RestoreInjection {
  const [state, volumeId, extra] = spec.split(":");
  if (!RESTORE_TASK_STATES.includes(state as RestoreTaskState) || extra !== undefined) {
    throw new UsageError(
      `--inject-failure takes STATE[:VOLUME] with STATE one of ${RESTORE_TASK_STATES.join(", ")}; got "${spec}"`,
    );
  }
  if (volumeId !== undefined && state !== "RestoreVolume") {
    throw new UsageError(`--inject-failure ${spec}: only RestoreVolume takes a volume`);
  }
  return { state: state as RestoreTaskState, ...(volumeId !== undefined ? { volumeId } : {}) };
}

/** The error an injected failure raises (not retried by the state machine: it fails the restore). */
class InjectedRestoreFailure extends Error {
  override readonly name = "InjectedFailure";
}

export interface LocalRestoreOutput {
  readonly restoreId: string;
  /** The local execution's name (the restore id, as in AWS). */
  readonly execution: string;
  readonly generation: number;
  readonly pointInTime: string;
  readonly volumes: readonly RestoredSnapshot[];
}

export async function localRestoreToSnapshots(
  opts: RepoOptions & RestoreSnapshotsFlags & { injectFailure?: string },
): Promise<void> {
  const inject = opts.injectFailure ? parseRestoreInjection(opts.injectFailure) : undefined;
  const parents = parseParents(opts.parentSnapshot);
  if (opts.full && Object.keys(parents).length > 0)
    throw new UsageError("--full and --parent-snapshot exclude each other");
  const fileConfig = opts.config ? await loadConfigFile(opts.config) : undefined;
  if (fileConfig && opts.group !== undefined && fileConfig.group !== opts.group) {
    throw new UsageError(`--group ${opts.group} does not match the config's group "${fileConfig.group}"`);
  }
  const group = fileConfig?.group ?? opts.group;
  if (group === undefined) throw new UsageError("name the group: give --group <name> or --config <file>");

  const stack = await attachOrStartLocalStack({ stateDir: stateDirOf(opts) });
  const clients = localClients(stack);
  const deps = createLocalDeps({ endpoints: stack, simulator: clients.simulator });
  try {
    const bucket = opts.bucket ?? stack.bucket;
    const prefix = opts.prefix ?? fileConfig?.target.prefix ?? defaultPrefix(group);
    const repo = createRepo({ store: deps.store(bucket), prefix, group });
    // Usage errors before anything runs, as the in-process restore gives them.
    const manifest = await manifestOrExplain(repo, opts.generation);
    const all = manifest.volumes.map((v) => v.volumeId);
    for (const id of [
      ...(opts.volume ? [opts.volume] : []),
      ...(inject?.volumeId ? [inject.volumeId] : []),
    ]) {
      if (!all.includes(id)) {
        throw new UsageError(
          `generation ${manifest.generation} has no volume ${id}; it has ${all.join(", ")}`,
        );
      }
    }
    // The task input carries a group config (the workflow's contract): the file's, or one naming the
    // repository and the generation's volumes. Locally the bucket is the local stack's.
    const config: GroupConfig = fileConfig
      ? { ...fileConfig, target: { ...fileConfig.target, bucket, prefix } }
      : parseGroupConfig(
          {
            group,
            volumes: all.map((id) => ({ id })),
            target: { bucket, prefix },
            // Unused by a restore; the schema wants one.
            schedule: { expression: "rate(1 day)", enabled: false },
          },
          "the restore's task input",
        );
    const restoreId = newRestoreId();
    const input: RestoreWorkflowInputT = {
      config: config as unknown as Record<string, unknown>,
      restoreId,
      generation: manifest.generation,
      volumes: opts.volume ? [opts.volume] : null,
      parents: Object.keys(parents).length > 0 ? parents : null,
      autoParent: !opts.full,
    };
    const tty = process.stderr.isTTY && !opts.json;
    let fired = false;
    const run = await runLocalRestore({
      input,
      deps,
      ...(inject
        ? {
            wrap: (state: string, fn: (e: unknown) => Promise<unknown>) =>
              state !== inject.state
                ? fn
                : async (event: unknown) => {
                    const volumeId = (event as { volumeId?: string }).volumeId;
                    if (inject.volumeId !== undefined && volumeId !== inject.volumeId) return fn(event);
                    // The task does its work (a volume step has started its snapshot), then fails.
                    await fn(event);
                    fired = true;
                    throw new InjectedRestoreFailure(
                      `injected failure of ${state}${volumeId ? ` for ${volumeId}` : ""} (--inject-failure)`,
                    );
                  },
          }
        : {}),
      ...(tty ? { onState: (s: string) => console.error(`  ${s}`) } : {}),
    });
    if (run.status !== "SUCCEEDED") {
      throw new RestoreExecutionError(
        `the restore ${run.status === "FAILED" ? "failed" : run.status.toLowerCase().replace("_", " ")} (local execution ${run.executionName}${fired ? ", failure injected" : ""})` +
          (run.error ? `: ${run.error}` : "") +
          (run.cause ? ` - ${run.cause}` : ""),
      );
    }
    const out = run.output as {
      restoreId: string;
      generation: number;
      pointInTime: string;
      snapshots: RestoredSnapshot[];
    };
    const result: LocalRestoreOutput = {
      restoreId: out.restoreId,
      execution: run.executionName,
      generation: out.generation,
      pointInTime: out.pointInTime,
      volumes: out.snapshots,
    };
    if (opts.json) {
      printJson(result);
      return;
    }
    console.log(restoredSnapshotsTable(result.volumes));
    console.log(
      `generation ${result.generation} (point in time ${result.pointInTime}) restored into ${result.volumes.length} snapshot(s) by local execution ${result.execution} of the restore state machine, restore id ${result.restoreId}; create volumes from them to start the instances again`,
    );
  } finally {
    deps.close();
    clients.destroy();
    await stack.stop();
  }
}
