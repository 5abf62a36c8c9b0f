/**
 * Where a CLI command's data lives: the embedded local stack (`--local`), an S3-compatible endpoint named
 * by the environment (`CGM_S3_ENDPOINT` or `AWS_ENDPOINT_URL_S3`, as printed by `cgmirror local env`), or
 * AWS. The local stack's daemon is attached to without loading the servers' code.
 */
import { S3Client } from "@aws-sdk/client-s3";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { createRepo, type Repo } from "#core/format/layout.ts";
import { runningStack } from "../local/names.ts";
import type { LocalEndpoints } from "../local/stack.ts";
import { UsageError } from "./errors.ts";
import { stateDirOf } from "./state.ts";

export interface CliContext {
  readonly s3: S3Client;
  /** The local stack's endpoints, with --local. */
  readonly stack: LocalEndpoints | undefined;
  /** The bucket commands use when none is given. */
  readonly defaultBucket: string | undefined;
  repo(group: string, location?: { bucket?: string; prefix?: string }): Repo;
  close(): Promise<void>;
}

export interface ContextOptions {
  readonly local?: boolean;
  readonly stateDir?: string;
  readonly log?: (line: string) => void;
}

/** The repository prefix of a group when the config names none (same default as the group config). */
export function defaultPrefix(group: string): string {
  return `groups/${group}`;
}

export async function openContext(options: ContextOptions): Promise<CliContext> {
  let stack: LocalEndpoints | undefined;
  let stop: () => Promise<void> = async () => {};
  let s3: S3Client;
  let defaultBucket: string | undefined;
  if (options.local) {
    const stateDir = stateDirOf(options);
    stack = await runningStack(stateDir);
    if (!stack) {
      const { attachOrStartLocalStack } = await import("../local/stack.ts");
      const started = await attachOrStartLocalStack({
        stateDir,
        ...(options.log ? { log: options.log } : {}),
      });
      stack = started;
      stop = () => started.stop();
    }
    s3 = new S3Client({
      endpoint: stack.s3Endpoint,
      region: stack.region,
      forcePathStyle: true,
      credentials: { accessKeyId: stack.accessKeyId, secretAccessKey: stack.secretAccessKey },
    });
    defaultBucket = stack.bucket;
  } else {
    const s3Endpoint = process.env.CGM_S3_ENDPOINT;
    s3 = new S3Client({ ...(s3Endpoint ? { endpoint: s3Endpoint, forcePathStyle: true } : {}) });
    defaultBucket = process.env.CGM_BUCKET;
  }
  return {
    s3,
    stack,
    defaultBucket,
    repo(group, location = {}) {
      const bucket = location.bucket ?? defaultBucket;
      if (!bucket) {
        throw new UsageError(
          'no bucket: give --bucket, --config, or --local (or set CGM_BUCKET, e.g. with `eval "$(npx cgmirror local env)"`)',
        );
      }
      const store = new S3ObjectStore({ client: s3, bucket });
      return createRepo({ store, prefix: location.prefix ?? defaultPrefix(group), group });
    },
    async close() {
      s3.destroy();
      await stop();
    },
  };
}
