/**
 * Vitest global setup: starts the local S3 server once for the whole run (unless CGM_S3_ENDPOINT points
 * the suite at another endpoint) and stops it when the run ends.
 */
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
  const external = s3TargetFromEnv(process.env);
  if (external) {
    project.provide("s3", external);
    return async () => {};
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
    return () => server.stop();
  } catch (err) {
    if (err instanceof PrerequisiteError) {
      console.error(`cgmirror test setup: ${err.message}`);
      process.exit(1);
    }
    throw err;
  }
}
