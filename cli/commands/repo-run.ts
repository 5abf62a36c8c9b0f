/** `cgmirror status`, `restore`, `verify`: read-only commands over a group's repository. */
import { existsSync, statSync } from "node:fs";
import { mkdir, readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Command, Option } from "commander";
import { GenerationNotFoundError } from "#core/errors.ts";
import {
  type GenerationManifest,
  listGenerations,
  readCommittedManifest,
  readGeneration,
  readHead,
} from "#core/generation.ts";
import type { Repo } from "#core/layout.ts";
import { acquireLock, readLock, releaseLock } from "#core/lock.ts";
import { applyRepair, planRepair, type RepairPlan } from "#core/repair.ts";
import { restoreVolume } from "#core/restore.ts";
import { verifyGeneration } from "#core/verify.ts";
import { type CliContext, openContext } from "../context.ts";
import { formatBytes, printJson, table, UsageError } from "../output.ts";
import { parseNonNegativeInt } from "../parse.ts";
import { ProgressLine } from "../progress.ts";
import { loadConfigFile } from "./config.ts";

export class RestoreTargetError extends Error {
  override readonly name = "RestoreTargetError";
}

export interface RepoOptions {
  readonly group?: string;
  readonly config?: string;
  readonly bucket?: string;
  readonly prefix?: string;
  readonly local?: boolean;
  readonly stateDir?: string;
  readonly json?: boolean;
}

export function repoOptions(cmd: Command): Command {
  return cmd
    .option("--group <name>", "consistency group name (default: the config's)")
    .option("--config <file>", "group config (names the bucket and prefix)")
    .option(
      "--bucket <name>",
      "bucket (default: the config's, the local stack's with --local, or $CGM_BUCKET)",
    )
    .option("--prefix <prefix>", "repository key prefix (default: the config's, else groups/<group>)")
    .option("--local", "use the embedded local stack (.cgmirror/)")
    .addOption(new Option("--state-dir <dir>", "local state directory").hideHelp())
    .option("--json", "print JSON");
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

async function withRepo<T>(opts: RepoOptions, fn: (repo: Repo, ctx: CliContext) => Promise<T>): Promise<T> {
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

interface LockView {
  readonly runId: string;
  readonly fencing: number;
  readonly expiresAt: string;
  readonly released: boolean;
  readonly live: boolean;
}

async function readLockView(repo: Repo): Promise<LockView | undefined> {
  const lock = await readLock(repo);
  if (!lock) return undefined;
  const rec = lock.record;
  return {
    runId: rec.runId,
    fencing: rec.fencing,
    expiresAt: rec.expiresAt,
    released: rec.released,
    live: !rec.released && Date.parse(rec.expiresAt) > Date.now(),
  };
}

function sum(manifest: GenerationManifest, field: "changedBlocks" | "storedBytes"): number {
  return manifest.volumes.reduce((acc, v) => acc + (v.stats[field] ?? 0), 0);
}

export function statusCommand(): Command {
  return repoOptions(
    new Command("status").description("the committed generation, the generations, the lock and the RPO age"),
  )
    .option("--limit <n>", "show at most the newest n generations", parseNonNegativeInt, 20)
    .action(async (opts: RepoOptions & { limit: number }) => {
      await withRepo(opts, async (repo) => {
        const head = await readHead(repo);
        const commit = head?.head.commit ?? null;
        const numbers = await listGenerations(repo);
        const shown = numbers.slice(-opts.limit);
        const manifests = await Promise.all(shown.map((n) => readGeneration(repo, n)));
        const lock = await readLockView(repo);
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
        console.log(
          lock
            ? `lock: ${lock.live ? "held" : lock.released ? "free" : "expired"} (run ${lock.runId}, fencing ${lock.fencing}${lock.live ? `, expires ${lock.expiresAt}` : ""})`
            : "lock: free (never taken)",
        );
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
      });
    });
}

export function restoreCommand(): Command {
  return repoOptions(
    new Command("restore").description(
      "restore a generation to raw image files (one per volume, named by volume id), every block verified",
    ),
  )
    .option("--generation <n>", "generation to restore (default: HEAD)", parseNonNegativeInt)
    .requiredOption("--to-dir <dir>", "directory for the images")
    .option("--volume <vol-id>", "restore only this volume")
    .option("--force", "overwrite existing image files")
    .action(
      async (
        opts: RepoOptions & { generation?: number; toDir: string; volume?: string; force?: boolean },
      ) => {
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
          const clash = volumes
            .filter((v) => existing.has(`${v.volumeId}.img`))
            .map((v) => `${v.volumeId}.img`);
          if (clash.length && !opts.force) {
            throw new RestoreTargetError(
              `${clash.join(", ")} already exist in ${opts.toDir}; add --force to overwrite or pick another --to-dir`,
            );
          }
          await mkdir(dir, { recursive: true });
          const tty = process.stdout.isTTY && !opts.json;
          const results = [];
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
      },
    );
}

export function verifyCommand(): Command {
  return repoOptions(
    new Command("verify").description(
      "check a generation: every reference resolves and agrees with its segment; with --read-data, re-hash the data",
    ),
  )
    .option("--generation <n>", "generation to verify (default: HEAD)", parseNonNegativeInt)
    .option(
      "--read-data [fraction]",
      "also re-read and re-hash block data: all of it, or a fraction of the segments (0-1)",
    )
    .action(async (opts: RepoOptions & { generation?: number; readData?: boolean | string }) => {
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
    });
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

export function repairCommand(): Command {
  return repoOptions(
    new Command("repair").description(
      "explain why runs stop on this repository (HEAD missing, deleted or rolled back) and, with confirmation, point HEAD at the newest committed generation that verifies",
    ),
  )
    .option("--yes", "apply without asking")
    .option("--read-data", "also re-hash every block of each candidate (slower, stronger)")
    .action(async (opts: RepoOptions & { yes?: boolean; readData?: boolean }) => {
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
          throw new UsageError(
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
    });
}
