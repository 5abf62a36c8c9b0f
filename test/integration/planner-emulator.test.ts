/**
 * The planner over the EBS emulator's synthetic 16 TiB snapshots (real @aws-sdk/client-ebs, local S3):
 * millions of changed blocks, short pages, bounded memory.
 */

import { type EbsEmulator, SyntheticBlocks, seedOf, startEbsEmulator } from "@cgmirror/ebs-emulator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEbsClient, EbsBlockSource } from "#adapters/ebs-source.ts";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { createRepo } from "#core/format/layout.ts";
import { planVolume, readShardIndex } from "#core/transfer/planner.ts";
import { decodeShardList, planKeys } from "#core/transfer/shard-list.ts";
import { type S3TestBucket, s3TestBucket } from "../support/s3.ts";

let emu: EbsEmulator;
let t: S3TestBucket;

beforeAll(async () => {
  // A small scan window makes the emulator answer short pages with a NextToken.
  emu = await startEbsEmulator({ listScanWindowBlocks: 200_000 });
  t = await s3TestBucket();
});

afterAll(async () => {
  await t?.cleanup();
  await emu?.close();
});

describe("planVolume on the EBS emulator", () => {
  it("GIVEN a 16 TiB volume with over a million changed blocks WHEN planned THEN every changed block is in exactly one shard and memory stays bounded", async () => {
    const root = await emu.createSyntheticSnapshot({
      volumeSizeGiB: 16_384,
      seed: "plan-16t",
      writtenFraction: 0.01,
    });
    const child = await emu.createSyntheticSnapshot({
      parentSnapshotId: root.snapshotId,
      changedFraction: 0.04,
    });
    const client = createEbsClient({
      endpoint: emu.endpoint,
      region: "us-east-1",
      credentials: { accessKeyId: "AKIDPLAN", secretAccessKey: "x" },
    });
    const repo = createRepo({
      store: new S3ObjectStore({ client: t.client, bucket: t.bucket }),
      prefix: `${t.prefix}g`,
      group: "g",
    });
    let peak = 0;
    const timer = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().heapUsed);
    }, 20);
    const before = process.memoryUsage().heapUsed;
    try {
      const plan = await planVolume(
        { repo, source: new EbsBlockSource(client) },
        {
          runId: "plan-it",
          volumeId: "vol-big",
          snapshotId: child.snapshotId,
          baseSnapshotId: root.snapshotId,
        },
      );
      clearInterval(timer);
      const pred = new SyntheticBlocks({
        seed: seedOf("plan-16t"),
        generation: 1,
        fraction: 0.04,
        zeroFraction: 0,
        compressibleFraction: 0,
      });
      expect(plan.volumeSizeBytes).toBe(16 * 2 ** 40);
      expect(plan.totals.changedBlocks).toBeGreaterThan(1_000_000);
      // Short pages (scan window) were followed through their NextToken.
      expect(plan.totals.listPages).toBeGreaterThan(Math.ceil(plan.totals.changedBlocks / 10_000));
      // Heap growth: one page of the listing and one shard list at a time, not the millions of entries.
      expect(peak - before).toBeLessThan(256 * 1024 * 1024);
      // Spot-check a few shards against the emulator's own predicate.
      const shards = plan.shards ?? (await readShardIndex(repo, "plan-it", "vol-big"));
      expect(shards.length).toBe(plan.totals.shards);
      let listed = 0;
      for (const d of shards) listed += d.blocks;
      expect(listed).toBe(plan.totals.changedBlocks);
      for (const d of [shards[0]!, shards[Math.floor(shards.length / 2)]!, shards.at(-1)!]) {
        const key = planKeys.shardList(repo, "plan-it", "vol-big", d.shard);
        const list = decodeShardList((await repo.store.get(key)).body, key);
        const expected: number[] = [];
        for (let i = d.first; i < d.end; i++) if (pred.has(i)) expected.push(i);
        expect([...list.blocks]).toEqual(expected);
      }
    } finally {
      clearInterval(timer);
      client.destroy();
    }
  });
});
