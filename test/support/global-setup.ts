/**
 * Vitest global setup: gives the run its own temporary directory (TMPDIR for every worker and every
 * child process, so anything a test or the code under test leaves there is removed with it at the end,
 * and `npm test` leaves nothing in the caller's $TMPDIR), a definition cache inside it (CGM_CACHE_DIR:
 * one synth per config for the whole run, shared by workers and CLI processes), and starts the local S3
 * server once for the whole run (unless CGM_S3_ENDPOINT points the suite at another endpoint). The S3
 * server's build is not part of that cache: it is built (once) where it is cached outside the run and
 * linked into the run's cache, so a run does not rebuild it (15 s of Go linking at load, minutes with a
 * cold Go build cache).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { TestProject } from "vitest/node";
import {
  ensureS3ServerBinary,
  PrerequisiteError,
  s3ServerBinaryPath,
} from "../../local/s3-server/install.ts";
import { startS3Server } from "../../local/s3-server/server.ts";
import { type S3Target, s3TargetFromEnv } from "./s3-target.ts";

declare module "vitest" {
  export interface ProvidedContext {
    s3: S3Target;
  }
}

async function buildS3Server(): Promise<string> {
  try {
    return await ensureS3ServerBinary((l) => console.error(l));
  } catch (err) {
    if (err instanceof PrerequisiteError) {
      console.error(`cgmirror test setup: ${err.message}`);
      process.exit(1);
    }
    throw err;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const external = s3TargetFromEnv(process.env);
  // The build, where it is kept between runs (before CGM_CACHE_DIR points into the run's directory).
  const builtS3Server = external
    ? existsSync(s3ServerBinaryPath())
      ? s3ServerBinaryPath()
      : undefined
    : await buildS3Server();
  const runTmp = mkdtempSync(join(tmpdir(), "cgmirror-test-run-"));
  const previousTmp = process.env.TMPDIR;
  process.env.TMPDIR = runTmp;
  if (process.env.CGM_CACHE_DIR === undefined) {
    process.env.CGM_CACHE_DIR = join(runTmp, "cache");
    if (builtS3Server) {
      const linked = dirname(s3ServerBinaryPath());
      mkdirSync(dirname(linked), { recursive: true });
      symlinkSync(dirname(builtS3Server), linked);
    }
  }
  const removeRunTmp = () => {
    if (previousTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previousTmp;
    rmSync(runTmp, { recursive: true, force: true });
  };
  if (external) {
    project.provide("s3", external);
    return async () => removeRunTmp();
  }
  try {
    const server = await startS3Server({ log: (l) => console.error(l) });
    project.provide("s3", {
      endpoint: server.endpoint,
      region: server.region,
      accessKeyId: server.accessKeyId,
      secretAccessKey: server.secretAccessKey,
      forcePathStyle: true,
      external: false,
    });
    return async () => {
      await server.stop();
      removeRunTmp();
    };
  } catch (err) {
    removeRunTmp();
    if (err instanceof PrerequisiteError) {
      console.error(`cgmirror test setup: ${err.message}`);
      process.exit(1);
    }
    throw err;
  }
}
