/**
 * The group report (`cgmirror report`) as a browser shows it: the page is rendered by headless
 * Chromium (Debian's package, installed by ensureChromium when missing) and its charts are counted
 * point by point. The page's own script draws the charts, so only a browser can check them.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ReportData, reportHtml } from "../../cli/report/html.ts";
import { type ChromiumStatus, ensureChromium, renderedDom } from "../support/chromium.ts";

let chromium: ChromiumStatus;
let dir: string;

beforeAll(async () => {
  chromium = await ensureChromium();
  if ("missing" in chromium) console.warn(`report-browser: skipped, ${chromium.missing}`);
  dir = await mkdtemp(join(tmpdir(), "cgm-report-"));
}, 900_000);
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const HOUR = 3_600_000;
const t0 = Date.parse("2026-11-20T00:00:00.000Z");
const iso = (ms: number) => new Date(ms).toISOString();

/** Five committed generations an hour apart, and two reverted runs between them. */
function data(): ReportData {
  const generations = Array.from({ length: 5 }, (_, i) => ({
    generation: i + 1,
    pointInTime: iso(t0 + i * HOUR),
    committedAt: iso(t0 + i * HOUR + 120_000),
    changedBytes: (i + 1) * 10 * 524_288,
    storedBytes: (i + 1) * 4 * 524_288,
    durationMs: 100_000 + i * 1000,
    coordinationMs: 300 + i,
  }));
  const committed = generations.map((g, i) => ({
    runId: `run-${i + 1}`,
    outcome: "committed",
    startedAt: iso(Date.parse(g.pointInTime) - 10_000),
    endedAt: g.committedAt,
    generation: g.generation,
    durationMs: g.durationMs,
    error: null,
    cause: null,
  }));
  const reverted = [2, 4].map((k) => ({
    runId: `run-failed-${k}`,
    outcome: "reverted",
    startedAt: iso(t0 + k * HOUR - HOUR / 2),
    endedAt: iso(t0 + k * HOUR - HOUR / 2 + 60_000),
    generation: null,
    durationMs: 60_000,
    error: "TransferFailedError",
    cause: "GetSnapshotBlock AccessDenied <script>alert(1)</script>",
  }));
  return {
    group: "db",
    generatedAt: iso(t0 + 5 * HOUR),
    rpoTargetMinutes: 120,
    retention: "no policy",
    generations,
    runs: [...committed, ...reverted],
  };
}

/** The `<circle class="pt">` elements inside one chart's `<svg data-chart="…">`. */
function points(dom: string, chart: string): string[] {
  const svg = new RegExp(`<svg[^>]*data-chart="${chart}"[^>]*>([\\s\\S]*?)</svg>`).exec(dom);
  if (!svg) throw new Error(`no chart ${chart} in the rendered page`);
  return svg[1]!.match(/<circle[^>]*class="pt"[^>]*>/g) ?? [];
}

describe("the report in a browser", () => {
  it("GIVEN five generations and seven runs WHEN Chromium renders the page THEN every chart has its points and the reverted runs are marked", async (ctx) => {
    if ("missing" in chromium) return ctx.skip();
    const file = join(dir, "report.html");
    await writeFile(file, reportHtml(data()));
    const dom = await renderedDom(chromium.path, file);
    expect(dom).toMatch(/<body[^>]*data-rendered="true"/);
    // RPO: one point at the first commit, two at each later one (just before and after), and now.
    expect(points(dom, "rpo")).toHaveLength(10);
    expect(points(dom, "bytes")).toHaveLength(10); // changed + stored per generation
    expect(points(dom, "durations")).toHaveLength(10); // run duration + coordination per generation
    const runs = points(dom, "runs");
    expect(runs).toHaveLength(7);
    expect(runs.filter((c) => /fill="#c00"/.test(c))).toHaveLength(2);
    // The RPO target is drawn, and a cause is shown as text, never run as markup.
    expect(dom).toMatch(/class="target"/);
    expect(dom).not.toMatch(/<script>alert\(1\)<\/script>/);
  });
});
