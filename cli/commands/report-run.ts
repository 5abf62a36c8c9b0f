/** The work behind `cgmirror report`: gathers generations and run records, writes the page. */
import { writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { listGenerations, readGeneration } from "#core/format/generation.ts";
import type { Repo } from "#core/format/layout.ts";
import { listRunRecords } from "#core/protocol/run-history.ts";
import { printJson } from "../output.ts";
import { type ReportData, reportHtml } from "../report/html.ts";
import { loadConfigFile } from "./config.ts";
import type { RepoOptions } from "./repo.ts";
import { withRepo } from "./repo-run.ts";

export async function reportData(
  repo: Repo,
  options: { rpoTargetMinutes?: number | null; limit?: number; now?: Date } = {},
): Promise<ReportData> {
  const numbers = (await listGenerations(repo)).slice(-(options.limit ?? 200));
  const manifests = await Promise.all(numbers.map((n) => readGeneration(repo, n)));
  const { records } = await listRunRecords(repo, { limit: options.limit ?? 200 });
  return {
    group: repo.group,
    generatedAt: (options.now ?? new Date()).toISOString(),
    rpoTargetMinutes: options.rpoTargetMinutes ?? null,
    // Retention (forget/prune) is not part of this version: nothing is ever expired.
    retention: "no policy (every committed generation is kept)",
    generations: manifests.map((m) => ({
      generation: m.generation,
      pointInTime: m.pointInTime,
      committedAt: m.createdAt,
      changedBytes: m.volumes.reduce((a, v) => a + (v.stats.changedBlocks ?? 0), 0) * 524_288,
      storedBytes: m.volumes.reduce((a, v) => a + (v.stats.storedBytes ?? 0), 0),
      durationMs: m.stats.durationMs ?? null,
      coordinationMs: m.stats.coordinationMs ?? null,
    })),
    runs: records.map((r) => ({
      runId: r.runId,
      outcome: r.outcome === "recovered" ? `recovered (${r.recoveredAs})` : r.outcome,
      startedAt: r.startedAt,
      endedAt: r.endedAt,
      generation: r.generation,
      durationMs: r.durationMs,
      error: r.error,
      cause: r.cause,
    })),
  };
}

export async function writeReport(repo: Repo, out: string, options: Parameters<typeof reportData>[1] = {}) {
  const data = await reportData(repo, options);
  const path = resolve(out);
  await writeFile(path, reportHtml(data));
  return { path, data };
}

export async function reportAction(
  opts: RepoOptions & { out: string; rpoMinutes?: number; limit: number },
): Promise<void> {
  let rpo = opts.rpoMinutes ?? null;
  if (rpo === null && opts.config) rpo = (await loadConfigFile(opts.config)).alarms.rpoMinutes;
  await withRepo(opts, async (repo) => {
    const { path, data } = await writeReport(repo, opts.out, { rpoTargetMinutes: rpo, limit: opts.limit });
    if (opts.json) printJson({ path, generations: data.generations.length, runs: data.runs.length });
    else console.log(`wrote ${path} (${data.generations.length} generations, ${data.runs.length} runs)`);
  });
}
