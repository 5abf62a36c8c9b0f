/**
 * forget / prune / restore --to-snapshots through the real CLI against the local stack (S3 server and
 * EBS emulator), on a repository written by the format core. `restore --local --to-snapshots` runs the
 * restore state machine through the local runner (its execution named in the output).
 */
import { randomBytes } from "node:crypto";
import type { S3Client } from "@aws-sdk/client-s3";
import { ebsAdmin } from "@cgmirror/ebs-emulator/admin-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3ObjectStore } from "../../adapters/s3-store.ts";
import { createRepo, keys, type Repo } from "../../core/format/layout.ts";
import { writeGeneration } from "../../core/protocol/write-generation.ts";
import type { LocalEndpoints } from "../../local/stack.ts";
import { cgmirror, cliLocalStack } from "../support/cli.ts";

const BLOCK = 524_288;
const SIZE = 16 * BLOCK;
let cwd: string;
let s3: S3Client;
let e: LocalEndpoints;
let stack: Awaited<ReturnType<typeof cliLocalStack>>;
let repo: Repo;

beforeAll(async () => {
  stack = await cliLocalStack("cgm-cli-lifecycle-");
  ({ cwd, s3, endpoints: e } = stack);
  repo = createRepo({
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

  it("GIVEN HEAD WHEN restore --to-snapshots THEN the restore state machine runs locally: one completed, tagged snapshot per volume; restoring generation 3 next is incremental on it", async () => {
    const r = await cgmirror(["restore", ...base, "--to-snapshots", "--json"], { cwd });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    // It went through the local runner: the execution is named by the restore id, as in AWS.
    expect(out.execution).toMatch(/^restore-\d{8}T\d{6}-[0-9a-f]{8}$/);
    expect(out.execution).toBe(out.restoreId);
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

  it("GIVEN --parent-snapshot naming the snapshot of an earlier restore WHEN restore --to-snapshots --full is not given THEN the state machine writes only the differing blocks on it", async () => {
    const first = JSON.parse(
      (
        await cgmirror(["restore", ...base, "--to-snapshots", "--volume", "vol-a", "--full", "--json"], {
          cwd,
        })
      ).stdout,
    );
    const parent = first.volumes[0].snapshotId as string;
    const r = await cgmirror(
      [
        "restore",
        ...base,
        "--to-snapshots",
        "--generation",
        "3",
        "--volume",
        "vol-a",
        "--parent-snapshot",
        `vol-a=${parent}`,
      ],
      { cwd },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      /restored into 1 snapshot\(s\) by local execution restore-\S+ of the restore state machine/,
    );
    expect(r.stdout).toContain(`${parent} (gen 4)`);
    expect(r.stdout).toMatch(/vol-a\s+snap-[0-9a-f]+\s+snap-[0-9a-f]+ \(gen 4\)\s+5\s+1\s+completed/);
  });

  it("GIVEN a failure injected into one volume's RestoreVolume task WHEN restore --local --to-snapshots THEN it exits 1 naming the execution, and no snapshot of the restore is left", async () => {
    const admin = ebsAdmin(e.ebsEndpoint);
    const before = (await admin.listSnapshots()).map((s) => s.snapshotId).sort();
    const r = await cgmirror(
      ["restore", ...base, "--to-snapshots", "--full", "--inject-failure", "RestoreVolume:vol-b"],
      { cwd },
    );
    expect(r.code, r.stderr).toBe(1);
    const m =
      /local execution (restore-\S+), failure injected\): InjectedFailure - restore \1 failed \(.*vol-b.*\); deleted the (\d) snapshot/.exec(
        r.stderr,
      );
    expect(m, r.stderr).not.toBeNull();
    expect(Number(m![2])).toBeGreaterThanOrEqual(1);
    const after = await admin.listSnapshots();
    expect(
      after.filter((s) => s.tags.some((t) => t.Key === "cgmirror:restore-id" && t.Value === m![1])),
    ).toEqual([]);
    expect(after.map((s) => s.snapshotId).sort()).toEqual(before);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    // Every restore so far released its read lease (docs/format.md §10.2), the failed one included.
    const leases = [];
    for await (const o of repo.store.listVersions(keys.readLeasesPrefix(repo))) leases.push(o.key);
    expect(leases).toEqual([]);

    const usage = await cgmirror(["restore", ...base, "--to-snapshots", "--inject-failure", "Nope"], { cwd });
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--inject-failure takes STATE\[:VOLUME\] with STATE one of PrepareRestore/);
  });
});
