import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { InvalidArgumentError } from "#core/errors.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { createRepo } from "#core/format/layout.ts";
import {
  DEFAULT_SHARD_BLOCKS,
  planVolume,
  readShardIndex,
  type ShardDescriptor,
} from "#core/transfer/planner.ts";
import { decodeShardList, planKeys } from "#core/transfer/shard-list.ts";
import { FakeBlockSource } from "./transfer-fixtures.ts";

const base = "snap-0000000000000000a";
const repoOf = (store = new MemoryObjectStore()) => createRepo({ store, prefix: "g", group: "g" });

/** Cheap deterministic membership: a multiplicative hash below a threshold. */
const member = (fraction: number) => (i: number) => (Math.imul(i + 1, 2654435761) >>> 0) / 2 ** 32 < fraction;

async function readLists(repo: ReturnType<typeof repoOf>, runId: string, shards: readonly ShardDescriptor[]) {
  const all: number[] = [];
  const absent: number[] = [];
  for (const d of shards) {
    const key = planKeys.shardList(repo, runId, d.volumeId, d.shard);
    const list = decodeShardList((await repo.store.get(key)).body, key);
    expect(list.first).toBe(d.first);
    expect(list.end).toBe(d.end);
    expect(list.blocks.length).toBe(d.blocks);
    list.blocks.forEach((b, i) => {
      all.push(b);
      if (list.absent[i]) absent.push(b);
    });
  }
  return { all, absent };
}

describe("planVolume", () => {
  it("GIVEN changed blocks WHEN planned THEN shards cover them exactly once, contiguous, each at most shardBlocks", async () => {
    const has = member(0.3);
    const source = new FakeBlockSource({ volumeBlocks: 50_000, has, absent: (i) => i % 97 === 0 });
    const repo = repoOf();
    const plan = await planVolume(
      { repo, source },
      {
        runId: "r1",
        volumeId: "vol-1",
        snapshotId: source.snapshotId,
        baseSnapshotId: base,
        shardBlocks: 1000,
        pageSize: 700,
      },
    );
    const expected = Array.from({ length: 50_000 }, (_, i) => i).filter(has);
    const shards = plan.shards!;
    expect(plan.totals.changedBlocks).toBe(expected.length);
    expect(plan.totals.shards).toBe(Math.ceil(expected.length / 1000));
    const { all, absent } = await readLists(repo, "r1", shards);
    expect(all).toEqual(expected);
    expect(absent).toEqual(expected.filter((i) => i % 97 === 0));
    expect(plan.totals.absentBlocks).toBe(absent.length);
    expect(plan.totals.readBytes).toBe((expected.length - absent.length) * BLOCK_SIZE);
    for (let s = 0; s < shards.length; s++) {
      expect(shards[s]!.blocks).toBeLessThanOrEqual(1000);
      if (s > 0) expect(shards[s]!.first).toBe(shards[s - 1]!.end);
    }
    expect(await readShardIndex(repo, "r1", "vol-1")).toEqual(shards);
  });

  it("GIVEN pages that come back empty with a NextToken WHEN planned THEN no block is lost", async () => {
    const has = member(0.05);
    const source = new FakeBlockSource({ volumeBlocks: 100_000, has, emptyPageEvery: 2, scanWindow: 7000 });
    const repo = repoOf();
    const plan = await planVolume(
      { repo, source },
      { runId: "r1", volumeId: "vol-1", snapshotId: source.snapshotId, shardBlocks: 2000 },
    );
    expect(plan.totals.emptyPages).toBeGreaterThan(0);
    const { all } = await readLists(repo, "r1", plan.shards!);
    expect(all).toEqual(Array.from({ length: 100_000 }, (_, i) => i).filter(has));
  });

  it("GIVEN no changed block WHEN planned THEN there are no shards", async () => {
    const source = new FakeBlockSource({ volumeBlocks: 10_000, has: () => false });
    const plan = await planVolume(
      { repo: repoOf(), source },
      { runId: "r1", volumeId: "vol-1", snapshotId: source.snapshotId, baseSnapshotId: base },
    );
    expect(plan.shards).toEqual([]);
    expect(plan.totals.changedBlocks).toBe(0);
  });

  it("GIVEN throttled and failing list calls WHEN planned THEN they are retried", async () => {
    const source = new FakeBlockSource({ volumeBlocks: 30_000, has: member(0.5) });
    source.listFault = (call) => (call % 3 === 1 ? "throttle" : call % 3 === 2 ? "transient" : undefined);
    const plan = await planVolume(
      { repo: repoOf(), source, retry: { baseMs: 1, capMs: 2 } },
      { runId: "r1", volumeId: "vol-1", snapshotId: source.snapshotId, pageSize: 1000 },
    );
    expect(plan.totals.changedBlocks).toBe(
      Array.from({ length: 30_000 }, (_, i) => i).filter(member(0.5)).length,
    );
    expect(source.listCalls).toBeGreaterThan(plan.totals.listPages);
  });

  it("GIVEN more descriptors than maxInlineBytes WHEN planned THEN only the shard index key is returned", async () => {
    const source = new FakeBlockSource({ volumeBlocks: 20_000, has: () => true });
    const repo = repoOf();
    const plan = await planVolume(
      { repo, source },
      {
        runId: "r1",
        volumeId: "vol-1",
        snapshotId: source.snapshotId,
        shardBlocks: 100,
        maxInlineBytes: 4096,
      },
    );
    expect(plan.shards).toBeNull();
    expect(plan.totals.shards).toBe(200);
    expect((await readShardIndex(repo, "r1", "vol-1")).length).toBe(200);
  });

  it("GIVEN a 16 TiB volume with millions of changed blocks WHEN planned THEN heap growth stays bounded", async () => {
    const volumeBlocks = 16 * 1024 * 2048; // 16 TiB of 512 KiB blocks = 33,554,432
    const has = member(0.09); // ≈ 3 million changed blocks
    const source = new FakeBlockSource({ volumeBlocks, has });
    const store = new MemoryObjectStore();
    let peak = 0;
    let lists = 0;
    store.beforeOperation = (op, key) => {
      if (op === "put" && key.endsWith(".blocks")) {
        lists++;
        if (lists % 10 === 0) peak = Math.max(peak, process.memoryUsage().heapUsed);
      }
    };
    globalThis.gc?.();
    const before = process.memoryUsage().heapUsed;
    const plan = await planVolume(
      { repo: repoOf(store), source },
      { runId: "r1", volumeId: "vol-1", snapshotId: source.snapshotId, baseSnapshotId: base },
    );
    expect(plan.totals.changedBlocks).toBeGreaterThan(2_500_000);
    expect(plan.totals.shards).toBe(Math.ceil(plan.totals.changedBlocks / DEFAULT_SHARD_BLOCKS));
    expect(plan.volumeSizeBytes).toBe(16 * 2 ** 40);
    // The stored shard lists (~1–2 bytes a block, kept by the in-memory store) plus one listing page
    // and one shard builder: far below what holding the entries (tens of bytes each) would need.
    expect(peak - before).toBeLessThan(64 * 1024 * 1024);
  });

  it("fails with InvalidArgumentError on a malformed snapshot id", async () => {
    const source = new FakeBlockSource({ volumeBlocks: 10, has: () => true });
    await expect(
      planVolume({ repo: repoOf(), source }, { runId: "r1", volumeId: "vol-1", snapshotId: "vol-123" }),
    ).rejects.toThrow(InvalidArgumentError);
  });
});
