/**
 * Vitest global setup: gives the run its own temporary directory (TMPDIR for every worker and every
 * child process, so anything a test or the code under test leaves there is removed with it at the end,
 * and `npm test` leaves nothing in the caller's $TMPDIR), a definition cache inside it (CGM_CACHE_DIR:
 * one synth per config for the whole run, shared by workers and CLI processes), and starts the local S3
 * server once for the whole run (unless CGM_S3_ENDPOINT points the suite at another endpoint).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { PrerequisiteError } from "../../local/s3-server/install.ts";
import { startS3Server } from "../../local/s3-server/server.ts";
import { type S3Target, s3TargetFromEnv } from "./s3-target.ts";

declare module "vitest" {
  export interface ProvidedContext {
    s3: S3Target;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const runTmp = mkdtempSync(join(tmpdir(), "cgmirror-test-run-"));
  const previousTmp = process.env.TMPDIR;
  process.env.TMPDIR = runTmp;
  process.env.CGM_CACHE_DIR ??= join(runTmp, "cache");
  const removeRunTmp = () => {
    if (previousTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previousTmp;
    rmSync(runTmp, { recursive: true, force: true });
  };
  const external = s3TargetFromEnv(process.env);
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
