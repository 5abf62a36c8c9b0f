/**
 * Resumable Transfer (issue 10, finding 1): an invocation that runs out of time checkpoints (its
 * durable segments, a partial result and a cursor) and the next one resumes from it. The result after
 * any number of resumptions is the one shard result Prepare reads; a retry trusts only the checkpoint
 * it was handed; blocks a checkpoint covers are not read again.
 */
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { CorruptObjectError } from "#core/errors.ts";
import type { IndexEntry } from "#core/format/block-ref.ts";
import { IndexRunReader } from "#core/format/index-run.ts";
import { createRepo, keys, type Repo } from "#core/format/layout.ts";
import { fetchBlocks } from "#core/restore/restore.ts";
import { planVolume, type ShardDescriptor } from "#core/transfer/planner.ts";
import {
  readTransferCheckpoint,
  type ShardResultSummary,
  type TransferCheckpointRef,
  type TransferOptions,
  type TransferStep,
  transferShard,
  transferShardStep,
} from "#core/transfer/worker.ts";
import { FakeBlockSource } from "./transfer-fixtures.ts";

const RUN = "run-1";
const OPTS: TransferOptions = {
  segmentBytes: 2 * 1024 * 1024,
  allowSmallSegments: true,
  backoffBaseMs: 1,
  backoffCapMs: 2,
  initialRate: 5000,
  maxRate: 100_000,
  maxConcurrency: 4,
  listRetry: { baseMs: 1, capMs: 2 },
  // remainingMs below counts GetSnapshotBlock calls left: stop once none is left.
  stopBeforeDeadlineMs: 1,
};

async function setup() {
  const store = new MemoryObjectStore();
  const repo = createRepo({ store, prefix: "g", group: "g" });
  const source = new FakeBlockSource({
    volumeBlocks: 300,
    has: (i) => i % 3 !== 1,
    absent: (i) => i % 50 === 0,
    contentKey: (i) => (i % 11 === 0 ? "zero" : String(i)),
  });
  const plan = await planVolume(
    { repo, source },
    {
      runId: RUN,
      volumeId: "vol-1",
      snapshotId: source.snapshotId,
      baseSnapshotId: "snap-0000000000000000a",
      shardBlocks: 1000,
      pageSize: 100,
    },
  );
  return { store, repo, source, d: plan.shards![0]! };
}

/** An invocation's deadline: `reads` GetSnapshotBlock calls, then time is up. */
function budget(source: FakeBlockSource, reads: number) {
  const at = source.getCalls;
  return () => reads - (source.getCalls - at);
}

async function entries(repo: Repo, s: ShardResultSummary): Promise<IndexEntry[]> {
  const reader = await IndexRunReader.open(repo.store, s.run.key, {
    bytes: s.run.bytes,
    sha256: s.run.sha256,
  });
  const out: IndexEntry[] = [];
  for (let p = 0; p < reader.pageCount; p++) {
    const page = await reader.readPage(p);
    for (let i = 0; i < page.count; i++) out.push(page.entry(i));
  }
  return out;
}

async function expectExact(repo: Repo, source: FakeBlockSource, d: ShardDescriptor, s: ShardResultSummary) {
  const got = await entries(repo, s);
  expect(got.map((e) => e.block)).toEqual(
    Array.from({ length: 300 }, (_, i) => i).filter((i) => i % 3 !== 1),
  );
  expect(got.length).toBe(d.blocks);
  let restored = 0;
  await fetchBlocks(repo, got, (block, raw) => {
    expect(Buffer.from(raw).equals(source.content(block)), `block ${block}`).toBe(true);
    restored++;
  });
  expect(restored).toBeGreaterThan(100);
  const referenced = new Set(got.map((e) => e.ref.segment).filter((x) => x !== null));
  expect([...referenced].sort()).toEqual([...s.segments].sort());
  return got;
}

/** Runs the shard to its end, `reads` blocks per invocation; returns every step. */
async function runResumed(repo: Repo, source: FakeBlockSource, d: ShardDescriptor, reads: number) {
  const steps: TransferStep[] = [];
  let resume: TransferCheckpointRef | undefined;
  for (let i = 0; i < 100; i++) {
    const step = await transferShardStep(
      { repo, source, remainingMs: budget(source, reads) },
      { runId: RUN, shard: d, options: OPTS, ...(resume ? { resume } : {}) },
    );
    steps.push(step);
    if (step.done) return { steps, summary: step.summary };
    resume = step.checkpoint;
  }
  throw new Error("the shard never finished");
}

describe("a resumable Transfer", () => {
  it("GIVEN invocations that each have time for 40 reads WHEN a 200-block shard runs THEN it finishes through checkpoints, restores exactly, and no block is read twice", async () => {
    const { repo, source, d } = await setup();
    const { steps, summary } = await runResumed(repo, source, d, 40);
    expect(steps.length).toBeGreaterThanOrEqual(4);
    const present = Array.from({ length: 300 }, (_, i) => i).filter((i) => i % 3 !== 1 && i % 50 !== 0);
    expect(source.getCalls).toBe(present.length);
    expect([...source.reads.values()].every((n) => n === 1)).toBe(true);
    await expectExact(repo, source, d, summary);
    expect(summary.stats.blocks).toBe(d.blocks);
    expect(summary.stats.getRequests).toBe(present.length);

    // Every checkpoint is a sealed object under runs/<runId>/checkpoints/ naming the segments its
    // invocation made durable; together they and the last invocation's are what the result references.
    const written = new Set<string>();
    for (const step of steps) {
      if (step.done) continue;
      expect(step.checkpoint.key.startsWith(keys.checkpointsPrefix(repo, RUN))).toBe(true);
      const cp = await readTransferCheckpoint(repo, RUN, d, step.checkpoint);
      expect(cp.cursor).toBe(step.cursor);
      for (const s of cp.segments) {
        expect(s.key).toBe(keys.segment(repo, s.segmentId));
        await repo.store.head(s.key);
        written.add(s.segmentId);
      }
    }
    expect(written.size).toBeGreaterThan(0);
    for (const id of written) expect(summary.segments).toContain(id);
  });

  it("GIVEN the same shard in one invocation WHEN compared with the resumed one THEN both results hold the same blocks and contents", async () => {
    const a = await setup();
    const whole = await transferShard(
      { repo: a.repo, source: a.source },
      { runId: RUN, shard: a.d, options: OPTS },
    );
    const b = await setup();
    const { summary } = await runResumed(b.repo, b.source, b.d, 25);
    const ea = await entries(a.repo, whole);
    const eb = await entries(b.repo, summary);
    expect(eb.map((e) => [e.block, Buffer.from(e.ref.sha256).toString("hex")])).toEqual(
      ea.map((e) => [e.block, Buffer.from(e.ref.sha256).toString("hex")]),
    );
    expect(summary.run.entries).toBe(whole.run.entries);
  });

  it("GIVEN a resumed invocation that dies mid-way WHEN it is retried with the same checkpoint THEN the shard completes exactly and references nothing the dead attempt wrote", async () => {
    const { repo, source, d } = await setup();
    const first = await transferShardStep(
      { repo, source, remainingMs: budget(source, 50) },
      { runId: RUN, shard: d, options: OPTS },
    );
    expect(first.done).toBe(false);
    if (first.done) return;
    // The resumed invocation stores some blocks, then a read fails for good (the sandbox dies).
    const failAt = source.getCalls + 30;
    source.getFault = () => (source.getCalls > failAt ? "fatal" : undefined);
    const before = new Set<string>();
    for await (const o of repo.store.list(`${repo.prefix}/segments/`)) before.add(o.key);
    await expect(
      transferShardStep(
        { repo, source, remainingMs: budget(source, 1000) },
        { runId: RUN, shard: d, options: OPTS, resume: first.checkpoint },
      ),
    ).rejects.toThrow();
    source.getFault = undefined;
    const orphans = new Set<string>();
    for await (const o of repo.store.list(`${repo.prefix}/segments/`))
      if (!before.has(o.key)) orphans.add(o.key);

    const retried = await transferShardStep(
      { repo, source, remainingMs: budget(source, 1000) },
      { runId: RUN, shard: d, options: OPTS, resume: first.checkpoint },
    );
    expect(retried.done).toBe(true);
    if (!retried.done) return;
    const got = await expectExact(repo, source, d, retried.summary);
    for (const e of got)
      if (e.ref.segment) expect(orphans.has(keys.segment(repo, e.ref.segment))).toBe(false);
  });

  it("GIVEN a checkpoint another attempt wrote, or one whose bytes changed WHEN handed to an invocation THEN it is refused", async () => {
    const { repo, source, d } = await setup();
    const a = await transferShardStep(
      { repo, source, remainingMs: budget(source, 30) },
      { runId: RUN, shard: d, options: OPTS },
    );
    const b = await transferShardStep(
      { repo, source, remainingMs: budget(source, 60) },
      { runId: RUN, shard: d, options: OPTS },
    );
    if (a.done || b.done) throw new Error("expected checkpoints");
    expect(a.checkpoint.key).not.toBe(b.checkpoint.key);
    // The state names a's checkpoint; b's digest (a concurrent, failed attempt's) does not fit it.
    await expect(
      transferShardStep(
        { repo, source },
        {
          runId: RUN,
          shard: d,
          options: OPTS,
          resume: { key: a.checkpoint.key, sha256: b.checkpoint.sha256 },
        },
      ),
    ).rejects.toThrow(CorruptObjectError);
    // A re-sealed checkpoint that claims more progress is not the one the state pinned.
    const got = await repo.store.get(a.checkpoint.key);
    const text = new TextDecoder().decode(got.body).replace(/"cursor":\d+/, '"cursor":199');
    await repo.store.put(a.checkpoint.key, new TextEncoder().encode(text));
    await expect(
      transferShardStep({ repo, source }, { runId: RUN, shard: d, options: OPTS, resume: a.checkpoint }),
    ).rejects.toThrow(CorruptObjectError);
    // A key outside the run's checkpoints is refused before anything is read.
    await expect(
      transferShardStep(
        { repo, source },
        { runId: RUN, shard: d, options: OPTS, resume: { key: "g/HEAD", sha256: a.checkpoint.sha256 } },
      ),
    ).rejects.toThrow(/checkpoint key under/);
  });
});
