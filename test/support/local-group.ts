/**
 * A consistency group on the embedded local stack for workflow tests and the demo: the local S3 server,
 * the EBS emulator, simulated volumes on two instances, and the local runner's task dependencies.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { EBSClient } from "@aws-sdk/client-ebs";
import type { S3Client } from "@aws-sdk/client-s3";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { type GroupConfig, parseGroupConfig } from "#core/config/group-config.ts";
import { readCommittedManifest } from "#core/format/generation.ts";
import { createRepo, type Repo } from "#core/format/layout.ts";
import { restoreGroup } from "#core/restore/restore.ts";
import { localClients } from "#local/clients.ts";
import { firstDifference } from "#local/compare.ts";
import { createLocalDeps, type LocalDeps } from "#local/runner.ts";
import { type LocalStack, startLocalStack } from "#local/stack.ts";
import type { VolumeSimulator } from "#local/volumes/simulator.ts";

export const VOLUMES = {
  data1: { id: "vol-0000000a", instanceId: "i-0000000a", mountPoint: "/data" },
  log: { id: "vol-0000000b", instanceId: "i-0000000a", mountPoint: "/log" },
  data2: { id: "vol-0000000c", instanceId: "i-0000000b", mountPoint: "/data" },
} as const;

export interface LocalGroup {
  readonly dir: string;
  readonly stack: LocalStack;
  readonly simulator: VolumeSimulator;
  readonly ebs: EBSClient;
  readonly s3: S3Client;
  readonly config: GroupConfig;
  readonly repo: Repo;
  deps(): LocalDeps;
  /** Restores HEAD (or a generation) and compares every volume with its snapshot's point-in-time image. */
  checkRestore(generation?: number): Promise<{ generation: number; mismatches: string[] }>;
  close(): Promise<void>;
}

export async function localGroup(
  overrides: Partial<Parameters<typeof parseGroupConfig>[0] & object> = {},
): Promise<LocalGroup> {
  const dir = await mkdtemp(join(tmpdir(), "cgm-group-"));
  const stack = await startLocalStack({ stateDir: join(dir, "state") });
  const clients = localClients(stack);
  const { ebs, s3, simulator } = clients;
  for (const v of Object.values(VOLUMES))
    await simulator.create({ id: v.id, sizeGiB: 1, instanceId: v.instanceId });
  const config = parseGroupConfig({
    group: "orders",
    volumes: Object.values(VOLUMES),
    target: { bucket: stack.bucket },
    schedule: { expression: "rate(1 hour)" },
    freeze: { enabled: true, maxCoordinationSeconds: 30 },
    transfer: { shardBlocks: 64, maxConcurrency: 4 },
    // Local snapshots complete in seconds; a stuck one fails the run in minutes, not hours.
    snapshots: { keep: 2, completionTimeoutMinutes: 5 },
    ...overrides,
  });
  const repo = createRepo({
    store: new S3ObjectStore({ client: s3, bucket: stack.bucket }),
    prefix: config.target.prefix,
    group: config.group,
  });
  const opened: LocalDeps[] = [];
  return {
    dir,
    stack,
    simulator,
    ebs,
    s3,
    config,
    repo,
    deps() {
      const d = createLocalDeps({ endpoints: stack, simulator });
      opened.push(d);
      return d;
    },
    async checkRestore(generation) {
      const manifest = generation === undefined ? await readCommittedManifest(repo) : undefined;
      const gen = generation ?? manifest!.generation;
      const out = join(dir, `restore-${gen}-${Date.now()}`);
      await restoreGroup(repo, { directory: out, generation: gen });
      const m = manifest ?? (await import("#core/format/generation.ts")).readGeneration(repo, gen);
      const mismatches: string[] = [];
      for (const v of (await m).volumes) {
        const at = await firstDifference(
          join(out, `${v.volumeId}.img`),
          simulator.snapshotImagePath(v.sourceSnapshotId!),
        );
        if (at >= 0) mismatches.push(`${v.volumeId} differs at byte ${at}`);
      }
      await rm(out, { recursive: true, force: true });
      return { generation: gen, mismatches };
    },
    async close() {
      for (const d of opened) d.close();
      clients.destroy();
      await stack.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
