/**
 * The embedded local stack: the S3 server and the EBS direct API emulator, state under one directory
 * (`.cgmirror/` in the current directory for the CLI). Either started in-process for one command
 * (`startLocalStack`) or as a background daemon (`cgmirror local up`, see stack-daemon.ts) whose
 * endpoints are recorded in `<stateDir>/endpoints.json`.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import {
  CreateBucketCommand,
  HeadBucketCommand,
  PutBucketVersioningCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { type EbsEmulator, startEbsEmulator } from "./ebs-emulator/index.ts";
import { startS3Server } from "./s3-server/server.ts";

export const LOCAL_BUCKET = "cgmirror-local";

export interface LocalEndpoints {
  readonly s3Endpoint: string;
  readonly ebsEndpoint: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly bucket: string;
  readonly stateDir: string;
  /** The daemon's pid when the stack runs in the background. */
  readonly pid?: number;
}

export interface LocalStack extends LocalEndpoints {
  /** The in-process emulator (absent when attached to a daemon). */
  readonly emulator?: EbsEmulator;
  stop(): Promise<void>;
}

export function defaultStateDir(cwd: string = process.cwd()): string {
  return resolve(cwd, ".cgmirror");
}

export function endpointsFile(stateDir: string): string {
  return join(stateDir, "endpoints.json");
}

/** The environment that points the AWS SDK (and every cgmirror command) at the local stack. */
export function localEnvironment(e: LocalEndpoints): Record<string, string> {
  return {
    CGM_S3_ENDPOINT: e.s3Endpoint,
    CGM_EBS_ENDPOINT: e.ebsEndpoint,
    CGM_BUCKET: e.bucket,
    CGM_LOCAL_STATE_DIR: e.stateDir,
    AWS_REGION: e.region,
    AWS_ACCESS_KEY_ID: e.accessKeyId,
    AWS_SECRET_ACCESS_KEY: e.secretAccessKey,
  };
}

export async function ensureLocalBucket(e: LocalEndpoints): Promise<void> {
  const s3 = new S3Client({
    endpoint: e.s3Endpoint,
    region: e.region,
    forcePathStyle: true,
    credentials: { accessKeyId: e.accessKeyId, secretAccessKey: e.secretAccessKey },
  });
  try {
    try {
      await s3.send(new HeadBucketCommand({ Bucket: e.bucket }));
    } catch {
      await s3.send(new CreateBucketCommand({ Bucket: e.bucket }));
    }
    await s3.send(
      new PutBucketVersioningCommand({ Bucket: e.bucket, VersioningConfiguration: { Status: "Enabled" } }),
    );
  } finally {
    s3.destroy();
  }
}

/** Starts both endpoints in this process, their data persisted under `stateDir`. */
export async function startLocalStack(
  options: { stateDir?: string; log?: (line: string) => void } = {},
): Promise<LocalStack> {
  const stateDir = resolve(options.stateDir ?? defaultStateDir());
  await mkdir(join(stateDir, "s3"), { recursive: true });
  await mkdir(join(stateDir, "ebs"), { recursive: true });
  const s3 = await startS3Server({
    dataDir: join(stateDir, "s3"),
    ...(options.log ? { log: options.log } : {}),
  });
  let emulator: EbsEmulator;
  try {
    emulator = await startEbsEmulator({ dataDir: join(stateDir, "ebs"), useEnv: true });
  } catch (err) {
    await s3.stop();
    throw err;
  }
  const endpoints: LocalEndpoints = {
    s3Endpoint: s3.endpoint,
    ebsEndpoint: emulator.endpoint,
    region: s3.region,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    bucket: LOCAL_BUCKET,
    stateDir,
  };
  try {
    await ensureLocalBucket(endpoints);
  } catch (err) {
    await emulator.close();
    await s3.stop();
    throw err;
  }
  return {
    ...endpoints,
    emulator,
    async stop() {
      await emulator.close();
      await s3.stop();
    },
  };
}

/** True while a process with this pid exists. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The running daemon's endpoints, or undefined when no live daemon serves `stateDir`. */
export async function runningStack(stateDir: string): Promise<LocalEndpoints | undefined> {
  const file = endpointsFile(stateDir);
  if (!existsSync(file)) return undefined;
  const e = JSON.parse(await readFile(file, "utf8")) as LocalEndpoints;
  if (e.pid === undefined || !isAlive(e.pid)) {
    await rm(file, { force: true });
    return undefined;
  }
  return e;
}

/**
 * The local stack for one command: the daemon's when `cgmirror local up` runs, else one started in this
 * process for the command's duration (same state directory, so both see the same data).
 */
export async function attachOrStartLocalStack(
  options: { stateDir?: string; log?: (line: string) => void } = {},
): Promise<LocalStack> {
  const stateDir = resolve(options.stateDir ?? defaultStateDir());
  const running = await runningStack(stateDir);
  if (running) return { ...running, async stop() {} };
  return startLocalStack({ ...options, stateDir });
}
