/**
 * The user's path through the real bin (issue 14): injections that must fire, the environment for other
 * tools, one-line causes with documented exit codes, progress that does not mix with state lines, the run
 * history and the commands that read it (runs, diff, stats, unlock, watch, report), and nothing left in
 * TMPDIR.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { createRepo } from "#core/format/layout.ts";
import { acquireLock } from "#core/protocol/lock.ts";
import { cgmirror, cliLocalStack } from "../support/cli.ts";

const run = promisify(execFile);
let stack: Awaited<ReturnType<typeof cliLocalStack>>;
let cwd: string;

/** What a terminal shows: `\r` returns to the line start, `\x1b[K` clears the rest of the line. */
const ESC = String.fromCharCode(27);
const CLEAR = `${ESC}[K`;
function screen(output: string): string[] {
  const lines: string[] = [];
  let current = "";
  for (const part of output.split(new RegExp(`(\r|\n|${ESC}\\[K)`))) {
    if (part === "\n") {
      lines.push(current);
      current = "";
    } else if (part === "\r") current = "";
    else if (part === CLEAR) {
      /* cleared: current already reset by \r before it */
    } else current += part;
  }
  if (current) lines.push(current);
  return lines;
}

const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => cgmirror(args, { cwd, env });

beforeAll(async () => {
  stack = await cliLocalStack("cgm-cli-path-");
  cwd = stack.cwd;
  for (const [id, inst] of [
    ["vol-a", "i-a"],
    ["vol-b", "i-b"],
  ] as const) {
    expect(
      (await cli(["local", "volume", "create", "--id", id, "--size-gib", "1", "--instance", inst])).code,
    ).toBe(0);
  }
  expect(
    (await cli(["local", "volume", "write", "--id", "vol-a", "--offset", "0", "--random", "3000000"])).code,
  ).toBe(0);
  expect((await cli(["config", "init", "--group", "db", "--out", "group.json", "--local"])).code).toBe(0);
});
afterAll(async () => {
  await stack?.down();
});

describe("the user's path through the CLI", () => {
  it("GIVEN a backup on a terminal THEN state lines and the progress line never mix, and the summary counts every changed block", async () => {
    const r = await cli(["backup", "--group", "db", "--config", "group.json", "--local"], {
      CGM_PROGRESS: "1",
    });
    expect(r.code).toBe(0);
    const lines = screen(r.stdout).filter((l) => l !== "");
    for (const l of lines) {
      expect(/^ {2}[A-Za-z?]+$/.test(l) || /^transfer: /.test(l) || /^committed: /.test(l), l).toBe(true);
    }
    expect(lines).toContain("  Commit");
    const status = JSON.parse((await cli(["status", "--group", "db", "--local", "--json"])).stdout);
    const changedBytes = status.generations[0].changedBytes as number;
    expect(lines.at(-1)).toMatch(
      new RegExp(`^committed: group db generation 1 .*; ${changedBytes / 524288} changed blocks`),
    );
  });

  it("fails with exit 2 for an injection of an unknown task or of a volume outside the group, before anything runs", async () => {
    const task = await cli([
      "backup",
      "--group",
      "db",
      "--config",
      "group.json",
      "--local",
      "--inject-failure",
      "Transfr:vol-b",
    ]);
    expect(task.code).toBe(2);
    expect(task.stderr.trim()).toMatch(
      /^cgmirror: --inject-failure takes TASK\[:VOLUME\] with TASK one of AcquireLock, .*Transfer/,
    );
    const vol = await cli([
      "backup",
      "--group",
      "db",
      "--config",
      "group.json",
      "--local",
      "--inject-failure",
      "Transfer:vol-zz",
    ]);
    expect(vol.code).toBe(2);
    expect(vol.stderr.trim()).toBe(
      "cgmirror: --inject-failure Transfer:vol-zz: vol-zz is not a volume of the group; it has vol-a, vol-b",
    );
  });

  it("GIVEN vol-b has no changed block WHEN its Transfer is to fail THEN the run reverts (exit 1) and says the injection never fired", async () => {
    const r = await cli([
      "backup",
      "--group",
      "db",
      "--config",
      "group.json",
      "--local",
      "--inject-failure",
      "Transfer:vol-b",
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /^reverted: group db is unchanged; cause: InjectionNotFiredError: --inject-failure Transfer:vol-b never fired/m,
    );
    const status = JSON.parse((await cli(["status", "--group", "db", "--local", "--json"])).stdout);
    expect(status.head.generation).toBe(1);
  });

  it("GIVEN writes on vol-b WHEN its Transfer fails THEN it reverts, and runs/status show the reverted run with its cause", async () => {
    await cli(["local", "volume", "write", "--id", "vol-b", "--offset", "0", "--random", "1000"]);
    const r = await cli([
      "backup",
      "--group",
      "db",
      "--config",
      "group.json",
      "--local",
      "--inject-failure",
      "Transfer:vol-b",
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /^reverted: group db is unchanged; cause: TransferFailedError: injected failure of Transfer for vol-b/m,
    );
    const runs = JSON.parse((await cli(["runs", "--group", "db", "--local", "--json"])).stdout);
    expect(runs.runs.map((x: { outcome: string }) => x.outcome)).toEqual([
      "committed",
      "reverted",
      "reverted",
    ]);
    expect(runs.runs[0]).toMatchObject({ generation: 1, error: null });
    expect(runs.runs[0].changedBlocks).toBeGreaterThan(0);
    expect(runs.runs[2]).toMatchObject({ error: "TransferFailedError", headGeneration: 1 });
    const text = await cli(["runs", "--group", "db", "--local"]);
    expect(text.stdout).toMatch(/reverted .*TransferFailedError: injected failure/);
    const status = JSON.parse((await cli(["status", "--group", "db", "--local", "--json"])).stdout);
    expect(status.recentRuns).toHaveLength(3);
    expect(status.lock).toMatchObject({ state: "free", released: true });
    expect(status.lock.expiresAt).toBeUndefined();
    expect(status.generations[0]).toMatchObject({ generation: 1, isHead: true });
  });

  it("GIVEN two generations WHEN diff and stats THEN they count the changed blocks per volume and the stored bytes", async () => {
    await cli([
      "local",
      "volume",
      "write",
      "--id",
      "vol-a",
      "--offset",
      "0",
      "--random",
      "524288",
      "--seed",
      "9",
    ]);
    const b = await cli(["backup", "--group", "db", "--config", "group.json", "--local", "--json"]);
    expect(JSON.parse(b.stdout)).toMatchObject({ outcome: "committed", generation: 2 });
    const diff = JSON.parse((await cli(["diff", "--group", "db", "--local", "1", "2", "--json"])).stdout);
    const byVol = Object.fromEntries(diff.volumes.map((v: { volumeId: string }) => [v.volumeId, v]));
    expect(byVol["vol-a"]).toMatchObject({ changedBlocks: 1, changedBytes: 524288, status: "changed" });
    expect(byVol["vol-b"]).toMatchObject({ changedBlocks: 1, newBlocks: 1 });
    const stats = JSON.parse((await cli(["stats", "--group", "db", "--local", "--json"])).stdout);
    expect(stats.generation).toBe(2);
    expect(stats.dataBlocks).toBeGreaterThan(0);
    expect(stats.logicalBytes).toBe(stats.dataBlocks * 524288);
    expect(stats.storedBytes).toBeGreaterThan(0);
    expect(stats.dedupRatio).toBeGreaterThanOrEqual(1);
    expect(stats.repository.segments).toBeGreaterThan(0);
    const bad = await cli(["diff", "--group", "db", "--local", "1", "0"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^cgmirror: .*expected a generation number of 1 or more/);
  });

  it("GIVEN a lock left by a dead run WHEN unlock THEN it shows the holder, asks, and releases it only when confirmed; a live lock needs --force", async () => {
    const repo = createRepo({
      store: new S3ObjectStore({ client: stack.s3, bucket: stack.endpoints.bucket }),
      prefix: "groups/db",
      group: "db",
    });
    const dead = await acquireLock(repo, { runId: "dead-run", ttlMs: 1 });
    expect(dead.acquired).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    const ask = await cli(["unlock", "--group", "db", "--local"]);
    expect(ask.code).toBe(1);
    expect(ask.stdout).toMatch(/lock: expired \(run dead-run/);
    expect(ask.stdout).toMatch(/nothing changed; re-run with --yes/);
    const yes = await cli(["unlock", "--group", "db", "--local", "--yes"]);
    expect(yes.code).toBe(0);
    expect(yes.stdout).toMatch(/released the lock of run dead-run/);
    const live = await acquireLock(repo, { runId: "live-run", ttlMs: 3_600_000 });
    expect(live.acquired).toBe(true);
    const refused = await cli(["unlock", "--group", "db", "--local", "--yes"]);
    expect(refused.code).toBe(7);
    expect(refused.stderr).toMatch(/^cgmirror: the lock of run live-run has not expired/);
    // watch follows the live run until its lock goes away (here: a forced unlock)
    const watching = cli(["watch", "--group", "db", "--local"]);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await cli(["unlock", "--group", "db", "--local", "--yes", "--force"])).code).toBe(0);
    const watched = await watching;
    expect(watched.code).toBe(0);
    expect(watched.stdout).toMatch(/following run live-run of group db/);
    expect(watched.stdout).toMatch(/run live-run ended; it left no run record/);
    const idle = await cli(["watch", "--group", "db", "--local"]);
    expect(idle.stdout).toMatch(/no backup of group db is running/);
    expect((await cli(["unlock", "--group", "db", "--local"])).stdout).toMatch(/nothing to unlock/);
  });

  it("GIVEN local env THEN the AWS SDKs reach the local S3 with only the standard variables", async () => {
    const env = await cli(["local", "env", "--json"]);
    const vars = JSON.parse(env.stdout) as Record<string, string>;
    expect(vars).toMatchObject({
      AWS_ENDPOINT_URL_S3: stack.endpoints.s3Endpoint,
      AWS_REGION: stack.endpoints.region,
      AWS_DEFAULT_REGION: stack.endpoints.region,
      AWS_ACCESS_KEY_ID: stack.endpoints.accessKeyId,
    });
    const standard = Object.fromEntries(Object.entries(vars).filter(([k]) => k.startsWith("AWS_")));
    const script =
      'import { S3Client, ListBucketsCommand } from "@aws-sdk/client-s3";' +
      "const out = await new S3Client({}).send(new ListBucketsCommand({}));" +
      "console.log(out.Buckets.map((b) => b.Name).join(','));";
    const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script], {
      cwd: join(import.meta.dirname, "..", ".."),
      env: { PATH: process.env.PATH ?? "", HOME: cwd, ...standard },
    });
    expect(stdout.trim().split(",")).toContain(stack.endpoints.bucket);
    // cgmirror itself, without --local, through the same variables plus CGM_BUCKET
    const status = await cli(["status", "--group", "db", "--json"], { ...vars, CGM_S3_ENDPOINT: "" });
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout).head.generation).toBe(2);
  });

  it("fails with one line naming cause and fix, and a documented exit code, for a missing Region, missing credentials, an unreachable endpoint and a busy state directory", async () => {
    const bare = {
      AWS_REGION: "",
      AWS_DEFAULT_REGION: "",
      AWS_PROFILE: "",
      AWS_ACCESS_KEY_ID: "",
      AWS_SECRET_ACCESS_KEY: "",
      AWS_CONFIG_FILE: join(cwd, "no-config"),
      AWS_SHARED_CREDENTIALS_FILE: join(cwd, "no-credentials"),
      AWS_EC2_METADATA_DISABLED: "true",
      AWS_ENDPOINT_URL_S3: "",
      CGM_S3_ENDPOINT: "",
    };
    const region = await cli(["status", "--group", "db", "--bucket", "some-bucket"], bare);
    expect(region.code).toBe(6);
    expect(region.stderr.trim().split("\n")).toHaveLength(1);
    expect(region.stderr).toMatch(/^cgmirror: no AWS Region is set: give --region, set AWS_REGION/);
    const creds = await cli(
      ["status", "--group", "db", "--bucket", "some-bucket", "--region", "eu-west-1"],
      bare,
    );
    expect(creds.code).toBe(6);
    expect(creds.stderr.trim().split("\n")).toHaveLength(1);
    expect(creds.stderr).toMatch(/^cgmirror: no AWS credentials were found/);
    const down = await cli(["status", "--group", "db", "--bucket", "b"], {
      ...bare,
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: "x",
      AWS_SECRET_ACCESS_KEY: "y",
      CGM_S3_ENDPOINT: "http://127.0.0.1:9",
    });
    expect(down.code).toBe(6);
    expect(down.stderr).toMatch(
      /^cgmirror: cannot reach .*\(ECONNREFUSED\): if it is the local stack, start it/,
    );
    // Another command runs the stack in-process on a state directory (no `local up`): a second one is told so.
    const other = await mkdtemp(join(tmpdir(), "cgm-busy-"));
    try {
      await writeFile(join(other, "stack.pid"), String(process.pid));
      const busy = await cli(["status", "--group", "db", "--local", "--state-dir", other]);
      expect(busy.code).toBe(7);
      expect(busy.stderr.trim()).toMatch(
        /^cgmirror: another cgmirror command \(pid \d+\) is using the local stack in .* right now; wait for it to finish, or run `npx cgmirror local up`/,
      );
      for (const r of [region, creds, down, busy])
        expect(r.stderr).not.toMatch(/unexpected|internal error|\n\s+at /);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });

  it("GIVEN Commander's own errors and --help THEN the prefix, a help hint, required options and the task names", async () => {
    const unknown = await cli(["status", "--bogus"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe(
      "cgmirror: unknown option '--bogus'\n(run `cgmirror status --help` for usage)\n",
    );
    const missing = await cli(["backup", "--group", "db"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^cgmirror: required option '--config <file>' not specified/);
    const help = await cli(["backup", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout.replace(/\s+/g, " ")).toMatch(/--config <file> the group config \(required\)/);
    expect(help.stdout.replace(/\s+/g, " ")).toMatch(
      /one of AcquireLock, Recover, Snapshot, CheckSnapshots, Plan, Transfer, Prepare, Commit, Revert, ReleaseLock/,
    );
    expect(help.stdout).toMatch(/--state-dir <dir>/);
    const top = await cli(["--help"]);
    expect(top.stdout).toMatch(/Exit codes: 0 success/);
    const gen0 = await cli(["restore", "--group", "db", "--local", "--generation", "0", "--to-dir", "x"]);
    expect(gen0.code).toBe(2);
    expect(gen0.stderr).toMatch(/expected a generation number of 1 or more/);
  });

  it("GIVEN the local stack runs WHEN local up again THEN it says already running; volume delete removes a volume", async () => {
    const again = await cli(["local", "up"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/^local stack already running \(pid \d+\)/);
    expect((await cli(["local", "volume", "create", "--id", "vol-tmp", "--size-gib", "1"])).code).toBe(0);
    const del = await cli(["local", "volume", "delete", "--id", "vol-tmp"]);
    expect(del.code).toBe(0);
    const list = JSON.parse((await cli(["local", "volume", "list", "--json"])).stdout) as { id: string }[];
    expect(list.map((v) => v.id)).toEqual(["vol-a", "vol-b"]);
    const missing = await cli(["local", "volume", "delete", "--id", "vol-tmp"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/no simulated volume vol-tmp/);
  });

  it("GIVEN a local backup with its own TMPDIR THEN nothing is left in it, and report writes one self-contained page", async () => {
    const tmp = await mkdtemp(join(tmpdir(), "cgm-tmpcheck-"));
    try {
      await cli([
        "local",
        "volume",
        "write",
        "--id",
        "vol-a",
        "--offset",
        "9999999",
        "--random",
        "100",
        "--seed",
        "3",
      ]);
      const b = await cli(["backup", "--group", "db", "--config", "group.json", "--local"], {
        TMPDIR: tmp,
        CGM_CACHE_DIR: join(tmp, "..", "cgm-cache-elsewhere"),
      });
      expect(b.code).toBe(0);
      expect(await readdir(tmp)).toEqual([]);
    } finally {
      await rm(tmp, { recursive: true, force: true });
      await rm(join(tmp, "..", "cgm-cache-elsewhere"), { recursive: true, force: true });
    }
    const out = join(cwd, "report.html");
    const r = await cli(["report", "--group", "db", "--config", "group.json", "--local", "--out", out]);
    expect(r.code).toBe(0);
    const html = await readFile(out, "utf8");
    expect(html).toMatch(/<svg data-chart="rpo"/);
    expect(html).not.toMatch(/(src|href)=["']?https?:/);
  });
});
