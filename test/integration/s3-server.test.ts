import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isAlive } from "#local/stack.ts";
import { ensureS3ServerBinary, PrerequisiteError } from "../../local/s3-server/install.ts";
import { startS3Server } from "../../local/s3-server/server.ts";

const saved = { PATH: process.env.PATH, CGM_CACHE_DIR: process.env.CGM_CACHE_DIR };
afterEach(() => {
  process.env.PATH = saved.PATH;
  if (saved.CGM_CACHE_DIR === undefined) delete process.env.CGM_CACHE_DIR;
  else process.env.CGM_CACHE_DIR = saved.CGM_CACHE_DIR;
});

describe("local S3 server launcher", () => {
  it("GIVEN a start WHEN stopped THEN no process is left and the temporary data directory is gone", async () => {
    const server = await startS3Server();
    expect(server.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(isAlive(server.pid)).toBe(true);
    expect(existsSync(server.dataDir)).toBe(true);
    await server.stop();
    expect(isAlive(server.pid)).toBe(false);
    expect(existsSync(server.dataDir)).toBe(false);
  });

  it("fails with a clear PrerequisiteError when the port is taken", async () => {
    const blocker = createServer();
    const port = await new Promise<number>((r) =>
      blocker.listen(0, "127.0.0.1", () => r((blocker.address() as { port: number }).port)),
    );
    try {
      await expect(startS3Server({ port, startTimeoutMs: 5000 })).rejects.toThrow(PrerequisiteError);
    } finally {
      blocker.close();
    }
  });

  it("fails with a clear PrerequisiteError naming Go when the binary is not cached and Go is missing", async () => {
    const empty = await mkdtemp(join(tmpdir(), "cgm-cache-"));
    try {
      process.env.CGM_CACHE_DIR = empty;
      process.env.PATH = "/nonexistent";
      await expect(ensureS3ServerBinary()).rejects.toThrow(/Go is needed to build the local S3 server/);
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});
