/**
 * status / restore / verify through the real CLI, on a repository written by the format core into the
 * local stack's bucket (the whole-workflow path is covered by test/workflow).
 */
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3ObjectStore } from "../../adapters/s3-store.ts";
import { createRepo, keys } from "../../core/format/layout.ts";
import { writeGeneration } from "../../core/protocol/write-generation.ts";
import type { LocalEndpoints } from "../../local/stack.ts";
import { cgmirror, cliLocalStack } from "../support/cli.ts";

const BLOCK = 524_288;
const SIZE = 16 * BLOCK;
let cwd: string;
let s3: S3Client;
let e: LocalEndpoints;
const images: Record<number, Record<string, Buffer>> = {};

let stack: Awaited<ReturnType<typeof cliLocalStack>>;

beforeAll(async () => {
  stack = await cliLocalStack("cgm-cli-repo-");
  ({ cwd, s3, endpoints: e } = stack);
  const repo = createRepo({
    store: new S3ObjectStore({ client: s3, bucket: e.bucket }),
    prefix: "groups/db",
    group: "db",
  });
  const current: Record<string, Buffer> = { "vol-a": Buffer.alloc(SIZE), "vol-b": Buffer.alloc(SIZE) };
  for (const gen of [1, 2]) {
    const volumes = Object.keys(current).map((volumeId) => {
      const writes = [gen, gen + 5].map((block) => ({ block, data: randomBytes(BLOCK) }));
      for (const w of writes) w.data.copy(current[volumeId]!, w.block * BLOCK);
      return { volumeId, sizeBytes: SIZE, blocks: writes };
    });
    await writeGeneration(repo, { runId: `run-${gen}`, volumes });
    images[gen] = Object.fromEntries(Object.entries(current).map(([k, v]) => [k, Buffer.from(v)]));
  }
});
afterAll(async () => {
  await stack?.down();
});

describe("cgmirror status / restore / verify", () => {
  it("GIVEN two committed generations WHEN status --json THEN HEAD is 2 and both generations are listed", async () => {
    const r = await cgmirror(["status", "--group", "db", "--local", "--json"], { cwd });
    expect(r.code).toBe(0);
    const status = JSON.parse(r.stdout);
    expect(status.head.generation).toBe(2);
    expect(status.generations.map((g: { generation: number }) => g.generation)).toEqual([1, 2]);
    expect(status.generations[1].volumes).toBe(2);
    expect(status.lock).toMatchObject({ runId: "run-2", released: true, live: false });
    expect(status.newestCommittedAgeSeconds).toBeGreaterThanOrEqual(0);
  });

  it("GIVEN generation 1 WHEN restored THEN every volume image equals the image of that generation", async () => {
    const dir = join(cwd, "restore-1");
    const r = await cgmirror(["restore", "--group", "db", "--local", "--generation", "1", "--to-dir", dir], {
      cwd,
    });
    expect(r.code).toBe(0);
    for (const vol of ["vol-a", "vol-b"]) {
      expect((await readFile(join(dir, `${vol}.img`))).equals(images[1]![vol]!)).toBe(true);
    }
    const again = await cgmirror(["restore", "--group", "db", "--local", "--to-dir", dir], { cwd });
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/already exist.*--force/);
    const forced = await cgmirror(
      ["restore", "--group", "db", "--local", "--to-dir", dir, "--volume", "vol-b", "--force"],
      {
        cwd,
      },
    );
    expect(forced.code).toBe(0);
    expect((await readFile(join(dir, "vol-b.img"))).equals(images[2]!["vol-b"]!)).toBe(true);
  });

  it("GIVEN an intact repository WHEN verify --read-data THEN it reports OK, and a damaged segment makes it fail", async () => {
    const ok = await cgmirror(["verify", "--group", "db", "--local", "--read-data", "--json"], { cwd });
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout).ok).toBe(true);

    const store = new S3ObjectStore({ client: s3, bucket: e.bucket });
    const repo = createRepo({ store, prefix: "groups/db", group: "db" });
    const segPrefix = keys.segment(repo, "00").replace(/00\/00\.seg$/, "");
    let victim: string | undefined;
    for await (const o of store.list(segPrefix)) victim ??= o.key;
    expect(victim).toBeDefined();
    const body = Buffer.from((await store.get(victim!)).body);
    body[100] = (body[100]! ^ 0xff) & 0xff;
    await store.put(victim!, body);
    const bad = await cgmirror(["verify", "--group", "db", "--local", "--read-data"], { cwd });
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/PROBLEM/);
  });

  it("fails with one clear line for a missing generation, a --to-dir that is a file, and an unknown group", async () => {
    const missing = await cgmirror(
      ["restore", "--group", "db", "--local", "--generation", "9", "--to-dir", join(cwd, "x")],
      {
        cwd,
      },
    );
    expect(missing.code).toBe(2);
    expect(missing.stderr.trim()).toBe(
      "cgmirror: generation 9 is not a committed generation of group db; it has generations 1-2",
    );
    const file = join(cwd, "a-file");
    await writeFile(file, "x");
    const toFile = await cgmirror(["restore", "--group", "db", "--local", "--to-dir", file], { cwd });
    expect(toFile.code).toBe(2);
    expect(toFile.stderr).toMatch(/is a file, not a directory/);
    const none = await cgmirror(["status", "--group", "nope", "--local"], { cwd });
    expect(none.code).toBe(0);
    expect(none.stdout).toMatch(/no committed generation yet/);
  });

  it("GIVEN HEAD was deleted in the console WHEN repair runs THEN it explains, changes nothing without --yes, and restores HEAD with --yes", async () => {
    const store = new S3ObjectStore({ client: s3, bucket: e.bucket });
    const repo = createRepo({ store, prefix: "groups/db", group: "db" });
    await store.delete(keys.head(repo)); // a delete marker, like `aws s3 rm`
    const status = await cgmirror(["status", "--group", "db", "--local"], { cwd });
    expect(status.stdout).toMatch(/no committed generation yet/);
    const dry = await cgmirror(["repair", "--group", "db", "--local"], { cwd });
    expect(dry.code).toBe(1);
    expect(dry.stdout).toMatch(/needs repair: .*HEAD was deleted/);
    expect(dry.stdout).toMatch(/repair would point HEAD at generation 2/);
    expect(dry.stdout).toMatch(/nothing changed; re-run with --yes/);
    const fixed = await cgmirror(["repair", "--group", "db", "--local", "--yes"], { cwd });
    expect(fixed.code).toBe(0);
    expect(fixed.stdout).toMatch(/repaired: HEAD is generation 2 \(ok\)/);
    const after = await cgmirror(["status", "--group", "db", "--local", "--json"], { cwd });
    expect(JSON.parse(after.stdout).head.generation).toBe(2);
    const again = await cgmirror(["repair", "--group", "db", "--local"], { cwd });
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/consistent: HEAD is generation 2; nothing to repair/);
  });
});
