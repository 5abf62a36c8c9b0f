import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  EBSClient,
  GetSnapshotBlockCommand,
  ListChangedBlocksCommand,
  ListSnapshotBlocksCommand,
} from "@aws-sdk/client-ebs";
import { type EbsEmulator, startEbsEmulator } from "@cgmirror/ebs-emulator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BLOCK_SIZE, VolumeSimulator, VolumeSimulatorError } from "../../local/volumes/simulator.ts";

let emulator: EbsEmulator;
let ebs: EBSClient;
let dir: string;
let sim: VolumeSimulator;

beforeAll(async () => {
  emulator = await startEbsEmulator();
  ebs = new EBSClient({
    endpoint: emulator.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
  });
  dir = await mkdtemp(join(tmpdir(), "cgm-sim-"));
  sim = new VolumeSimulator({ stateDir: dir, ebs });
});
afterAll(async () => {
  ebs.destroy();
  await emulator.close();
  await rm(dir, { recursive: true, force: true });
});

async function snapshotIndices(snapshotId: string): Promise<number[]> {
  const out = await ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: snapshotId, MaxResults: 10000 }));
  return (out.Blocks ?? []).map((b) => b.BlockIndex!);
}

async function changed(first: string, second: string): Promise<number[]> {
  const out = await ebs.send(
    new ListChangedBlocksCommand({ FirstSnapshotId: first, SecondSnapshotId: second, MaxResults: 10000 }),
  );
  return (out.ChangedBlocks ?? []).map((b) => b.BlockIndex!);
}

async function blockOf(snapshotId: string, index: number): Promise<Buffer> {
  const list = await ebs.send(
    new ListSnapshotBlocksCommand({ SnapshotId: snapshotId, StartingBlockIndex: index, MaxResults: 100 }),
  );
  const token = list.Blocks?.find((b) => b.BlockIndex === index)?.BlockToken;
  const got = await ebs.send(
    new GetSnapshotBlockCommand({ SnapshotId: snapshotId, BlockIndex: index, BlockToken: token }),
  );
  return Buffer.from(await got.BlockData!.transformToByteArray());
}

describe("volume simulator", () => {
  it("GIVEN a write at an unaligned offset WHEN read back THEN the bytes are there and both touched blocks are dirty", async () => {
    await sim.create({ id: "vol-unaligned", sizeGiB: 1, instanceId: "i-a" });
    const data = randomBytes(1000);
    await sim.write("vol-unaligned", BLOCK_SIZE - 500, data);
    expect((await sim.read("vol-unaligned", BLOCK_SIZE - 500, 1000)).equals(data)).toBe(true);

    const snap = await sim.initiateSnapshot("vol-unaligned");
    await snap.completed;
    expect(snap.changedBlocks).toBe(2);
    expect(await snapshotIndices(snap.snapshotId)).toEqual([0, 1]);
  });

  it("GIVEN two snapshots THEN the second has the first as parent and ListChangedBlocks gives exactly the blocks written between", async () => {
    await sim.create({ id: "vol-incr", sizeGiB: 1 });
    await sim.write("vol-incr", 0, randomBytes(3 * BLOCK_SIZE));
    const first = await sim.initiateSnapshot("vol-incr");
    await first.completed;
    const newData = randomBytes(100);
    await sim.write("vol-incr", 7 * BLOCK_SIZE + 3, newData);
    await sim.write("vol-incr", 1 * BLOCK_SIZE, randomBytes(10));
    const second = await sim.initiateSnapshot("vol-incr");
    await second.completed;

    expect(second.changedBlocks).toBe(2);
    expect(await changed(first.snapshotId, second.snapshotId)).toEqual([1, 7]);
    expect(await snapshotIndices(second.snapshotId)).toEqual([0, 1, 2, 7]); // inherited from the parent
    const block7 = await blockOf(second.snapshotId, 7);
    expect(block7.subarray(3, 103).equals(newData)).toBe(true);
    // The point-in-time image equals the volume at initiation.
    // Its first 8 blocks (a ranged read: reading the whole sparse 1 GiB image costs seconds).
    const pitFile = await open(sim.snapshotImagePath(second.snapshotId), "r");
    const pit = Buffer.alloc(8 * BLOCK_SIZE);
    try {
      expect((await pitFile.read(pit, 0, pit.length, 0)).bytesRead).toBe(pit.length);
    } finally {
      await pitFile.close();
    }
    const now = await sim.read("vol-incr", 0, 8 * BLOCK_SIZE);
    expect(
      createHash("sha256")
        .update(pit.subarray(0, 8 * BLOCK_SIZE))
        .digest("hex"),
    ).toBe(createHash("sha256").update(now).digest("hex"));
  });

  it("GIVEN a frozen volume WHEN written THEN the write is queued, misses the snapshot, and lands after the thaw in the next one", async () => {
    await sim.create({ id: "vol-frozen", sizeGiB: 1 });
    await sim.write("vol-frozen", 0, Buffer.alloc(BLOCK_SIZE, 1));
    await sim.freeze(["vol-frozen"]);
    const queued = sim.write("vol-frozen", 5 * BLOCK_SIZE, Buffer.alloc(10, 9));
    await queued;
    expect((await sim.read("vol-frozen", 5 * BLOCK_SIZE, 10)).equals(Buffer.alloc(10))).toBe(true);

    const during = await sim.initiateSnapshot("vol-frozen");
    const thawed = await sim.thaw(["vol-frozen"]);
    await during.completed;
    expect(thawed.appliedWrites).toBe(1);
    expect(await snapshotIndices(during.snapshotId)).toEqual([0]);
    expect((await sim.read("vol-frozen", 5 * BLOCK_SIZE, 10)).equals(Buffer.alloc(10, 9))).toBe(true);

    const after = await sim.initiateSnapshot("vol-frozen");
    await after.completed;
    expect(await changed(during.snapshotId, after.snapshotId)).toEqual([5]);
  });

  it("GIVEN the newest snapshot is deleted (a revert) THEN the next snapshot has the previous parent and all changes since it", async () => {
    await sim.create({ id: "vol-revert", sizeGiB: 1 });
    await sim.write("vol-revert", 0, randomBytes(BLOCK_SIZE));
    const base = await sim.initiateSnapshot("vol-revert");
    await base.completed;
    await sim.write("vol-revert", 2 * BLOCK_SIZE, randomBytes(BLOCK_SIZE));
    const reverted = await sim.initiateSnapshot("vol-revert");
    await reverted.completed;
    await emulator.deleteSnapshot(reverted.snapshotId);
    await sim.forgetSnapshot(reverted.snapshotId);
    expect((await sim.get("vol-revert")).lastSnapshotId).toBe(base.snapshotId);

    await sim.write("vol-revert", 4 * BLOCK_SIZE, randomBytes(BLOCK_SIZE));
    const next = await sim.initiateSnapshot("vol-revert");
    await next.completed;
    expect(await changed(base.snapshotId, next.snapshotId)).toEqual([2, 4]);
  });

  it("fails with a clear error for an unknown volume, a bad id, and a write past the end", async () => {
    await expect(sim.write("vol-nope", 0, Buffer.alloc(1))).rejects.toThrow(/no simulated volume vol-nope/);
    await expect(sim.create({ id: "disk1", sizeGiB: 1 })).rejects.toThrow(VolumeSimulatorError);
    await sim.create({ id: "vol-small", sizeGiB: 1 });
    await expect(sim.write("vol-small", 1024 ** 3 - 1, Buffer.alloc(2))).rejects.toThrow(/does not fit/);
  });
});
