/** The actions of `cgmirror forget` and `cgmirror prune` (loaded when one of them runs). */
import { LockHeldError } from "#core/errors.ts";
import type { Repo } from "#core/format/layout.ts";
import { applyForget, type ForgetPlan, planForget } from "#core/lifecycle/forget.ts";
import { maintenanceRunId, withGroupHeld } from "#core/lifecycle/maintenance.ts";
import { type PruneReport, pruneRepository } from "#core/lifecycle/prune.ts";
import { parseRetentionDuration, type RetentionPolicy } from "#core/lifecycle/retention.ts";
import { BusyError } from "../errors.ts";
import { formatBytes, printJson, table, UsageError } from "../output.ts";
import { loadConfigFile } from "./config.ts";
import type { RepoOptions } from "./repo.ts";
import { openRepo } from "./repo-run.ts";

export interface PolicyFlags {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  keepWithin?: string;
  timezone?: string;
}

const RULES = [
  "keepLast",
  "keepHourly",
  "keepDaily",
  "keepWeekly",
  "keepMonthly",
  "keepYearly",
  "keepWithin",
] as const;

/** The policy: the config's `retention`, with every rule given on the command line replacing it. */
async function policyOf(opts: RepoOptions & PolicyFlags): Promise<RetentionPolicy> {
  const flags = RULES.filter((r) => opts[r] !== undefined);
  if (opts.keepWithin !== undefined) {
    try {
      parseRetentionDuration(opts.keepWithin);
    } catch (error) {
      throw new UsageError(`--keep-within: ${(error as Error).message}`);
    }
  }
  if (flags.length > 0) {
    return Object.fromEntries([
      ...flags.map((r) => [r, opts[r]]),
      ["timezone", opts.timezone ?? "UTC"],
    ]) as RetentionPolicy;
  }
  const config = opts.config ? await loadConfigFile(opts.config) : undefined;
  if (!config?.retention) {
    throw new UsageError(
      "no retention policy: give rules such as --keep-last 7 --keep-daily 14, or --config with a retention section",
    );
  }
  return { ...config.retention, ...(opts.timezone ? { timezone: opts.timezone } : {}) };
}

async function withRepo<T>(opts: RepoOptions, fn: (repo: Repo) => Promise<T>): Promise<T> {
  const { ctx, repo } = await openRepo(opts);
  try {
    return await fn(repo);
  } finally {
    await ctx.close();
  }
}

/** Runs `fn` holding the group; a live lock of another run is a user-facing message. */
async function held<T>(
  repo: Repo,
  kind: string,
  lockMinutes: number,
  fn: Parameters<typeof withGroupHeld<T>>[2],
): Promise<T> {
  try {
    return await withGroupHeld(repo, { runId: maintenanceRunId(kind), ttlMs: lockMinutes * 60_000 }, fn);
  } catch (error) {
    if (error instanceof LockHeldError) {
      throw new BusyError(
        `run ${error.holderRunId} holds the group's lock until ${error.expiresAt}; try again after it ends`,
      );
    }
    throw error;
  }
}

function printForget(plan: ForgetPlan, dryRun: boolean): void {
  console.log(
    table(
      ["GEN", "POINT IN TIME", "", "WHY"],
      plan.decisions.map((d) => [
        d.generation,
        d.pointInTime,
        d.keep ? "keep" : dryRun ? "would forget" : "forget",
        d.reasons.join(", "),
      ]),
    ),
  );
  console.log(
    `${dryRun ? "would forget" : "forgot"} ${plan.forget.length} generation(s)${plan.forget.length ? ` (${plan.forget.join(", ")})` : ""}, kept ${plan.keep.length}` +
      (dryRun || plan.forget.length === 0 ? "" : "; run `cgmirror prune` to reclaim their data"),
  );
}

function printPrune(r: PruneReport): void {
  const verb = r.dryRun ? "would delete" : "deleted";
  const d = r.deleted;
  console.log(
    `retained generations: ${r.retainedGenerations.join(", ") || "none"} (HEAD ${r.head}); ` +
      `segments: ${r.segments.live} live of ${r.segments.total} (${formatBytes(r.segments.liveBytes)} live of ${formatBytes(r.segments.storedBytes)})`,
  );
  console.log(
    table(
      ["WHAT", "OBJECTS", "BYTES"],
      (Object.keys(d) as (keyof typeof d)[]).map((k) => [k, d[k].count, formatBytes(d[k].bytes)]),
    ),
  );
  console.log(
    `${verb} ${r.objectsDeleted} object version(s), ${formatBytes(r.bytesReclaimed)}; ` +
      `repack: ${r.dryRun ? `${r.repack.candidates} candidate segment(s)` : `${r.repack.segments} segment(s) into ${r.repack.newSegments}, ${formatBytes(r.repack.liveBytesCopied)} copied`}` +
      (r.repack.deferred > 0 ? `, ${r.repack.deferred} left for the next prune` : ""),
  );
  for (const u of r.unreadable) console.log(`left alone (unreadable): ${u.key}@${u.versionId}: ${u.error}`);
  if (r.keptLocked.count > 0) {
    console.log(
      `kept ${r.keptLocked.count} garbage version(s), ${formatBytes(r.keptLocked.bytes)}, under Object Lock retention: a later prune deletes them once it passes`,
    );
  }
  for (const l of r.leasedGenerations) {
    console.log(
      `kept forgotten generation ${l.generation} and its data: restore ${l.restoreIds.join(", ")} is reading it (read lease); a prune after it ends reclaims it`,
    );
  }
  if (!r.done) console.log("not finished: run prune again");
}

export async function forgetAction(
  opts: RepoOptions & PolicyFlags & { dryRun?: boolean; prune?: boolean; lockMinutes: number },
): Promise<void> {
  const policy = await policyOf(opts);
  await withRepo(opts, async (repo) => {
    if (opts.dryRun) {
      const plan = await planForget(repo, policy);
      if (opts.json) printJson({ dryRun: true, ...plan });
      else printForget(plan, true);
      return;
    }
    // --config names the group's Object Lock (no repack); without it a locked version is still kept.
    const locked = opts.config ? (await loadConfigFile(opts.config)).target.objectLock !== undefined : false;
    const out = await held(repo, "forget", opts.lockMinutes, async ({ lease }) => {
      const plan = await planForget(repo, policy);
      const result = await applyForget(repo, lease, plan);
      const pruned = opts.prune ? await pruneRepository(repo, { lease, objectLock: locked }) : undefined;
      return { plan, result, pruned };
    });
    if (opts.json)
      printJson({ dryRun: false, ...out.plan, ...out.result, ...(out.pruned ? { prune: out.pruned } : {}) });
    else {
      printForget(out.plan, false);
      if (out.result.locked.length > 0) {
        console.log(
          `kept generation(s) ${out.result.locked.join(", ")}: their commit records are under Object Lock retention (forget again once it passes)`,
        );
      }
      if (out.result.leased.length > 0) {
        console.log(
          `generation(s) ${out.result.leased.join(", ")}: a running restore reads them; their manifests and data stay until it ends`,
        );
      }
      if (out.pruned) printPrune(out.pruned);
    }
  });
}

export async function pruneAction(
  opts: RepoOptions & {
    dryRun?: boolean;
    repackThreshold?: number;
    maxRepackGib?: number;
    lockMinutes: number;
  },
): Promise<void> {
  const config = opts.config ? await loadConfigFile(opts.config) : undefined;
  const percent = opts.repackThreshold ?? config?.prune.repackGarbagePercent ?? 50;
  if (percent < 1 || percent > 100) throw new UsageError(`--repack-threshold takes 1-100, got ${percent}`);
  const options = {
    objectLock: config?.target.objectLock !== undefined,
    repackThreshold: percent / 100,
    maxRepackBytes: (opts.maxRepackGib ?? config?.prune.maxRepackGiB ?? 16) * 2 ** 30,
  };
  const report = await withRepo(opts, (repo) =>
    opts.dryRun
      ? pruneRepository(repo, { ...options, dryRun: true })
      : held(repo, "prune", opts.lockMinutes, ({ lease }) => pruneRepository(repo, { ...options, lease })),
  );
  if (opts.json) printJson(report);
  else printPrune(report);
}
