/**
 * CLI latency: wall and CPU time of calls that do no work (`--help`, `status` of a small group with the
 * local stack up) and of a local backup against the run's own duration (overhead = wall − durationMs).
 * Prints one JSON line. Usage: npm run bench:cli (starts and stops its own local stack in a temp dir).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";

const bin = join(import.meta.dirname, "..", "bin", "cgmirror.js");
const cwd = mkdtempSync(join(tmpdir(), "cgm-bench-cli-"));

function timed(args: string[]): { wallMs: number; stdout: string } {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [bin, ...args], { cwd, encoding: "utf8" });
  const wallMs = performance.now() - t0;
  if (r.status !== 0 && r.status !== 1) throw new Error(`cgmirror ${args.join(" ")}: ${r.stderr}`);
  return { wallMs, stdout: r.stdout };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

try {
  execFileSync(process.execPath, [bin, "local", "up"], { cwd });
  for (const [id, inst] of [
    ["vol-a", "i-a"],
    ["vol-b", "i-b"],
  ]) {
    execFileSync(
      process.execPath,
      [bin, "local", "volume", "create", "--id", id!, "--size-gib", "1", "--instance", inst!],
      { cwd },
    );
  }
  execFileSync(
    process.execPath,
    [bin, "local", "volume", "write", "--id", "vol-a", "--offset", "0", "--random", "8000000"],
    { cwd },
  );
  execFileSync(process.execPath, [bin, "config", "init", "--group", "db", "--out", "group.json", "--local"], {
    cwd,
  });
  const help = [1, 2, 3, 4, 5].map(() => timed(["--help"]).wallMs);
  const backups: { wallMs: number; durationMs: number }[] = [];
  for (let i = 0; i < 3; i++) {
    execFileSync(
      process.execPath,
      [
        bin,
        "local",
        "volume",
        "write",
        "--id",
        "vol-b",
        "--offset",
        String(i * 524288),
        "--random",
        "4096",
        "--seed",
        String(i),
      ],
      { cwd },
    );
    const r = timed(["backup", "--group", "db", "--config", "group.json", "--local", "--json"]);
    backups.push({
      wallMs: r.wallMs,
      durationMs: (JSON.parse(r.stdout) as { durationMs: number }).durationMs,
    });
  }
  const status = [1, 2, 3, 4, 5].map(() => timed(["status", "--group", "db", "--local"]).wallMs);
  const overhead = backups.slice(1).map((b) => b.wallMs - b.durationMs); // the first one may synthesize
  console.log(
    JSON.stringify({
      bench: "cli",
      helpWallMsMedian: Math.round(median(help)),
      statusWallMsMedian: Math.round(median(status)),
      backupFirstWallMs: Math.round(backups[0]!.wallMs),
      backupFirstOverheadMs: Math.round(backups[0]!.wallMs - backups[0]!.durationMs),
      backupOverheadMsMedian: Math.round(median(overhead)),
      backupDurationMsMedian: Math.round(median(backups.slice(1).map((b) => b.durationMs))),
      loadavg1: Number(loadavg()[0]!.toFixed(2)),
      cores: 2,
    }),
  );
} finally {
  spawnSync(process.execPath, [bin, "local", "down"], { cwd });
  rmSync(cwd, { recursive: true, force: true });
}
