import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ListObjectVersionsCommand, type S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LocalEndpoints } from "#local/stack.ts";
import { cgmirror, cliLocalStack } from "../support/cli.ts";

let cwd: string;
let e: LocalEndpoints;
let s3: S3Client;

let stack: Awaited<ReturnType<typeof cliLocalStack>>;

beforeAll(async () => {
  stack = await cliLocalStack("cgm-cli-backup-");
  ({ cwd, s3, endpoints: e } = stack);
  for (const [id, inst] of [
    ["vol-a", "i-a"],
    ["vol-b", "i-b"],
  ]) {
    expect(
      (
        await cgmirror(["local", "volume", "create", "--id", id!, "--size-gib", "1", "--instance", inst!], {
          cwd,
        })
      ).code,
    ).toBe(0);
  }
  await cgmirror(["local", "volume", "write", "--id", "vol-a", "--offset", "777", "--random", "600000"], {
    cwd,
  });
  expect(
    (await cgmirror(["config", "init", "--group", "db", "--out", "group.json", "--local"], { cwd })).code,
  ).toBe(0);
});
afterAll(async () => {
  await stack?.down();
});

async function versions(): Promise<string[]> {
  const out = await s3.send(new ListObjectVersionsCommand({ Bucket: e.bucket, Prefix: "groups/db/" }));
  return [...(out.Versions ?? []), ...(out.DeleteMarkers ?? [])].map((v) => `${v.Key}@${v.VersionId}`).sort();
}

describe("cgmirror backup --local", () => {
  it("GIVEN a starter config WHEN backed up THEN it commits generation 1 (exit 0), and a check of the config passes", async () => {
    expect((await cgmirror(["config", "check", "group.json"], { cwd })).code).toBe(0);
    const r = await cgmirror(["backup", "--group", "db", "--config", "group.json", "--local", "--json"], {
      cwd,
    });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ outcome: "committed", generation: 1, group: "db" });
  });

  it("GIVEN an injected slave failure WHEN backed up THEN it reverts (exit 1) and HEAD stays at generation 1", async () => {
    await cgmirror(["local", "volume", "write", "--id", "vol-b", "--offset", "0", "--random", "1000"], {
      cwd,
    });
    const r = await cgmirror(
      ["backup", "--group", "db", "--config", "group.json", "--local", "--inject-failure", "Transfer:vol-b"],
      { cwd },
    );
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^reverted: group db is unchanged; cause: TransferFailedError/m);
    const status = JSON.parse(
      (await cgmirror(["status", "--group", "db", "--local", "--json"], { cwd })).stdout,
    );
    expect(status.head.generation).toBe(1);
  });

  it("fails with one clear line and changes nothing in the bucket for a config naming a volume that does not exist", async () => {
    const config = JSON.parse(await readFile(join(cwd, "group.json"), "utf8"));
    config.volumes.push({ id: "vol-zz" });
    await writeFile(join(cwd, "missing.json"), JSON.stringify(config));
    const before = await versions();
    const r = await cgmirror(["backup", "--group", "db", "--config", "missing.json", "--local"], { cwd });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/volume vol-zz does not exist in the local stack/);
    expect(await versions()).toEqual(before);
  });

  it("fails with the list of problems and changes nothing for a malformed config", async () => {
    await writeFile(join(cwd, "bad.json"), '{"group": "db", "volumes": [{"id": "disk-1"}]');
    const before = await versions();
    const r = await cgmirror(["backup", "--group", "db", "--config", "bad.json", "--local"], { cwd });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^cgmirror: invalid group config bad.json/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(await versions()).toEqual(before);
  });
});
