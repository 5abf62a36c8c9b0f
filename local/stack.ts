/**
 * The embedded local stack: the S3 server and the EBS direct API emulator, state under one directory
 * (`.cgmirror/` in the current directory for the CLI). Either started in-process for one command
 * (`startLocalStack`) or as a background daemon (`cgmirror local up`, see stack-daemon.ts) whose
 * endpoints are recorded in `<stateDir>/endpoints.json`.
 */
import { mkdir, open, readFile, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import {
  CreateBucketCommand,
  HeadBucketCommand,
  PutBucketVersioningCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { AWS_DEFAULT_QUOTAS, type EbsEmulator, startEbsEmulator } from "@cgmirror/ebs-emulator";
import { defaultStateDir, isAlive, LOCAL_BUCKET, runningStack, stackLockFile } from "./names.ts";
import { startS3Server } from "./s3-server/server.ts";

export {
  defaultStateDir,
  endpointsFile,
  isAlive,
  LOCAL_BUCKET,
  runningStack,
  stackLockFile,
} from "./names.ts";

/** Another process runs the local stack on this state directory (not as the `local up` daemon). */
export class LocalStackBusyError extends Error {
  override readonly name = "LocalStackBusyError";
}

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

/** The environment that points the AWS SDK (and every cgmirror command) at the local stack. */
export function localEnvironment(e: LocalEndpoints): Record<string, string> {
  return {
    CGM_S3_ENDPOINT: e.s3Endpoint,
    CGM_EBS_ENDPOINT: e.ebsEndpoint,
    CGM_BUCKET: e.bucket,
    CGM_LOCAL_STATE_DIR: e.stateDir,
    // The standard variables: the AWS CLI and every AWS SDK (service-specific endpoints) use them.
    AWS_ENDPOINT_URL_S3: e.s3Endpoint,
    AWS_ENDPOINT_URL_EBS: e.ebsEndpoint,
    AWS_REGION: e.region,
    AWS_DEFAULT_REGION: e.region,
    AWS_ACCESS_KEY_ID: e.accessKeyId,
    AWS_SECRET_ACCESS_KEY: e.secretAccessKey,
    AWS_EC2_METADATA_DISABLED: "true",
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

/**
 * Takes the state directory for this process (`stack.pid`, created exclusively). A lock left by a dead
 * process is taken over. Returns its release.
 * @throws LocalStackBusyError naming the live holder
 */
export async function lockStateDir(stateDir: string): Promise<() => Promise<void>> {
  await mkdir(stateDir, { recursive: true });
  const file = stackLockFile(stateDir);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(file, "wx");
      await fh.writeFile(String(process.pid));
      await fh.close();
      return async () => {
        const holder = Number((await readFile(file, "utf8").catch(() => "")).trim());
        if (holder === process.pid) await rm(file, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const holder = Number((await readFile(file, "utf8").catch(() => "")).trim());
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) {
        throw new LocalStackBusyError(
          `another cgmirror command (pid ${holder}) is using the local stack in ${stateDir} right now; ` +
            "wait for it to finish, or run `npx cgmirror local up` once so that commands share one background stack",
        );
      }
      await rm(file, { force: true }); // left by a process that died
    }
  }
  throw new LocalStackBusyError(`could not take the local stack's state directory ${stateDir}; try again`);
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
    // AWS's default EBS direct API quotas, so the local run is throttled where AWS would be; the
    // CGM_EBS_* variables override them (CGM_EBS_DATA_RPS_PER_ACCOUNT=0 lifts one).
    emulator = await startEbsEmulator({
      dataDir: join(stateDir, "ebs"),
      defaults: AWS_DEFAULT_QUOTAS,
      useEnv: true,
    });
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
  const release = await lockStateDir(stateDir);
  try {
    // `local up` may have started while this command waited for the lock.
    const daemon = await runningStack(stateDir);
    if (daemon) {
      await release();
      return { ...daemon, async stop() {} };
    }
    const stack = await startLocalStack({ ...options, stateDir });
    return {
      ...stack,
      async stop() {
        try {
          await stack.stop();
        } finally {
          await release();
        }
      },
    };
  } catch (error) {
    await release();
    throw error;
  }
}
