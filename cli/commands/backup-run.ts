/** The work behind `cgmirror backup` (imported only when a backup runs: it loads the SDKs and the runner). */
import { S3Client } from "@aws-sdk/client-s3";
import { SFNClient, StartExecutionCommand } from "@aws-sdk/client-sfn";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { followExecution } from "#adapters/sfn-follow.ts";
import type { GroupConfig } from "#core/config/group-config.ts";
import { readGeneration } from "#core/format/generation.ts";
import { createRepo, type Repo } from "#core/format/layout.ts";
import { readRunProgress } from "#core/transfer/worker.ts";
import type { TaskName } from "#workflows/tasks.ts";
import { localClients } from "../../local/clients.ts";
import { createLocalDeps, InjectedFailureError, runLocalBackup } from "../../local/runner.ts";
import { attachOrStartLocalStack } from "../../local/stack.ts";
import type { VolumeSimulator } from "../../local/volumes/simulator.ts";
import { TerminalDisplay, transferProgressText } from "../display.ts";
import { UsageError } from "../output.ts";
import { type BackupResult, newExecutionName, outcomeOfExecution } from "./backup.ts";

/** A run whose --inject-failure never fired: it must not commit (the user asked for a failure). */
export class InjectionNotFiredError extends Error {
  override readonly name = "InjectionNotFiredError";
}

/** Polls the run's transfer progress objects into the display's progress line. */
function followProgress(repo: Repo, runId: string, display: TerminalDisplay): () => Promise<void> {
  if (!display.enabled) return async () => {};
  let stopped = false;
  let started: number | undefined;
  const loop = (async () => {
    while (!stopped) {
      await new Promise((r) => setTimeout(r, 300));
      const p = await readRunProgress(repo, runId).catch(() => undefined);
      if (!stopped && p && p.shards.length > 0) {
        started ??= Date.now();
        display.progress(transferProgressText(p, started));
      }
    }
  })();
  return async () => {
    stopped = true;
    await loop;
    display.clear();
  };
}

/** What the committed generation changed and stored (the progress objects are gone by then). */
async function committedFigures(
  repo: Repo,
  generation: number | undefined,
): Promise<Pick<BackupResult, "changedBlocks" | "changedBytes" | "storedBytes">> {
  if (generation === undefined) return {};
  try {
    const m = await readGeneration(repo, generation);
    const changedBlocks = m.volumes.reduce((a, v) => a + (v.stats.changedBlocks ?? 0), 0);
    return {
      changedBlocks,
      changedBytes: changedBlocks * 524_288,
      storedBytes: m.volumes.reduce((a, v) => a + (v.stats.storedBytes ?? 0), 0),
    };
  } catch {
    return {};
  }
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
  injectFailure?: { task: TaskName; volumeId?: string };
  progress?: boolean;
}): Promise<BackupResult> {
  const inject = options.injectFailure;
  const stack = await attachOrStartLocalStack({ stateDir: options.stateDir });
  const clients = localClients(stack);
  const { simulator } = clients;
  const deps = createLocalDeps({ endpoints: stack, simulator });
  const display = new TerminalDisplay(options.progress === true);
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
    let fired = false;
    const wrap = inject
      ? (task: TaskName, _state: string, fn: (e: unknown) => Promise<unknown>) => async (event: unknown) => {
          if (task === "Commit" && !fired && inject.task !== "Commit") {
            throw new InjectionNotFiredError(
              `--inject-failure ${inject.task}${inject.volumeId ? `:${inject.volumeId}` : ""} never fired: no ${inject.task} task ran${
                inject.volumeId
                  ? ` for ${inject.volumeId} (it has no changed blocks since the last backup; write to it first)`
                  : ""
              }, so the run reverts instead of committing`,
            );
          }
          try {
            return await fn(event);
          } catch (error) {
            if (error instanceof InjectedFailureError) fired = true;
            throw error;
          }
        }
      : undefined;
    const stopProgress = followProgress(repo, executionName, display);
    const run = await runLocalBackup({
      config,
      deps,
      executionName,
      ...(inject ? { injectFailure: inject } : {}),
      ...(wrap ? { wrap } : {}),
      ...(display.enabled ? { onState: (s: string) => display.line(`  ${s}`) } : {}),
    }).finally(stopProgress);
    return {
      outcome: run.outcome,
      group: config.group,
      ...(run.generation !== undefined ? { generation: run.generation } : {}),
      ...(run.error ? { error: run.error } : {}),
      ...(run.cause ? { cause: run.cause } : {}),
      execution: run.executionName,
      durationMs: run.durationMs,
      ...(run.outcome === "committed" ? await committedFigures(repo, run.generation) : {}),
    };
  } finally {
    deps.close();
    clients.destroy();
    await stack.stop();
  }
}

export async function awsBackup(options: {
  config: GroupConfig;
  stateMachineArn: string;
  region: string;
  progress?: boolean;
}): Promise<BackupResult> {
  const { config } = options;
  const sfn = new SFNClient({ region: options.region });
  const s3 = new S3Client({ region: options.region });
  const display = new TerminalDisplay(options.progress === true);
  const started = Date.now();
  const name = newExecutionName(config.group);
  const repo = createRepo({
    store: new S3ObjectStore({ client: s3, bucket: config.target.bucket }),
    prefix: config.target.prefix,
    group: config.group,
  });
  try {
    const start = await sfn.send(
      new StartExecutionCommand({
        stateMachineArn: options.stateMachineArn,
        input: JSON.stringify({ config }),
        name,
      }),
    );
    const stopProgress = followProgress(repo, name, display);
    const out = await followExecution(sfn, start.executionArn!, {
      ...(display.enabled ? { onState: (s: string) => display.line(`  ${s}`) } : {}),
    }).finally(stopProgress);
    const { outcome, generation } = outcomeOfExecution(out);
    return {
      outcome,
      group: config.group,
      ...(generation !== undefined ? { generation } : {}),
      ...(out.error ? { error: out.error } : {}),
      ...(out.cause ? { cause: out.cause } : {}),
      execution: out.executionArn,
      durationMs: Date.now() - started,
      ...(outcome === "committed" ? await committedFigures(repo, generation) : {}),
    };
  } finally {
    sfn.destroy();
    s3.destroy();
  }
}
