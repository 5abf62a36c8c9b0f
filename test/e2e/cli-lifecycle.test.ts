/**
 * forget / prune / restore --to-snapshots through the real CLI against the local stack (S3 server and
 * EBS emulator), on a repository written by the format core.
 */
import { randomBytes } from "node:crypto";
import type { S3Client } from "@aws-sdk/client-s3";
import { ebsAdmin } from "@cgmirror/ebs-emulator/admin-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3ObjectStore } from "../../adapters/s3-store.ts";
import { createRepo } from "../../core/format/layout.ts";
import { writeGeneration } from "../../core/protocol/write-generation.ts";
import type { LocalEndpoints } from "../../local/stack.ts";
import { cgmirror, cliLocalStack } from "../support/cli.ts";

const BLOCK = 524_288;
const SIZE = 16 * BLOCK;
let cwd: string;
let s3: S3Client;
let e: LocalEndpoints;
let stack: Awaited<ReturnType<typeof cliLocalStack>>;

beforeAll(async () => {
  stack = await cliLocalStack("cgm-cli-lifecycle-");
  ({ cwd, s3, endpoints: e } = stack);
  const repo = createRepo({
    store: new S3ObjectStore({ client: s3, bucket: e.bucket }),
    prefix: "groups/db",
    group: "db",
  });
  for (const gen of [1, 2, 3, 4]) {
    const volumes = ["vol-a", "vol-b"].map((volumeId) => ({
      volumeId,
      sizeBytes: SIZE,
      // Blocks 0-3 rewritten every generation (garbage once older generations go), one new block each.
      blocks: [0, 1, 2, 3, 4 + gen].map((block) => ({ block, data: randomBytes(BLOCK) })),
    }));
    await writeGeneration(repo, { runId: `run-${gen}`, volumes });
  }
});
afterAll(async () => {
  await stack?.down();
});

const base = ["--group", "db", "--local"];

describe("cgmirror forget / prune / restore --to-snapshots", () => {
  it("GIVEN four generations WHEN forget --keep-last 2 THEN the dry run shows the plan, the real one forgets 1 and 2, and prune reclaims their data", async () => {
    const dry = await cgmirror(["forget", ...base, "--keep-last", "2", "--dry-run", "--json"], { cwd });
    expect(dry.code, dry.stderr).toBe(0);
    const plan = JSON.parse(dry.stdout);
    expect(plan).toMatchObject({ dryRun: true, forget: [1, 2], keep: [3, 4] });
    expect(plan.decisions[0]).toMatchObject({ generation: 4, reasons: ["head", "last"] });

    const text = await cgmirror(["forget", ...base, "--keep-last", "2"], { cwd });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/forgot 2 generation\(s\) \(1, 2\), kept 2/);

    const status = JSON.parse((await cgmirror(["status", ...base, "--json"], { cwd })).stdout);
    expect(status.generations.map((g: { generation: number }) => g.generation)).toEqual([3, 4]);

    const pruneDry = JSON.parse((await cgmirror(["prune", ...base, "--dry-run", "--json"], { cwd })).stdout);
    expect(pruneDry.dryRun).toBe(true);
    expect(pruneDry.objectsDeleted).toBeGreaterThan(0);
    const pruned = await cgmirror(["prune", ...base, "--json"], { cwd });
    expect(pruned.code, pruned.stderr).toBe(0);
    const report = JSON.parse(pruned.stdout);
    expect(report.deleted.segments.count + report.repack.segments).toBeGreaterThan(0);
    expect(report.done).toBe(true);
    const verify = await cgmirror(["verify", ...base, "--generation", "3", "--read-data"], { cwd });
    expect(verify.code, verify.stdout).toBe(0);
  });

  it("fails with a usage error when forget has no policy (no flags, no config retention)", async () => {
    const r = await cgmirror(["forget", ...base], { cwd });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no retention policy/);
  });

  it("GIVEN HEAD WHEN restore --to-snapshots THEN one completed, tagged snapshot per volume; restoring generation 3 next is incremental on it", async () => {
    const r = await cgmirror(["restore", ...base, "--to-snapshots", "--json"], { cwd });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.generation).toBe(4);
    expect(out.volumes).toHaveLength(2);
    const admin = ebsAdmin(e.ebsEndpoint);
    for (const v of out.volumes) {
      const d = await admin.describeSnapshot(v.snapshotId);
      expect(d?.status).toBe("completed");
      expect(d?.tags).toContainEqual({ Key: "cgmirror:source-volume", Value: v.volumeId });
      expect(v.blocksWritten).toBe(8); // blocks 0-3 and the one new block of each generation 1-4
    }
    const inc = await cgmirror(["restore", ...base, "--to-snapshots", "--generation", "3", "--json"], {
      cwd,
    });
    expect(inc.code, inc.stderr).toBe(0);
    const incOut = JSON.parse(inc.stdout);
    for (const v of incOut.volumes) {
      expect(v.parentGeneration).toBe(4);
      // Blocks 0-3 differ, and block 8 (generation 4's) becomes zero.
      expect(v).toMatchObject({ blocksWritten: 5, zeroBlocks: 1 });
    }
    const bad = await cgmirror(["restore", ...base, "--to-snapshots", "--to-dir", "x"], { cwd });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/exactly one of --to-dir/);
  });
});
