import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import type { IndexEntry } from "#core/format/block-ref.ts";
import { Codec } from "#core/format/codec.ts";
import { IndexRunReader } from "#core/format/index-run.ts";
import { createRepo, keys, type Repo } from "#core/format/layout.ts";
import { fetchBlocks } from "#core/restore/restore.ts";
import { TransferErrors } from "#core/transfer/errors.ts";
import { planVolume, type ShardDescriptor } from "#core/transfer/planner.ts";
import { planKeys } from "#core/transfer/shard-list.ts";
import {
  readRunProgress,
  type ShardResultSummary,
  type TransferOptions,
  toShardResultItem,
  transferShard,
} from "#core/transfer/worker.ts";
import { FakeBlockSource, type FakeSourceOptions } from "./transfer-fixtures.ts";

const BASE = "snap-0000000000000000a";
const RUN = "run-1";
const FAST: TransferOptions = {
  segmentBytes: 2 * 1024 * 1024,
  allowSmallSegments: true,
  backoffBaseMs: 1,
  backoffCapMs: 2,
  initialRate: 5000,
  maxRate: 100_000,
  listRetry: { baseMs: 1, capMs: 2 },
};

async function setup(o: Partial<FakeSourceOptions> = {}, shardBlocks = 40) {
  const store = new MemoryObjectStore();
  const repo = createRepo({ store, prefix: "g", group: "g" });
  const source = new FakeBlockSource({
    volumeBlocks: 400,
    has: (i) => i % 3 !== 1,
    absent: (i) => i % 50 === 0,
    contentKey: (i) => (i % 11 === 0 ? "zero" : i % 7 === 0 ? "dup" : String(i)),
    ...o,
  });
  const plan = await planVolume(
    { repo, source },
    {
      runId: RUN,
      volumeId: "vol-1",
      snapshotId: source.snapshotId,
      baseSnapshotId: BASE,
      shardBlocks,
      pageSize: 100,
    },
  );
  return { store, repo, source, shards: plan.shards! };
}

async function resultEntries(repo: Repo, s: ShardResultSummary): Promise<IndexEntry[]> {
  const reader = await IndexRunReader.open(repo.store, s.run.key, { bytes: s.run.bytes });
  const out: IndexEntry[] = [];
  for (let p = 0; p < reader.pageCount; p++) {
    const page = await reader.readPage(p);
    for (let i = 0; i < page.count; i++) out.push(page.entry(i));
  }
  return out;
}

/** Restores the shard's blocks from its result and compares every byte with the source. */
async function expectRestoresExactly(
  repo: Repo,
  source: FakeBlockSource,
  d: ShardDescriptor,
  s: ShardResultSummary,
) {
  const entries = await resultEntries(repo, s);
  expect(entries.length).toBe(d.blocks);
  const zeroSha = createHash("sha256").update(Buffer.alloc(524288)).digest("hex");
  let restored = 0;
  await fetchBlocks(repo, entries, (block, raw) => {
    expect(Buffer.from(raw).equals(source.content(block)), `block ${block}`).toBe(true);
    restored++;
  });
  for (const e of entries) {
    if (e.ref.codec === Codec.zero) {
      expect(source.o.absent?.(e.block) || source.content(e.block).equals(Buffer.alloc(524288))).toBe(true);
      expect(Buffer.from(e.ref.sha256).toString("hex")).toBe(zeroSha);
    }
  }
  expect(restored).toBe(entries.filter((e) => e.ref.codec !== Codec.zero).length);
  // Every referenced segment was written by this attempt and is named by the summary.
  const referenced = new Set(entries.map((e) => e.ref.segment).filter((x) => x !== null));
  expect([...referenced].sort()).toEqual([...s.segments].sort());
  return entries;
}

describe("transferShard", () => {
  it("GIVEN a planned shard WHEN transferred THEN its result restores byte-exact, zeros and duplicates are not stored", async () => {
    const { repo, source, shards } = await setup({}, 1000);
    const d = shards[0]!;
    const s = await transferShard({ repo, source }, { runId: RUN, shard: d, options: FAST });
    expect(s.reused).toBe(false);
    expect(s.run.entries).toBe(d.blocks);
    await expectRestoresExactly(repo, source, d, s);
    expect(s.stats.absentBlocks).toBeGreaterThan(0);
    expect(s.stats.zeroBlocks).toBeGreaterThan(0);
    expect(s.stats.dedupedBlocks).toBeGreaterThan(0);
    const progress = JSON.parse(
      new TextDecoder().decode((await repo.store.get(planKeys.progress(repo, RUN, "vol-1", 0))).body),
    );
    expect(progress).toMatchObject({ state: "done", blocksDone: d.blocks, blocksTotal: d.blocks });
    expect(progress.bytesDone).toBe(progress.bytesTotal);
  });

  it("GIVEN the committed index holds the same content for some changed blocks WHEN transferred with previous THEN those are skipped", async () => {
    const { repo, source, shards } = await setup({}, 1000);
    const d = shards[0]!;
    const same = (b: number) => b % 5 === 0 && !source.o.absent?.(b);
    const previous = {
      lookup: async (b: number) =>
        same(b)
          ? {
              segment: "0".repeat(32),
              offset: 0,
              length: 1,
              codec: Codec.raw,
              sha256: createHash("sha256").update(source.content(b)).digest(),
            }
          : undefined,
    };
    const s = await transferShard({ repo, source, previous }, { runId: RUN, shard: d, options: FAST });
    const skipped = (await resultEntries(repo, s)).filter((e) => same(e.block));
    expect(skipped).toEqual([]);
    expect(s.stats.unchangedBlocks).toBeGreaterThan(0);
    expect(s.run.entries).toBe(d.blocks - s.stats.unchangedBlocks);
  });

  it("GIVEN finished shards WHEN the run's progress is read THEN it sums them and the Map item stays small", async () => {
    const { repo, source, shards } = await setup();
    const results: ShardResultSummary[] = [];
    for (const d of shards.slice(0, 3))
      results.push(await transferShard({ repo, source }, { runId: RUN, shard: d, options: FAST }));
    const p = await readRunProgress(repo, RUN);
    expect(p.shardsDone).toBe(3);
    expect(p.blocksDone).toBe(shards.slice(0, 3).reduce((a, d) => a + d.blocks, 0));
    expect(p.blocksTotal).toBe(p.blocksDone);
    expect(p.bytesDone).toBe(p.bytesTotal);
    for (const r of results) expect(JSON.stringify(toShardResultItem(r)).length).toBeLessThan(200);
  });

  it("GIVEN a source that recycles block buffers THEN each is released once, only after the writer copied it", async () => {
    const { repo, source, shards } = await setup({}, 1000);
    const d = shards[0]!;
    source.getFault = (index, call) => (index === 5 && call === 1 ? "corrupt" : undefined);
    const real = source.getBlock.bind(source);
    let reads = 0;
    let releases = 0;
    source.getBlock = async (r) => {
      const got = await real(r);
      reads++;
      let released = false;
      return {
        ...got,
        release: () => {
          expect(released).toBe(false);
          released = true;
          releases++;
          // The source reuses the buffer at once: any later use of these bytes would corrupt a block.
          (got.data as Buffer).fill(0xee);
        },
      };
    };
    const s = await transferShard({ repo, source }, { runId: RUN, shard: d, options: FAST });
    expect(releases).toBe(reads);
    expect(s.stats.checksumRetries).toBe(1);
    await expectRestoresExactly(repo, source, d, s);
  });

  it("GIVEN throttling and 5xx answers WHEN transferred THEN they are retried, the rate backs off, and the result is exact", async () => {
    const { repo, source, shards } = await setup();
    source.getFault = (index, call) =>
      index % 4 === 0 && call <= 2 ? (call === 1 ? "throttle" : "transient") : undefined;
    for (const d of shards) {
      const s = await transferShard({ repo, source }, { runId: RUN, shard: d, options: FAST });
      await expectRestoresExactly(repo, source, d, s);
      if (d.shard === 0) {
        expect(s.stats.throttled).toBeGreaterThan(0);
        expect(s.stats.transientErrors).toBeGreaterThan(0);
      }
    }
  });

  it("GIVEN block tokens that expire mid-shard WHEN transferred THEN the range is re-listed and the result is exact", async () => {
    const { repo, source, shards } = await setup({}, 1000);
    const d = shards[0]!;
    const real = source.getBlock.bind(source);
    source.getBlock = async (r) => {
      if (source.getCalls === 60) source.tokenGeneration++;
      return real(r);
    };
    const s = await transferShard(
      { repo, source },
      { runId: RUN, shard: d, options: { ...FAST, listPageSize: 100 } },
    );
    expect(s.stats.tokenRefreshes).toBeGreaterThan(0);
    await expectRestoresExactly(repo, source, d, s);
  });

  it("GIVEN throttling back-offs longer than the tokens live WHEN transferred THEN blocks are re-listed as often as needed and the result is exact", async () => {
    // Tokens expire on a clock only the back-offs move, so a loaded machine cannot expire them early.
    let clock = Date.now();
    const { repo, source, shards } = await setup({ tokenTtlMs: 100, now: () => clock }, 1000);
    const d = shards[0]!;
    // Block 5 is throttled four times; every back-off (150 ms) outlives its token (100 ms).
    source.getFault = (index, call) => (index === 5 && call <= 4 ? "throttle" : undefined);
    // Every back-off moves the clock, also one whose jitter drew 0 ms (FAST's cap is 2 ms).
    const sleep = async (_ms: number) => {
      clock += 150;
      await new Promise<void>((res) => setTimeout(res, 0));
    };
    const s = await transferShard(
      // The worker judges a refused token stale on the same clock (not the machine's).
      { repo, source, sleep, wallClock: () => clock },
      { runId: RUN, shard: d, options: { ...FAST, maxTokenRefreshes: 1 } },
    );
    expect(s.stats.throttled).toBe(4);
    expect(s.stats.tokenRefreshes).toBeGreaterThanOrEqual(3);
    await expectRestoresExactly(repo, source, d, s);
  });

  it("fails with TransferRetriesExhaustedError when fresh tokens keep failing while still valid", async () => {
    const { repo, source, shards } = await setup({ tokenTtlMs: 60_000 }, 1000);
    const real = source.getBlock.bind(source);
    source.getBlock = async (r) => {
      if (r.blockIndex === 5) source.tokenGeneration++; // every token of block 5 is refused at once
      return real(r);
    };
    await expect(
      transferShard(
        { repo, source },
        { runId: RUN, shard: shards[0]!, options: { ...FAST, maxTokenRefreshes: 2 } },
      ),
    ).rejects.toMatchObject({ name: TransferErrors.RetriesExhausted });
  });

  it("GIVEN a read whose data fails its checksum once WHEN transferred THEN the block is read again", async () => {
    const { repo, source, shards } = await setup();
    source.getFault = (index, call) => (index === 2 && call === 1 ? "corrupt" : undefined);
    const s = await transferShard({ repo, source }, { runId: RUN, shard: shards[0]!, options: FAST });
    expect(s.stats.checksumRetries).toBe(1);
    await expectRestoresExactly(repo, source, shards[0]!, s);
  });

  it("fails with BlockChecksumMismatchError when every read of a block is corrupt", async () => {
    const { repo, source, shards } = await setup();
    const bad = 2;
    source.getFault = (index) => (index === bad ? "corrupt" : undefined);
    await expect(
      transferShard({ repo, source }, { runId: RUN, shard: shards[0]!, options: FAST }),
    ).rejects.toMatchObject({
      name: TransferErrors.ChecksumMismatch,
      blockIndex: bad,
    });
  });

  it("fails with TransferRetriesExhaustedError when throttling never ends", async () => {
    const { repo, source, shards } = await setup();
    source.getFault = () => "throttle";
    await expect(
      transferShard(
        { repo, source },
        { runId: RUN, shard: shards[0]!, options: { ...FAST, maxAttempts: 3 } },
      ),
    ).rejects.toMatchObject({ name: TransferErrors.RetriesExhausted });
  });

  it("fails with SourceAccessError on access denied, without retrying", async () => {
    const { repo, source, shards } = await setup();
    source.getFault = () => "fatal";
    await expect(
      transferShard({ repo, source }, { runId: RUN, shard: shards[0]!, options: FAST }),
    ).rejects.toMatchObject({
      name: TransferErrors.SourceAccess,
    });
    expect(source.getCalls).toBeLessThanOrEqual(64);
  });

  it("fails with ShardPlanMismatchError when the descriptor does not match its shard list", async () => {
    const { repo, source, shards } = await setup();
    const d = { ...shards[0]!, blocks: shards[0]!.blocks + 1 };
    await expect(
      transferShard({ repo, source }, { runId: RUN, shard: d, options: FAST }),
    ).rejects.toMatchObject({
      name: TransferErrors.PlanMismatch,
    });
  });

  it("GIVEN a finished shard WHEN run again THEN it returns the stored summary and writes nothing", async () => {
    const { store, repo, source, shards } = await setup();
    const first = await transferShard({ repo, source }, { runId: RUN, shard: shards[1]!, options: FAST });
    const puts = store.stats.puts;
    const again = await transferShard({ repo, source }, { runId: RUN, shard: shards[1]!, options: FAST });
    expect(again.reused).toBe(true);
    expect(again.run).toEqual(first.run);
    expect(again.segments).toEqual(first.segments);
    expect(store.stats.puts).toBe(puts);
  });

  it("GIVEN a crash at any write of a shard WHEN the shard is re-run THEN the result is the same and references only the re-run's segments", async () => {
    // A clean run counts the writes and gives the expected block → hash mapping.
    const clean = await setup();
    const d = clean.shards[2]!;
    let writes = 0;
    clean.store.beforeOperation = (op) => {
      if (op === "put" || op === "uploadPart" || op === "completeMultipartUpload") writes++;
    };
    const ref = await transferShard(
      { repo: clean.repo, source: clean.source },
      { runId: RUN, shard: d, options: FAST },
    );
    const expected = (await resultEntries(clean.repo, ref)).map((e) => [
      e.block,
      Buffer.from(e.ref.sha256).toString("hex"),
    ]);
    expect(writes).toBeGreaterThan(3);

    for (let crashAt = 1; crashAt <= writes; crashAt++) {
      const { store, repo, source, shards } = await setup();
      let n = 0;
      store.beforeOperation = (op) => {
        if ((op === "put" || op === "uploadPart" || op === "completeMultipartUpload") && ++n === crashAt) {
          throw new Error(`crash at write ${crashAt}`);
        }
      };
      const crashed = await transferShard(
        { repo, source },
        { runId: RUN, shard: shards[2]!, options: FAST },
      ).then(
        () => false,
        () => true,
      );
      store.beforeOperation = undefined;
      const summaryKey = planKeys.shardSummary(repo, RUN, "vol-1", 2);
      const hadSummary = (await store.head(summaryKey)) !== undefined;
      const s = await transferShard({ repo, source }, { runId: RUN, shard: shards[2]!, options: FAST });
      // Crashing the progress write is harmless; otherwise a crash leaves no summary and the re-run redoes the shard.
      if (crashed) expect(hadSummary).toBe(false);
      expect(s.reused).toBe(!crashed);
      const entries = await expectRestoresExactly(repo, source, shards[2]!, s);
      expect(entries.map((e) => [e.block, Buffer.from(e.ref.sha256).toString("hex")])).toEqual(expected);
      for (const seg of s.segments) expect(await store.head(keys.segment(repo, seg))).toBeDefined();
    }
  });
});
