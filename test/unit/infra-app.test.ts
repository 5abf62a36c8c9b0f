/**
 * The CDK app as `npm run synth` runs it (a child process: real esbuild bundling, cdk-nag plugin,
 * no credentials, no network), and one bundled handler loaded the way Lambda loads it.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;

function app(config: string, outdir: string) {
  // A clean environment: no AWS credentials or Region, nothing to call.
  return run(process.execPath, ["infra/bin/app.ts"], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? "",
      CGMIRROR_CONFIG: config,
      CDK_OUTDIR: outdir,
    },
    maxBuffer: 16 * 1024 * 1024,
  });
}

let outdir: string;
let synthOutput: string;
beforeAll(async () => {
  outdir = mkdtempSync(join(tmpdir(), "cgmirror-synth-"));
  const { stdout, stderr } = await app("infra/examples/group.json", outdir);
  synthOutput = stdout + stderr;
}, 300_000);
afterAll(() => rmSync(outdir, { recursive: true, force: true }));

describe("infra/bin/app.ts", () => {
  it("GIVEN the example config and no credentials WHEN synthesized THEN the template and twelve bundles (ten tasks, Prune and RestoreVolume) are written and cdk-nag passes", () => {
    const template = JSON.parse(readFileSync(join(outdir, "Cgmirror.template.json"), "utf8"));
    const functions = Object.values(template.Resources as Record<string, { Type: string }>).filter(
      (r) => r.Type === "AWS::Lambda::Function",
    );
    expect(functions).toHaveLength(12);
    const report = JSON.parse(readFileSync(join(outdir, "validation-report.json"), "utf8"));
    expect(report.pluginReports[0]).toMatchObject({
      pluginName: "AwsSolutions",
      conclusion: "success",
      violations: [],
    });
  });

  it("GIVEN a synth THEN it prints nothing: no bundling lines, no bundle sizes", () => {
    expect(synthOutput).toBe("");
  });

  it("GIVEN the bundled AcquireLock handler WHEN invoked with a bad payload THEN it fails with the contract's error name (ESM bundle loads, names kept)", async () => {
    const template = JSON.parse(readFileSync(join(outdir, "Cgmirror.template.json"), "utf8"));
    const fn = Object.entries(
      template.Resources as Record<string, { Type: string; Properties: { Code: { S3Key: string } } }>,
    ).find(([id, r]) => r.Type === "AWS::Lambda::Function" && id.startsWith("AcquireLockFunction"))?.[1];
    // The asset directory is named by the hash that is also the code's S3 key.
    const hash = fn?.Properties.Code.S3Key.replace(/\.zip$/, "");
    const assetDir = join(outdir, `asset.${hash}`);
    Object.assign(process.env, {
      AWS_REGION: "us-east-1",
      POWERTOOLS_SERVICE_NAME: "cgmirror",
      POWERTOOLS_METRICS_NAMESPACE: "cgmirror",
      POWERTOOLS_LOG_LEVEL: "CRITICAL",
    });
    const mod = (await import(pathToFileURL(join(assetDir, "index.mjs")).href)) as {
      handler: (event: unknown) => Promise<unknown>;
    };
    await expect(mod.handler({ config: {}, runId: "bad id" })).rejects.toMatchObject({
      name: "InvalidInputError",
      message: expect.stringContaining("runId: expected a run id"),
    });
  });

  it("fails with the config's problems on stderr, exit code 1 and no stack trace", async () => {
    const bad = join(mkdtempSync(join(tmpdir(), "cgmirror-bad-")), "group.json");
    writeFileSync(bad, JSON.stringify({ group: "x y", volumes: [], target: { bucket: "B" }, schedule: {} }));
    const error = (await app(bad, join(tmpdir(), "cgmirror-never")).then(
      () => undefined,
      (e: unknown) => e,
    )) as { code: number; stderr: string };
    expect(error.code).toBe(1);
    expect(error.stderr).toContain(`cgmirror: invalid group config ${bad} (4 problems):`);
    expect(error.stderr).toContain("group: expected a group name");
    expect(error.stderr).not.toMatch(/\n\s+at /);
  });
});

describe("infra/bin/app.ts and local-only configs", () => {
  it("fails with one line saying so when given a config made by `cgmirror config init --local` (simulated volumes, the local bucket)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cgm-local-config-"));
    const config = join(dir, "group.json");
    writeFileSync(
      config,
      JSON.stringify({
        group: "db",
        volumes: [{ id: "vol-a", instanceId: "i-a" }],
        target: { bucket: "cgmirror-local", prefix: "groups/db" },
        schedule: { expression: "rate(1 hour)" },
      }),
    );
    const err = (await app(config, join(dir, "out")).then(
      () => undefined,
      (e: { code: number; stderr: string }) => e,
    )) as { code: number; stderr: string } | undefined;
    expect(err?.code).toBe(1);
    expect(err?.stderr.trim()).toMatch(
      /^cgmirror: .*group\.json is a local-only config \(made by `cgmirror config init --local`\?\): target\.bucket is the local stack's bucket "cgmirror-local"; volume vol-a is not an EBS volume id/,
    );
  });
});
