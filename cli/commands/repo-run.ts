/** The work behind `cgmirror status`, `restore`, `verify`, `repair` (imported when one of them runs). */
import { randomBytes } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { mkdir, readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { GenerationNotFoundError } from "#core/errors.ts";
import {
  type GenerationManifest,
  listGenerations,
  readCommittedManifest,
  readGeneration,
  readHead,
} from "#core/format/generation.ts";
import type { Repo } from "#core/format/layout.ts";
import { acquireLock, readLock, releaseLock } from "#core/protocol/lock.ts";
import { withReadLease } from "#core/protocol/read-lease.ts";
import { listRunRecords, type RunRecord } from "#core/protocol/run-history.ts";
import { applyRepair, planRepair, type RepairPlan } from "#core/restore/repair.ts";
import { type RestoreStats, restoreVolume } from "#core/restore/restore.ts";
import { verifyGeneration } from "#core/restore/verify.ts";
import { type CliContext, openContext } from "../context.ts";
import { BusyError } from "../errors.ts";
import { formatBytes, printJson, table, UsageError } from "../output.ts";
import { ProgressLine } from "../progress.ts";
import { applyAwsOptions } from "../state.ts";
import { loadConfigFile } from "./config.ts";
import type { RepoOptions } from "./repo.ts";

export class RestoreTargetError extends Error {
  override readonly name = "RestoreTargetError";
}

/** Opens the context and the group's repository; the caller closes the context. */
export async function openRepo(opts: RepoOptions): Promise<{ ctx: CliContext; repo: Repo }> {
  let bucket = opts.bucket;
  let prefix = opts.prefix;
  let group = opts.group;
  if (opts.config) {
    const config = await loadConfigFile(opts.config);
    if (group !== undefined && config.group !== group) {
      throw new UsageError(`--group ${group} does not match the config's group "${config.group}"`);
    }
    group = config.group;
    if (!opts.local) bucket ??= config.target.bucket;
    prefix ??= config.target.prefix;
  }
  if (group === undefined) throw new UsageError("name the group: give --group <name> or --config <file>");
  const groupName = group;
  applyAwsOptions(opts);
  const ctx = await openContext({
    ...(opts.local ? { local: true } : {}),
    ...(opts.stateDir ? { stateDir: opts.stateDir } : {}),
  });
  try {
    return {
      ctx,
      repo: ctx.repo(groupName, { ...(bucket ? { bucket } : {}), ...(prefix ? { prefix } : {}) }),
    };
  } catch (err) {
    await ctx.close();
    throw err;
  }
}

export async function withRepo<T>(
  opts: RepoOptions,
  fn: (repo: Repo, ctx: CliContext) => Promise<T>,
): Promise<T> {
  const { ctx, repo } = await openRepo(opts);
  try {
    return await fn(repo, ctx);
  } finally {
    await ctx.close();
  }
}

/** The manifest of generation `n` (default HEAD's), or a clear error naming the generations that exist. */
export async function manifestOrExplain(repo: Repo, n: number | undefined): Promise<GenerationManifest> {
  if (n === undefined) {
    const m = await readCommittedManifest(repo);
    if (!m) throw new UsageError(`group ${repo.group} has no committed generation yet; run a backup first`);
    return m;
  }
  try {
    return await readGeneration(repo, n);
  } catch (err) {
    if (err instanceof GenerationNotFoundError) throw new UsageError(err.message);
    throw err;
  }
}

/** The group lock as users see it: held (by a live run), expired (its run died), or free. */
export interface LockView {
  readonly state: "held" | "expired" | "free";
  /** The run that holds it, or held it last. */
  readonly runId: string;
  readonly fencing: number;
  readonly acquiredAt: string;
  /** Only while the lock is held or expired: a released lock has no expiry. */
  readonly expiresAt?: string;
  readonly released: boolean;
  readonly live: boolean;
}

export async function readLockView(repo: Repo): Promise<LockView | undefined> {
  const lock = await readLock(repo);
  if (!lock) return undefined;
  const rec = lock.record;
  const live = !rec.released && Date.parse(rec.expiresAt) > Date.now();
  return {
    state: rec.released ? "free" : live ? "held" : "expired",
    runId: rec.runId,
    fencing: rec.fencing,
    acquiredAt: rec.acquiredAt,
    ...(rec.released ? {} : { expiresAt: rec.expiresAt }),
    released: rec.released,
    live,
  };
}

export function describeLock(lock: LockView | undefined): string {
  if (!lock) return "lock: free (never taken)";
  if (lock.state === "held")
    return `lock: held by run ${lock.runId} (fencing ${lock.fencing}) since ${lock.acquiredAt}, expires ${lock.expiresAt}`;
  if (lock.state === "expired")
    return `lock: expired (run ${lock.runId}, fencing ${lock.fencing}, expired ${lock.expiresAt}); the next run takes it over and recovers what it left`;
  return `lock: free (last run ${lock.runId}, fencing ${lock.fencing})`;
}

/** One line per run record (runs, status). */
export function runRow(r: RunRecord): (string | number)[] {
  const outcome = r.outcome === "recovered" ? `recovered (${r.recoveredAs})` : r.outcome;
  return [
    r.startedAt ?? "-",
    outcome,
    r.generation ?? (r.headGeneration !== null ? `(${r.headGeneration})` : "-"),
    r.durationMs === null ? "-" : `${(r.durationMs / 1000).toFixed(1)} s`,
    r.changedBlocks === null ? "-" : formatBytes(r.changedBlocks * 524_288),
    r.storedBytes === null ? "-" : formatBytes(r.storedBytes),
    r.error ? `${r.error}: ${(r.cause ?? "").replace(/\s+/g, " ").slice(0, 120)}` : "",
  ];
}
export const RUN_HEADERS = ["STARTED", "OUTCOME", "GEN", "DURATION", "CHANGED", "STORED", "CAUSE"];

function sum(manifest: GenerationManifest, field: "changedBlocks" | "storedBytes"): number {
  return manifest.volumes.reduce((acc, v) => acc + (v.stats[field] ?? 0), 0);
}

export async function statusAction(opts: RepoOptions & { limit: number }): Promise<void> {
  await withRepo(opts, async (repo) => {
    const head = await readHead(repo);
    const commit = head?.head.commit ?? null;
    const numbers = await listGenerations(repo);
    const shown = numbers.slice(-opts.limit);
    const manifests = await Promise.all(shown.map((n) => readGeneration(repo, n)));
    const lock = await readLockView(repo);
    const { records: recentRuns } = await listRunRecords(repo, { limit: 5 });
    const newest = commit ? manifests.find((m) => m.generation === head?.head.generation) : undefined;
    const ageSeconds = commit ? Math.round((Date.now() - Date.parse(commit.committedAt)) / 1000) : null;
    const generations = manifests.map((m) => ({
      generation: m.generation,
      isHead: m.generation === head?.head.generation,
      pointInTime: m.pointInTime,
      committedAt: m.createdAt,
      volumes: m.volumes.length,
      changedBytes: sum(m, "changedBlocks") * 524_288,
      storedBytes: sum(m, "storedBytes"),
      durationMs: m.stats.durationMs ?? null,
      coordinationMs: m.stats.coordinationMs ?? null,
    }));
    const out = {
      group: repo.group,
      head: commit
        ? { generation: head!.head.generation, committedAt: commit.committedAt, runId: commit.runId }
        : null,
      newestCommittedAgeSeconds: ageSeconds,
      pointInTime: newest?.pointInTime ?? null,
      lock: lock ?? null,
      generations,
      /** The newest runs (committed, reverted, recovered), oldest first; `cgmirror runs` has them all. */
      recentRuns,
    };
    if (opts.json) {
      printJson(out);
      return;
    }
    if (!commit) console.log(`group ${repo.group}: no committed generation yet`);
    else
      console.log(
        `group ${repo.group}: HEAD is generation ${head!.head.generation}, committed ${commit.committedAt} (${ageSeconds} s ago)`,
      );
    console.log(describeLock(lock));
    if (generations.length) {
      console.log(
        table(
          ["GEN", "POINT IN TIME", "VOLUMES", "CHANGED", "STORED", "DURATION", "COORDINATION", ""],
          generations.map((g) => [
            g.generation,
            g.pointInTime,
            g.volumes,
            formatBytes(g.changedBytes),
            formatBytes(g.storedBytes),
            g.durationMs === null ? "-" : `${(g.durationMs / 1000).toFixed(1)} s`,
            g.coordinationMs === null ? "-" : `${g.coordinationMs} ms`,
            g.isHead ? "HEAD" : "",
          ]),
        ),
      );
    }
    if (recentRuns.length > 0) {
      console.log(`\nrecent runs (all of them: cgmirror runs --group ${repo.group}):`);
      console.log(table(RUN_HEADERS, recentRuns.map(runRow)));
    }
  });
}

export async function restoreAction(
  opts: RepoOptions & {
    generation?: number;
    toDir?: string;
    volume?: string;
    force?: boolean;
    parentSnapshot?: string[];
    full?: boolean;
  },
): Promise<void> {
  if (!opts.toDir) throw new UsageError("give exactly one of --to-dir <dir> or --to-snapshots");
  if (opts.parentSnapshot || opts.full) {
    throw new UsageError("--parent-snapshot and --full go with --to-snapshots");
  }
  const dir = resolve(opts.toDir);
  if (existsSync(dir) && !statSync(dir).isDirectory()) {
    throw new UsageError(`--to-dir ${opts.toDir} is a file, not a directory; name a directory`);
  }
  await withRepo(opts, async (repo) => {
    const manifest = await manifestOrExplain(repo, opts.generation);
    const volumes = opts.volume
      ? manifest.volumes.filter((v) => v.volumeId === opts.volume)
      : manifest.volumes;
    if (volumes.length === 0) {
      throw new UsageError(
        `generation ${manifest.generation} has no volume ${opts.volume}; it has ${manifest.volumes.map((v) => v.volumeId).join(", ")}`,
      );
    }
    const targets = volumes.map((v) => join(dir, `${v.volumeId}.img`));
    const existing = existsSync(dir) ? new Set(await readdir(dir)) : new Set<string>();
    const clash = volumes.filter((v) => existing.has(`${v.volumeId}.img`)).map((v) => `${v.volumeId}.img`);
    if (clash.length && !opts.force) {
      throw new RestoreTargetError(
        `${clash.join(", ")} already exist in ${opts.toDir}; add --force to overwrite or pick another --to-dir`,
      );
    }
    await mkdir(dir, { recursive: true });
    const tty = process.stdout.isTTY && !opts.json;
    const results: Array<RestoreStats & { path: string }> = [];
    // A read lease keeps a concurrent forget + prune off this generation (docs/format.md §10.2).
    const restoreId = `restore-files-${new Date().toISOString().replace(/[-:.]/g, "")}-${randomBytes(4).toString("hex")}`;
    const onUnleased = (error: unknown) =>
      console.error(
        `cgmirror: warning: no read lease (${error instanceof Error ? error.message : String(error)}); a prune running meanwhile can make this restore fail (it never writes wrong bytes)`,
      );
    await withReadLease(repo, { restoreId, generations: [manifest.generation], onUnleased }, async () => {
      for (const [i, v] of volumes.entries()) {
        const started = Date.now();
        const line = new ProgressLine(`restoring ${v.volumeId}`, tty);
        const stats = await restoreVolume(repo, {
          volumeId: v.volumeId,
          path: targets[i]!,
          manifest,
          onProgress: (p) => line.update(p.entriesDone, p.entriesEstimate, p.bytesWritten),
        });
        line.done(`restored ${v.volumeId} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
        results.push({ ...stats, path: targets[i]! });
      }
    });
    if (opts.json)
      printJson({
        generation: manifest.generation,
        pointInTime: manifest.pointInTime,
        volumes: results,
      });
    else
      for (const r of results)
        console.log(
          `restored ${r.volumeId} of generation ${r.generation} to ${r.path}: ${r.dataBlocks} blocks verified, ${r.zeroBlocks} zero blocks`,
        );
  });
}

export async function verifyAction(
  opts: RepoOptions & { generation?: number; readData?: boolean | string },
): Promise<void> {
  let fraction = 0;
  if (opts.readData === true) fraction = 1;
  else if (typeof opts.readData === "string") {
    fraction = Number(opts.readData);
    if (!(fraction > 0 && fraction <= 1)) {
      throw new UsageError(`--read-data takes a fraction above 0 and at most 1, got "${opts.readData}"`);
    }
  }
  const report = await withRepo(opts, async (repo) => {
    const manifest = await manifestOrExplain(repo, opts.generation);
    return verifyGeneration(repo, { generation: manifest.generation, readData: fraction });
  });
  if (opts.json) printJson(report);
  else {
    console.log(
      `generation ${report.generation}: ${report.volumes} volumes, ${report.indexEntries} index entries, ${report.segments} segments` +
        (fraction > 0
          ? `, ${report.blocksReHashed} blocks re-hashed in ${report.segmentsReadData} segments`
          : ""),
    );
    for (const p of report.problems) console.log(`PROBLEM ${p.kind} ${p.key}: ${p.message}`);
    console.log(report.ok ? "OK" : `FAILED: ${report.problems.length} problems`);
  }
  if (!report.ok) process.exitCode = 1;
}

async function confirm(question: string): Promise<boolean> {
  const { createInterface } = await import("node:readline/promises");
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

function explainRepair(plan: RepairPlan): void {
  if (plan.state === "ok") {
    console.log(`the repository is consistent: HEAD is generation ${plan.headGeneration}; nothing to repair`);
    return;
  }
  console.log(`the repository needs repair: ${plan.problem}`);
  console.log(
    `HEAD now: ${plan.headGeneration === null ? "missing or unreadable" : `generation ${plan.headGeneration}`}`,
  );
  if (plan.candidates.length === 0) {
    console.log("no committed generation was found (no commit record, no readable HEAD version)");
    return;
  }
  console.log(
    table(
      ["GEN", "COMMITTED AT", "RUN", "FOUND IN", "VERIFY"],
      plan.candidates.map((c) => [
        c.generation,
        c.commit.committedAt,
        c.commit.runId,
        c.sources.join(", "),
        c.problems.length === 0 ? "OK" : `${c.problems.length} problem(s): ${c.problems[0]}`,
      ]),
    ),
  );
  if (plan.chosen) {
    console.log(`repair would point HEAD at generation ${plan.chosen.generation} (the newest that verifies)`);
    if (plan.quarantine.length > 0) {
      console.log(
        `and move the commit records of generations ${plan.quarantine.join(", ")} (which do not verify) to commits/quarantine/`,
      );
    }
  } else console.log("no generation verifies: repair cannot choose one; restore from another copy");
}

export async function repairAction(opts: RepoOptions & { yes?: boolean; readData?: boolean }): Promise<void> {
  await withRepo(opts, async (repo) => {
    const plan = await planRepair(repo, { readData: opts.readData ? 1 : 0 });
    if (opts.json && (plan.state === "ok" || !opts.yes)) {
      printJson(plan);
    } else if (!opts.json) explainRepair(plan);
    if (plan.state === "ok") return;
    if (!plan.chosen) {
      process.exitCode = 1;
      return;
    }
    const go = opts.yes || (process.stdin.isTTY && !opts.json && (await confirm("apply this repair?")));
    if (!go) {
      if (!opts.json) console.log("nothing changed; re-run with --yes to apply");
      process.exitCode = 1;
      return;
    }
    const runId = `repair-${Date.now()}`;
    const lock = await acquireLock(repo, { runId, ttlMs: 15 * 60_000 });
    if (!lock.acquired) {
      throw new BusyError(
        `run ${lock.holderRunId} holds the group's lock until ${lock.expiresAt}; repair again after it ends`,
      );
    }
    try {
      await applyRepair(repo, plan, { runId, fencing: lock.lease.fencing });
    } finally {
      await releaseLock(repo, lock.lease);
    }
    const after = await planRepair(repo);
    if (opts.json)
      printJson({ repaired: true, plan, after: after.state, headGeneration: after.headGeneration });
    else console.log(`repaired: HEAD is generation ${after.headGeneration} (${after.state})`);
    if (after.state !== "ok") process.exitCode = 1;
  });
}
