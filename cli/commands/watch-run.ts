/** The work behind `cgmirror watch`. */
import { S3Client } from "@aws-sdk/client-s3";
import { SFNClient } from "@aws-sdk/client-sfn";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { describeExecution, followExecution, newestRunningExecution } from "#adapters/sfn-follow.ts";
import { createRepo, type Repo } from "#core/format/layout.ts";
import { readLock } from "#core/protocol/lock.ts";
import { listRunRecords } from "#core/protocol/run-history.ts";
import { readRunProgress } from "#core/transfer/worker.ts";
import { progressWanted, TerminalDisplay, transferProgressText } from "../display.ts";
import { ExitCode, UsageError } from "../errors.ts";
import { printJson } from "../output.ts";
import { applyAwsOptions } from "../state.ts";
import { BACKUP_EXIT_CODES, outcomeOfExecution, regionOfStateMachineArn } from "./backup.ts";
import type { RepoOptions } from "./repo.ts";
import { withRepo } from "./repo-run.ts";

type WatchOptions = RepoOptions & { executionArn?: string; stateMachineArn?: string; wait: string };

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function regionOfExecutionArn(arn: string): string {
  const m = /^arn:aws[a-z-]*:states:([a-z0-9-]+):\d{12}:execution:/.exec(arn);
  if (!m)
    throw new UsageError(
      `expected an execution ARN like arn:aws:states:<region>:<account>:execution:<machine>:<name>, got "${arn}"`,
    );
  return m[1]!;
}

async function showProgress(
  repo: Repo | undefined,
  runId: string,
  display: TerminalDisplay,
  started: number,
) {
  if (!repo || !display.enabled) return;
  const p = await readRunProgress(repo, runId).catch(() => undefined);
  if (p && p.shards.length > 0) display.progress(transferProgressText(p, started));
}

export async function watchAction(opts: WatchOptions): Promise<void> {
  const waitMs = Math.max(0, Number(opts.wait) || 0) * 1000;
  const display = new TerminalDisplay(progressWanted(opts.json));
  const smArn = opts.stateMachineArn ?? (opts.local ? undefined : process.env.CGM_STATE_MACHINE_ARN);
  if (!opts.local && (opts.executionArn || smArn)) {
    applyAwsOptions(opts);
    const region = opts.executionArn
      ? regionOfExecutionArn(opts.executionArn)
      : regionOfStateMachineArn(smArn!);
    const sfn = new SFNClient({ region });
    const s3 = new S3Client({ region });
    try {
      let arn = opts.executionArn;
      const deadline = Date.now() + waitMs;
      while (!arn) {
        arn = await newestRunningExecution(sfn, smArn!);
        if (arn || Date.now() >= deadline) break;
        await sleep(2000);
      }
      if (!arn) {
        if (opts.json) printJson({ running: false });
        else console.log("no execution of the state machine is running");
        return;
      }
      const info = await describeExecution(sfn, arn);
      const config = (
        info.input as { config?: { group: string; target: { bucket: string; prefix: string } } }
      )?.config;
      const repo = config
        ? createRepo({
            store: new S3ObjectStore({ client: s3, bucket: config.target.bucket }),
            prefix: config.target.prefix,
            group: config.group,
          })
        : undefined;
      if (!opts.json) console.log(`following ${info.name} (started ${info.startDate?.toISOString() ?? "?"})`);
      const started = Date.now();
      const out = await followExecution(sfn, arn, {
        ...(display.enabled ? { onState: (s: string) => display.line(`  ${s}`) } : {}),
        onPoll: () => showProgress(repo, info.name, display, started),
      });
      display.clear();
      const { outcome, generation } = outcomeOfExecution(out);
      const result = {
        outcome,
        ...(generation !== undefined ? { generation } : {}),
        execution: arn,
        error: out.error,
        cause: out.cause,
      };
      if (opts.json) printJson(result);
      else
        console.log(
          `${outcome}${generation !== undefined ? `: generation ${generation}` : ""}${out.error ? `; cause: ${out.error}: ${out.cause ?? ""}` : ""}`,
        );
      process.exitCode = BACKUP_EXIT_CODES[outcome];
    } finally {
      sfn.destroy();
      s3.destroy();
    }
    return;
  }
  // Locally (or any repository): the live lock names the running run; its progress objects and, at the
  // end, its run record tell the rest.
  await withRepo(opts, async (repo) => {
    const deadline = Date.now() + waitMs;
    let runId: string | undefined;
    for (;;) {
      const lock = await readLock(repo);
      if (lock && !lock.record.released && Date.parse(lock.record.expiresAt) > Date.now())
        runId = lock.record.runId;
      if (runId || Date.now() >= deadline) break;
      await sleep(500);
    }
    if (!runId) {
      if (opts.json) printJson({ running: false });
      else console.log(`no backup of group ${repo.group} is running`);
      return;
    }
    if (!opts.json) console.log(`following run ${runId} of group ${repo.group}`);
    const started = Date.now();
    for (;;) {
      const lock = await readLock(repo);
      if (!lock || lock.record.runId !== runId || lock.record.released) break;
      await showProgress(repo, runId, display, started);
      await sleep(500);
    }
    display.clear();
    const { records } = await listRunRecords(repo, { limit: 20 });
    const record = records.find((r) => r.runId === runId);
    const outcome = record?.outcome === "committed" ? "committed" : record ? "reverted" : undefined;
    if (opts.json) printJson({ runId, outcome: outcome ?? "unknown", record: record ?? null });
    else if (!record) console.log(`run ${runId} ended; it left no run record (see cgmirror status)`);
    else
      console.log(
        `${outcome}${record.generation ? `: generation ${record.generation}` : ""}${record.error ? `; cause: ${record.error}: ${record.cause ?? ""}` : ""}`,
      );
    process.exitCode = outcome === "committed" ? ExitCode.ok : outcome ? ExitCode.failed : ExitCode.ok;
  });
}
