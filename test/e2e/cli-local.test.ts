import { mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isAlive } from "#local/stack.ts";
import { seededBytes } from "../../cli/main.ts";
import { cgmirror } from "../support/cli.ts";

let cwd: string;
beforeAll(async () => {
  cwd = await mkdtemp(join(tmpdir(), "cgm-cli-"));
});
afterAll(async () => {
  await cgmirror(["local", "down"], { cwd });
  await rm(cwd, { recursive: true, force: true });
});

describe("cgmirror local", () => {
  it("GIVEN local up WHEN env is printed THEN it names live endpoints, and local down stops them", async () => {
    const up = await cgmirror(["local", "up", "--json"], { cwd });
    expect(up.code).toBe(0);
    const endpoints = JSON.parse(up.stdout) as { pid: number; s3Endpoint: string; ebsEndpoint: string };
    expect(isAlive(endpoints.pid)).toBe(true);

    const env = await cgmirror(["local", "env"], { cwd });
    expect(env.code).toBe(0);
    expect(env.stdout).toContain(`export CGM_S3_ENDPOINT=${endpoints.s3Endpoint}`);
    expect(env.stdout).toContain(`export CGM_EBS_ENDPOINT=${endpoints.ebsEndpoint}`);
    const s3 = await fetch(endpoints.s3Endpoint);
    expect(s3.headers.get("x-amz-request-id")).toBeTruthy();

    const down = await cgmirror(["local", "down"], { cwd });
    expect(down.code).toBe(0);
    expect(isAlive(endpoints.pid)).toBe(false);
    const envAfter = await cgmirror(["local", "env"], { cwd });
    expect(envAfter.code).not.toBe(0);
    expect(envAfter.stderr).toMatch(/not running/);
  });

  it("GIVEN a volume WHEN written at an unaligned offset from a file and with seeded random bytes THEN read gives those bytes", async () => {
    expect(
      (
        await cgmirror(
          ["local", "volume", "create", "--id", "vol-a", "--size-gib", "1", "--instance", "i-a"],
          { cwd },
        )
      ).code,
    ).toBe(0);
    const file = join(cwd, "data.bin");
    await writeFile(file, Buffer.from("hello, consistency group"));
    expect(
      (
        await cgmirror(["local", "volume", "write", "--id", "vol-a", "--offset", "524280", "--file", file], {
          cwd,
        })
      ).code,
    ).toBe(0);
    const rnd = await cgmirror(
      [
        "local",
        "volume",
        "write",
        "--id",
        "vol-a",
        "--offset",
        "1000001",
        "--random",
        "70000",
        "--seed",
        "7",
        "--json",
      ],
      { cwd },
    );
    expect(rnd.code).toBe(0);
    expect(JSON.parse(rnd.stdout)).toMatchObject({ volumeId: "vol-a", offset: 1000001, bytes: 70000 });

    const out = join(cwd, "vol-a.img");
    expect((await cgmirror(["local", "volume", "read", "--id", "vol-a", "--out", out], { cwd })).code).toBe(
      0,
    );
    // The size and the written ranges (not the whole 1 GiB image: reading its holes costs seconds).
    const image = await open(out, "r");
    try {
      expect((await image.stat()).size).toBe(1024 ** 3);
      const range = async (at: number, n: number) => {
        const { buffer, bytesRead } = await image.read(Buffer.alloc(n), 0, n, at);
        return buffer.subarray(0, bytesRead);
      };
      expect((await range(524280, 24)).toString()).toBe("hello, consistency group");
      expect((await range(1000001, 70000)).equals(seededBytes(70000, 7))).toBe(true);
    } finally {
      await image.close();
    }
  });

  it("fails with one clear line and exit 2 on bad input, and creates nothing", async () => {
    const bad = await cgmirror(["local", "volume", "create", "--id", "vol-x", "--size-gib", "many"], { cwd });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/expected a whole number/);
    const both = await cgmirror(["local", "volume", "write", "--id", "vol-a", "--offset", "0"], { cwd });
    expect(both.code).toBe(2);
    expect(both.stderr.trim()).toBe("cgmirror: give exactly one of --file <path> or --random <bytes>");
    const unknown = await cgmirror(
      ["local", "volume", "write", "--id", "vol-zz", "--offset", "0", "--random", "1"],
      { cwd },
    );
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/no simulated volume vol-zz/);
    expect(unknown.stderr).not.toMatch(/\n\s+at /);
    const list = await cgmirror(["local", "volume", "list", "--json"], { cwd });
    expect((JSON.parse(list.stdout) as { id: string }[]).map((v) => v.id)).toEqual(["vol-a"]);
  });
});
