import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  countBlocksUpTo,
  interleaveShards,
  planTransferConcurrency,
  shardBlocksFor,
  shardBlocksWithin,
  targetShardsPerVolume,
} from "#core/transfer/concurrency.ts";
import { FakeBlockSource } from "./transfer-fixtures.ts";

const DEFAULTS = { snapshotBlockRps: 1000, accountBlockRps: 1000, shardRps: 100, maxConcurrency: 100 };

describe("planTransferConcurrency", () => {
  it("GIVEN AWS's default quotas and one 2 TiB volume (140 shards) THEN 10 tasks at 100 requests/s fill the 1,000/s", () => {
    expect(planTransferConcurrency([140], DEFAULTS)).toEqual({
      maxConcurrency: 10,
      shardRate: 100,
      perSnapshot: 10,
    });
  });

  it("GIVEN a raised account quota and several volumes THEN each snapshot gets at most what its quota feeds", () => {
    const p = planTransferConcurrency([50, 50, 2], { ...DEFAULTS, accountBlockRps: 5000 });
    expect(p.maxConcurrency).toBe(22);
    expect(p.shardRate).toBe(100);
  });

  it("GIVEN a small account share THEN fewer tasks, each still at a useful rate", () => {
    expect(planTransferConcurrency([40], { ...DEFAULTS, accountBlockRps: 250 })).toMatchObject({
      maxConcurrency: 2,
      shardRate: 100,
    });
  });

  it("GIVEN any quotas and shards THEN the planned tasks never ask more than the account quota, nor one snapshot's tasks more than its quota (while they spread)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 500 }), { minLength: 1, maxLength: 20 }),
        fc.integer({ min: 1, max: 1000 }),
        fc.integer({ min: 1, max: 20_000 }),
        fc.integer({ min: 1, max: 1000 }),
        fc.integer({ min: 1, max: 10_000 }),
        (shards, snap, account, shardRps, cap) => {
          const p = planTransferConcurrency(shards, {
            snapshotBlockRps: snap,
            accountBlockRps: account,
            shardRps,
            maxConcurrency: cap,
          });
          expect(p.maxConcurrency).toBeGreaterThanOrEqual(1);
          expect(p.maxConcurrency).toBeLessThanOrEqual(
            Math.min(
              cap,
              shards.reduce((a, b) => a + b, 0),
            ),
          );
          expect(p.shardRate).toBeLessThanOrEqual(Math.max(1, shardRps));
          if (p.shardRate > 1) {
            expect(p.maxConcurrency * p.shardRate).toBeLessThanOrEqual(account);
            expect(Math.min(p.maxConcurrency, p.perSnapshot) * p.shardRate).toBeLessThanOrEqual(snap);
          }
        },
      ),
    );
  });
});

describe("interleaveShards", () => {
  it("GIVEN shards of three volumes THEN they come round-robin, each volume's in order, none lost", () => {
    const items = [
      ...[0, 1, 2, 3].map((shard) => ({ volumeId: "a", shard })),
      { volumeId: "b", shard: 0 },
      ...[0, 1].map((shard) => ({ volumeId: "c", shard })),
    ];
    expect(interleaveShards(items).map((i) => `${i.volumeId}${i.shard}`)).toEqual([
      "a0",
      "b0",
      "c0",
      "a1",
      "c1",
      "a2",
      "a3",
    ]);
  });
});

describe("shard size from the change set", () => {
  it("GIVEN AWS's default quotas THEN one volume is cut into 10 shards at least, three volumes into 4 each", () => {
    expect(targetShardsPerVolume(1, DEFAULTS)).toBe(10);
    expect(targetShardsPerVolume(3, DEFAULTS)).toBe(4);
    expect(targetShardsPerVolume(50, DEFAULTS)).toBe(1);
  });

  it("GIVEN 100 GiB changed (204,800 blocks) THEN shards of 20,480 blocks: 10 tasks can use the whole quota", () => {
    expect(shardBlocksFor(204_800, 30_000, 10)).toBe(20_480);
    expect(shardBlocksFor(300_000, 30_000, 10)).toBe(30_000);
    expect(shardBlocksFor(5, 30_000, 10)).toBe(64);
    expect(shardBlocksFor(5, 40, 10)).toBe(40);
  });

  it("GIVEN a listing of 2,500 blocks in pages WHEN counted up to 1,000 or to 10,000 THEN it stops at the first page past the limit, or counts them all", async () => {
    const source = new FakeBlockSource({ volumeBlocks: 5000, has: (i) => i % 2 === 0, scanWindow: 700 });
    const first = await countBlocksUpTo(
      source,
      { snapshotId: source.snapshotId, baseSnapshotId: null },
      1000,
    );
    expect(first).toBeGreaterThanOrEqual(1000);
    expect(first).toBeLessThan(2500);
    const calls = source.listCalls;
    expect(
      await countBlocksUpTo(source, { snapshotId: source.snapshotId, baseSnapshotId: null }, 10_000),
    ).toBe(2500);
    expect(source.listCalls - calls).toBeGreaterThan(3);
  });
});

describe("shardBlocksWithin: any volume size fits the shards a run passes inline", () => {
  it("GIVEN any volumes and configured size THEN every volume's shards together stay within the limit, never below the configured size", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 137_438_953_472 / 512 / 1024 }), { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 64, max: 1_000_000 }),
        fc.integer({ min: 41, max: 5_000 }),
        (volumes, configured, maxShards) => {
          const size = shardBlocksWithin(volumes, configured, maxShards);
          expect(size).toBeGreaterThanOrEqual(configured);
          const shards = volumes.reduce((n, b) => n + Math.ceil(b / size), 0);
          expect(shards).toBeLessThanOrEqual(maxShards);
          // The configured size stays whenever it already fits with room for a partial shard per volume.
          const total = volumes.reduce((a, b) => a + b, 0);
          if (total <= configured * (maxShards - volumes.length)) expect(size).toBe(configured);
        },
      ),
      { seed: 20261130, numRuns: 500 },
    );
  });

  it("GIVEN one fully written 64 TiB volume at the default 30,000 blocks THEN shards grow to fit 3,000", () => {
    const blocks = (64 * 2 ** 40) / (512 * 1024);
    expect(Math.ceil(blocks / 30_000)).toBeGreaterThan(3_000);
    const size = shardBlocksWithin([blocks], 30_000, 3_000);
    expect(size).toBe(Math.ceil(blocks / 2_999));
    expect(Math.ceil(blocks / size)).toBeLessThanOrEqual(3_000);
  });

  it("GIVEN no room for a shard per volume THEN it fails naming the counts", () => {
    expect(() => shardBlocksWithin([1, 2, 3], 64, 3)).toThrow(
      /more than one shard per volume, got 3 for 3 volumes/,
    );
  });
});
