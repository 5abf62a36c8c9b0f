/**
 * The group health report: one self-contained HTML page (no network: data, styles and the ~100-line
 * chart renderer are inline; charts are SVG drawn by that script). Pure: data in, HTML text out.
 *
 * Charts (each an <svg data-chart="…"> whose points are <circle class="pt">, so a test can count them):
 * - rpo: age of the newest committed group over time (a sawtooth: it grows until a commit resets it to
 *   that group's commit lag), against the RPO target; 2 points per generation (1 for the first) + now;
 * - bytes: changed and stored bytes per generation (2 points per generation);
 * - durations: run duration and coordination time per committed generation (2 points per generation);
 * - runs: every recorded run on a time axis, reverted ones marked with their cause (1 point per run).
 */

export interface ReportGeneration {
  readonly generation: number;
  readonly pointInTime: string;
  readonly committedAt: string;
  readonly changedBytes: number;
  readonly storedBytes: number;
  readonly durationMs: number | null;
  readonly coordinationMs: number | null;
}

export interface ReportRun {
  readonly runId: string;
  readonly outcome: string;
  readonly startedAt: string | null;
  readonly endedAt: string;
  readonly generation: number | null;
  readonly durationMs: number | null;
  readonly error: string | null;
  readonly cause: string | null;
}

export interface ReportData {
  readonly group: string;
  readonly generatedAt: string;
  readonly rpoTargetMinutes: number | null;
  readonly retention: string;
  readonly generations: readonly ReportGeneration[];
  readonly runs: readonly ReportRun[];
}

export interface RpoPoint {
  readonly t: string;
  readonly ageSeconds: number;
}

/** The RPO sawtooth: just before and just after each commit, and now. */
export function rpoSeries(generations: readonly ReportGeneration[], now: string): RpoPoint[] {
  const out: RpoPoint[] = [];
  const sorted = [...generations].sort((a, b) => a.generation - b.generation);
  const age = (t: string, pit: string) => Math.max(0, (Date.parse(t) - Date.parse(pit)) / 1000);
  sorted.forEach((g, i) => {
    if (i > 0) out.push({ t: g.committedAt, ageSeconds: age(g.committedAt, sorted[i - 1]!.pointInTime) });
    out.push({ t: g.committedAt, ageSeconds: age(g.committedAt, g.pointInTime) });
  });
  if (sorted.length > 0) out.push({ t: now, ageSeconds: age(now, sorted.at(-1)!.pointInTime) });
  return out;
}

/** Expected number of points per chart (tests and the page's own summary use it). */
export function expectedPoints(data: ReportData): Record<"rpo" | "bytes" | "durations" | "runs", number> {
  const n = data.generations.length;
  return { rpo: n === 0 ? 0 : 2 * n, bytes: 2 * n, durations: 2 * n, runs: data.runs.length };
}

function escapeHtml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!,
  );
}

/** JSON safe inside a <script> element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, "\\u003c")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

const RENDERER = `
(function () {
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, String(attrs[k]));
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmtBytes(n) {
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n.toFixed(0)) + " " + u[i];
  }
  // series: [{name, color, points: [{x, y, label}], line: bool}]; x numeric (ms or index), y numeric
  function chart(id, series, opts) {
    var svg = document.querySelector('svg[data-chart="' + id + '"]');
    var W = 760, H = 240, L = 70, R = 20, T = 20, B = 40;
    var pts = [];
    series.forEach(function (s) { pts = pts.concat(s.points); });
    var ys = pts.map(function (p) { return p.y; }).concat(opts.hline != null ? [opts.hline] : []);
    var xs = pts.map(function (p) { return p.x; });
    var x0 = Math.min.apply(null, xs.length ? xs : [0]), x1 = Math.max.apply(null, xs.length ? xs : [1]);
    if (x1 === x0) { x1 = x0 + 1; }
    var y1 = Math.max.apply(null, ys.length ? ys : [1]) * 1.1 || 1;
    function X(v) { return L + ((v - x0) / (x1 - x0)) * (W - L - R); }
    function Y(v) { return H - B - (v / y1) * (H - T - B); }
    el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#888" }, svg);
    el("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#888" }, svg);
    var top = el("text", { x: 4, y: T + 4, "font-size": 11, fill: "#444" }, svg);
    top.textContent = opts.fmt(y1);
    if (opts.hline != null) {
      el("line", { x1: L, y1: Y(opts.hline), x2: W - R, y2: Y(opts.hline), stroke: "#c00", "stroke-dasharray": "6 4", class: "target" }, svg);
      var t = el("text", { x: W - R - 4, y: Y(opts.hline) - 4, "text-anchor": "end", "font-size": 11, fill: "#c00" }, svg);
      t.textContent = opts.hlineLabel;
    }
    series.forEach(function (s, si) {
      if (s.line && s.points.length > 1) {
        el("polyline", { points: s.points.map(function (p) { return X(p.x) + "," + Y(p.y); }).join(" "), fill: "none", stroke: s.color, "stroke-width": 2 }, svg);
      }
      s.points.forEach(function (p) {
        var c = el("circle", { cx: X(p.x), cy: Y(p.y), r: p.mark ? 6 : 4, fill: p.mark ? "#c00" : s.color, class: "pt", "data-series": s.name }, svg);
        var title = el("title", {}, c);
        title.textContent = p.label;
      });
      var lg = el("text", { x: L + 10 + si * 180, y: H - 8, "font-size": 12, fill: s.color }, svg);
      lg.textContent = "● " + s.name;
    });
  }
  var rpo = data.rpo.map(function (p) { return { x: Date.parse(p.t), y: p.ageSeconds / 60, label: p.t + ": " + (p.ageSeconds / 60).toFixed(1) + " min" }; });
  chart("rpo", [{ name: "age of the newest committed group (min)", color: "#1565c0", points: rpo, line: true }],
    { fmt: function (v) { return v.toFixed(0) + " min"; }, hline: data.rpoTargetMinutes, hlineLabel: "RPO target " + data.rpoTargetMinutes + " min" });
  var gens = data.generations;
  chart("bytes", [
    { name: "changed", color: "#ef6c00", line: true, points: gens.map(function (g) { return { x: g.generation, y: g.changedBytes, label: "generation " + g.generation + ": " + fmtBytes(g.changedBytes) + " changed" }; }) },
    { name: "stored", color: "#2e7d32", line: true, points: gens.map(function (g) { return { x: g.generation, y: g.storedBytes, label: "generation " + g.generation + ": " + fmtBytes(g.storedBytes) + " stored" }; }) }
  ], { fmt: fmtBytes });
  chart("durations", [
    { name: "run duration (s)", color: "#6a1b9a", line: true, points: gens.map(function (g) { return { x: g.generation, y: (g.durationMs || 0) / 1000, label: "generation " + g.generation + ": " + ((g.durationMs || 0) / 1000).toFixed(1) + " s" }; }) },
    { name: "coordination (s)", color: "#00838f", line: true, points: gens.map(function (g) { return { x: g.generation, y: (g.coordinationMs || 0) / 1000, label: "generation " + g.generation + ": coordination " + (g.coordinationMs || 0) + " ms" }; }) }
  ], { fmt: function (v) { return v.toFixed(1) + " s"; } });
  chart("runs", [{ name: "runs (red: reverted)", color: "#2e7d32", line: false, points: data.runs.map(function (r, i) {
    return { x: Date.parse(r.startedAt || r.endedAt), y: (r.durationMs || 0) / 1000, mark: r.outcome !== "committed",
      label: r.runId + ": " + r.outcome + (r.error ? " — " + r.error + ": " + (r.cause || "") : "") };
  }) }], { fmt: function (v) { return v.toFixed(1) + " s"; } });
  document.body.setAttribute("data-rendered", "true");
})();
`;

export function reportHtml(data: ReportData): string {
  const rpo = rpoSeries(data.generations, data.generatedAt);
  const reverted = data.runs.filter((r) => r.outcome !== "committed");
  const rows = (items: string[][]) =>
    items.map((r) => `<tr>${r.map((c) => `<td>${escapeHtml(c)}</td>`).join("")}</tr>`).join("");
  const last = [...data.generations].sort((a, b) => a.generation - b.generation).at(-1);
  const ageMin = last ? (Date.parse(data.generatedAt) - Date.parse(last.pointInTime)) / 60_000 : null;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<title>cgmirror report: ${escapeHtml(data.group)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:860px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}
svg{background:#fafafa;border:1px solid #e0e0e0;width:760px;height:240px}
.bad{color:#c00}.ok{color:#2e7d32}.muted{color:#777}
</style></head>
<body>
<h1>cgmirror report — group ${escapeHtml(data.group)}</h1>
<p class="muted">generated ${escapeHtml(data.generatedAt)} · ${data.generations.length} committed generations · ${data.runs.length} recorded runs</p>
<p>Newest committed group: ${last ? `generation ${last.generation}, point in time ${escapeHtml(last.pointInTime)} (${ageMin!.toFixed(1)} min old)` : "none yet"}.
RPO target: ${data.rpoTargetMinutes === null ? "not set" : `${data.rpoTargetMinutes} min`}${
    data.rpoTargetMinutes !== null && ageMin !== null
      ? ageMin <= data.rpoTargetMinutes
        ? ' — <span class="ok">within target</span>'
        : ' — <span class="bad">BREACHED</span>'
      : ""
  }. Retention: ${escapeHtml(data.retention)}.</p>
<h2>RPO timeline</h2>
<svg data-chart="rpo" viewBox="0 0 760 240" role="img" aria-label="age of the newest committed group over time"></svg>
<h2>Bytes changed and stored per generation</h2>
<svg data-chart="bytes" viewBox="0 0 760 240" role="img" aria-label="bytes per generation"></svg>
<h2>Run duration and coordination time per generation</h2>
<svg data-chart="durations" viewBox="0 0 760 240" role="img" aria-label="durations per generation"></svg>
<h2>Runs</h2>
<svg data-chart="runs" viewBox="0 0 760 240" role="img" aria-label="runs over time"></svg>
<h2>Reverted runs (${reverted.length})</h2>
${
  reverted.length === 0
    ? "<p>none</p>"
    : `<table><tr><th>run</th><th>started</th><th>outcome</th><th>cause</th></tr>${rows(
        reverted.map((r) => [r.runId, r.startedAt ?? "-", r.outcome, `${r.error ?? ""}: ${r.cause ?? ""}`]),
      )}</table>`
}
<h2>Generations</h2>
<table><tr><th>gen</th><th>point in time</th><th>changed</th><th>stored</th><th>duration</th><th>coordination</th></tr>${rows(
    data.generations.map((g) => [
      String(g.generation),
      g.pointInTime,
      String(g.changedBytes),
      String(g.storedBytes),
      g.durationMs === null ? "-" : `${(g.durationMs / 1000).toFixed(1)} s`,
      g.coordinationMs === null ? "-" : `${g.coordinationMs} ms`,
    ]),
  )}</table>
<script type="application/json" id="report-data">${scriptJson({ ...data, rpo })}</script>
<script>${RENDERER}</script>
</body></html>
`;
}
