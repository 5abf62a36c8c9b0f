/** core/protocol/snapshot-group.ts on the local ports: the volume simulator and the EBS emulator. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EBSClient, ListChangedBlocksCommand } from "@aws-sdk/client-ebs";
import { type EbsEmulator, startEbsEmulator } from "@cgmirror/ebs-emulator";
import { ebsAdmin } from "@cgmirror/ebs-emulator/admin-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseGroupConfig } from "#core/config/group-config.ts";
import {
  checkSnapshots,
  deleteRunSnapshots,
  SnapshotFailedError,
  snapshotGroup,
} from "#core/protocol/snapshot-group.ts";
import { LocalFreezePort, LocalSnapshotPort } from "#local/volumes/ports.ts";
import { BLOCK_SIZE, VolumeSimulator } from "#local/volumes/simulator.ts";

let emulator: EbsEmulator;
let ebs: EBSClient;
let dir: string;
let sim: VolumeSimulator;
let snapshots: LocalSnapshotPort;
let freeze: LocalFreezePort;
const clock = { now: () => Date.now() };

const A = "vol-0000000a";
const B = "vol-0000000b";
const C = "vol-0000000c";
const config = parseGroupConfig({
  group: "db",
  volumes: [
    { id: A, instanceId: "i-0000000a", mountPoint: "/data" },
    { id: B, instanceId: "i-0000000a", mountPoint: "/log" },
    { id: C, instanceId: "i-0000000b", mountPoint: "/data" },
  ],
  target: { bucket: "cgmirror-local" },
  schedule: { expression: "rate(1 hour)" },
  freeze: { enabled: true, maxCoordinationSeconds: 30 },
});

beforeAll(async () => {
  emulator = await startEbsEmulator();
  ebs = new EBSClient({
    endpoint: emulator.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
  });
  dir = await mkdtemp(join(tmpdir(), "cgm-ports-"));
  sim = new VolumeSimulator({ stateDir: dir, ebs });
  for (const v of config.volumes) await sim.create({ id: v.id, sizeGiB: 1, instanceId: v.instanceId! });
  snapshots = new LocalSnapshotPort({ simulator: sim, admin: ebsAdmin(emulator.endpoint) });
  freeze = new LocalFreezePort({ simulator: sim });
});
afterAll(async () => {
  ebs.destroy();
  await emulator.close();
  await rm(dir, { recursive: true, force: true });
});

describe("local snapshot and freeze ports", () => {
  it("GIVEN block puts that keep failing WHEN the group is checked THEN the snapshot is in error, not pending forever", async () => {
    const fragile = new VolumeSimulator({ stateDir: join(dir, "fragile"), ebs, uploadAttempts: 2 });
    await fragile.create({ id: "vol-0000000f", sizeGiB: 1 });
    await fragile.write("vol-0000000f", 0, Buffer.alloc(100, 1));
    const port = new LocalSnapshotPort({ simulator: fragile, admin: ebsAdmin(emulator.endpoint) });
    emulator.setFaults({ errorRate: 1, errorOperations: ["PutSnapshotBlock"] });
    try {
      const ref = await port.createVolumeSnapshot("vol-0000000f", {
        group: "other",
        generation: 1,
        runId: "run-f",
      });
      await expect(
        checkSnapshots([ref], new Date().toISOString(), 5, { snapshots: port, clock }),
      ).rejects.toThrow(SnapshotFailedError);
    } finally {
      emulator.resetFaults();
    }
  });

  it("GIVEN a group over two instances WHEN snapshotted with freeze THEN every volume has a completed, tagged snapshot of its own", async () => {
    for (const v of [A, B, C]) await sim.write(v, 0, Buffer.alloc(BLOCK_SIZE, v.charCodeAt(v.length - 1)));
    const result = await snapshotGroup(
      config,
      { group: "db", generation: 1, runId: "run-1" },
      { snapshots, freeze, clock },
    );
    expect(result.frozen).toBe(true);
    expect(result.snapshots.map((s) => s.volumeId)).toEqual([A, B, C]);
    expect(result.coordinationMs).toBeGreaterThanOrEqual(0);
    const check = await checkSnapshots(result.snapshots, result.startedAt, 5, { snapshots, clock });
    expect(check).toMatchObject({ allCompleted: true, completed: 3, pending: 0 });
    const found = await snapshots.findSnapshots("db", "run-1");
    expect(found.map((s) => s.volumeId).sort()).toEqual([A, B, C]);
    expect(found.every((s) => s.generation === 1)).toBe(true);
    expect(sim.isFrozen(A)).toBe(false);
  });

  it("GIVEN a reverted run WHEN its snapshots are deleted THEN the next run's snapshots are incremental from the last kept ones", async () => {
    const first = await snapshots.findSnapshots("db", "run-1");
    await sim.write(A, 3 * BLOCK_SIZE, Buffer.alloc(10, 1));
    await snapshotGroup(config, { group: "db", generation: 2, runId: "run-2" }, { snapshots, freeze, clock });
    expect(await deleteRunSnapshots("db", "run-2", snapshots)).toBe(3);
    await sim.write(A, 5 * BLOCK_SIZE, Buffer.alloc(10, 1));
    const third = await snapshotGroup(
      config,
      { group: "db", generation: 2, runId: "run-3" },
      { snapshots, freeze, clock },
    );
    await checkSnapshots(third.snapshots, third.startedAt, 5, { snapshots, clock });
    const base = first.find((s) => s.volumeId === A)!.snapshotId;
    const next = third.snapshots.find((s) => s.volumeId === A)!.snapshotId;
    const changed = await ebs.send(
      new ListChangedBlocksCommand({ FirstSnapshotId: base, SecondSnapshotId: next }),
    );
    expect((changed.ChangedBlocks ?? []).map((b) => b.BlockIndex)).toEqual([3, 5]);
  });
});
