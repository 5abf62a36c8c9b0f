/**
 * Where a CLI command's data lives: the embedded local stack (`--local`), an S3-compatible endpoint named
 * by the environment (`CGM_S3_ENDPOINT`, as printed by `cgmirror local env`), or AWS.
 */
import { resolve } from "node:path";
import { EBSClient } from "@aws-sdk/client-ebs";
import { S3Client } from "@aws-sdk/client-s3";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { createRepo, type Repo } from "#core/layout.ts";
import { attachOrStartLocalStack, defaultStateDir, type LocalStack } from "../local/stack.ts";
import { UsageError } from "./output.ts";

export interface CliContext {
  readonly s3: S3Client;
  readonly ebs: EBSClient;
  /** The local stack, with --local. */
  readonly stack: LocalStack | undefined;
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
  let stack: LocalStack | undefined;
  let s3: S3Client;
  let ebs: EBSClient;
  let defaultBucket: string | undefined;
  if (options.local) {
    const stateDir = resolve(options.stateDir ?? process.env.CGM_LOCAL_STATE_DIR ?? defaultStateDir());
    stack = await attachOrStartLocalStack({ stateDir, ...(options.log ? { log: options.log } : {}) });
    const credentials = { accessKeyId: stack.accessKeyId, secretAccessKey: stack.secretAccessKey };
    s3 = new S3Client({
      endpoint: stack.s3Endpoint,
      region: stack.region,
      forcePathStyle: true,
      credentials,
    });
    ebs = new EBSClient({ endpoint: stack.ebsEndpoint, region: stack.region, credentials });
    defaultBucket = stack.bucket;
  } else {
    const s3Endpoint = process.env.CGM_S3_ENDPOINT;
    const ebsEndpoint = process.env.CGM_EBS_ENDPOINT;
    s3 = new S3Client({ ...(s3Endpoint ? { endpoint: s3Endpoint, forcePathStyle: true } : {}) });
    ebs = new EBSClient({ ...(ebsEndpoint ? { endpoint: ebsEndpoint } : {}) });
    defaultBucket = process.env.CGM_BUCKET;
  }
  return {
    s3,
    ebs,
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
      ebs.destroy();
      await stack?.stop();
    },
  };
}
