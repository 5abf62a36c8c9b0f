/**
 * Resumable planning (issue 10: a plan that cannot finish in one Lambda invocation): an invocation
 * near its deadline stops at a shard boundary with a plan cursor, the next goes on from it, and the
 * shards are exactly those of an uninterrupted plan, also when a step is killed and retried or runs
 * twice at once from the same cursor.
 */
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { CorruptObjectError, InvalidArgumentError } from "#core/errors.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { createRepo, type Repo } from "#core/format/layout.ts";
import type { BlockSource, ListBlocksRequest } from "#core/ports/block-source.ts";
import { shardBlocksWithin, volumeBlocksOf } from "#core/transfer/concurrency.ts";
import { PlanStalledError, PlanTooLargeError } from "#core/transfer/errors.ts";
import {
  type PlanCursorRef,
  type PlanRunInput,
  type PlanRunStep,
  planCursorsPrefix,
  planRunStep,
} from "#core/transfer/plan-run.ts";
import { FakeBlockSource } from "./transfer-fixtures.ts";

const RUN = "run-plan-1";
const member = (fraction: number, salt: number) => (i: number) =>
  (Math.imul(i + 1 + salt, 2654435761) >>> 0) / 2 ** 32 < fraction;

/** One block source over several fake snapshots (by snapshot id); counts List calls. */
class Snapshots implements BlockSource {
  readonly #by = new Map<string, FakeBlockSource>();
  lists = 0;
  /** Called before each List: a test's deadline or crash. */
  beforeList: () => void = () => {};
  constructor(sources: FakeBlockSource[]) {
    for (const s of sources) this.#by.set(s.snapshotId, s);
  }
  async listBlocks(r: ListBlocksRequest) {
    this.lists++;
    this.beforeList();
    return this.#by.get(r.snapshotId)!.listBlocks(r);
  }
  async getBlock(): Promise<never> {
    throw new Error("the planner never reads blocks");
  }
}

function source(): Snapshots {
  return new Snapshots([
    new FakeBlockSource({
      snapshotId: "snap-000000000000000a1",
      volumeBlocks: 40_000,
      has: member(0.3, 1),
      absent: (i) => i % 89 === 0,
      emptyPageEvery: 4,
    }),
    new FakeBlockSource({ snapshotId: "snap-000000000000000b1", volumeBlocks: 9_000, has: () => false }),
    new FakeBlockSource({ snapshotId: "snap-000000000000000c1", volumeBlocks: 25_000, has: member(0.5, 2) }),
  ]);
}

const INPUT: PlanRunInput = {
  runId: RUN,
  volumes: [
    { volumeId: "vol-a", snapshotId: "snap-000000000000000a1", baseSnapshotId: "snap-000000000000000a0" },
    // Nothing changed: no shard at all.
    { volumeId: "vol-b", snapshotId: "snap-000000000000000b1", baseSnapshotId: "snap-000000000000000b0" },
    // First generation: every written block.
    { volumeId: "vol-c", snapshotId: "snap-000000000000000c1", baseSnapshotId: null },
  ],
  shardBlocks: 700,
  targetShards: 4,
  maxShards: 3000,
  pageSize: 300,
};

const repoOf = (store: MemoryObjectStore) => createRepo({ store, prefix: "g", group: "g" });

/** Every plan object of the run but the cursors, key → bytes (manifests without their createdAt). */
async function planObjects(repo: Repo): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const cursors = planCursorsPrefix(repo, RUN);
  for await (const o of repo.store.list(`g/runs/${RUN}/plan/`)) {
    if (o.key.startsWith(cursors)) continue;
    const body = (await repo.store.get(o.key)).body;
    if (o.key.endsWith(".json") && !o.key.endsWith("shards.json")) {
      // The manifest: its time and its List page counts (a resumed listing pages differently) aside.
      const { createdAt: _c, totals, ...rest } = JSON.parse(new TextDecoder().decode(body));
      const { listPages: _l, emptyPages: _e, ...kept } = totals;
      out.set(o.key, JSON.stringify({ ...rest, totals: kept }));
    } else out.set(o.key, Buffer.from(body).toString("base64"));
  }
  return out;
}

/** A deadline that comes after `lists` List requests of one invocation (remaining time 0 then). */
function deadlineAfter(src: Snapshots, lists: number) {
  const start = src.lists;
  return { remainingMs: () => (src.lists - start >= lists ? 0 : 1e9), stopBeforeDeadlineMs: 1 };
}

async function uninterrupted(): Promise<{ repo: Repo; step: PlanRunStep }> {
  const repo = repoOf(new MemoryObjectStore());
  const step = await planRunStep({ repo, source: source() }, { input: INPUT });
  return { repo, step };
}

/** Runs the plan to the end, each invocation cut after `lists` List requests; returns every step. */
async function resumed(repo: Repo, src: Snapshots, lists: number, from?: PlanCursorRef) {
  const steps: PlanRunStep[] = [];
  let step = await planRunStep(
    { repo, source: src, ...deadlineAfter(src, lists) },
    from ? { runId: RUN, resume: from } : { input: INPUT },
  );
  steps.push(step);
  while (!step.done) {
    step = await planRunStep(
      { repo, source: src, ...deadlineAfter(src, lists) },
      { runId: RUN, resume: step.cursor },
    );
    steps.push(step);
  }
  return steps;
}

describe("planRunStep: resumable planning", () => {
  it("GIVEN deadlines mid-plan WHEN each invocation goes on from the previous cursor THEN the shards, shard indexes and manifests are exactly those of an uninterrupted plan", async () => {
    const base = await uninterrupted();
    expect(base.step.done).toBe(true);
    const expected = await planObjects(base.repo);
    const shardLists = [...expected.keys()].filter((k) => k.endsWith(".blocks"));
    expect(shardLists.length).toBeGreaterThan(20);

    for (const lists of [4, 5, 9]) {
      const repo = repoOf(new MemoryObjectStore());
      const steps = await resumed(repo, source(), lists);
      expect(steps.length, `cut after ${lists} lists`).toBeGreaterThan(4);
      // Every stop is on a shard boundary and goes forward.
      const shards = steps.filter((s) => !s.done).map((s) => (s.done ? 0 : s.shards));
      for (let i = 1; i < shards.length; i++) expect(shards[i]!).toBeGreaterThanOrEqual(shards[i - 1]!);
      expect(await planObjects(repo)).toEqual(expected);
      const last = steps.at(-1)!;
      if (!last.done || !base.step.done) throw new Error("not done");
      expect(
        last.volumes.map((v) => [v.volumeId, v.totals.shards, v.totals.changedBlocks, v.totals.absentBlocks]),
      ).toEqual(
        base.step.volumes.map((v) => [
          v.volumeId,
          v.totals.shards,
          v.totals.changedBlocks,
          v.totals.absentBlocks,
        ]),
      );
    }
  });

  it("GIVEN a step killed mid-way (its store fails) WHEN the same step is retried from the same cursor THEN the plan is exactly the uninterrupted one", async () => {
    const expected = await planObjects((await uninterrupted()).repo);
    const store = new MemoryObjectStore();
    const repo = repoOf(store);
    const src = source();
    const first = await planRunStep({ repo, source: src, ...deadlineAfter(src, 4) }, { input: INPUT });
    if (first.done) throw new Error("expected a cursor");
    // The killed attempt: it lists and writes shard lists, then dies after 6 more List requests.
    const killAt = src.lists + 6;
    src.beforeList = () => {
      if (src.lists > killAt) throw new Error("the sandbox died (injected)");
    };
    await expect(planRunStep({ repo, source: src }, { runId: RUN, resume: first.cursor })).rejects.toThrow(
      /sandbox died/,
    );
    src.beforeList = () => {};
    const steps = await resumed(repo, src, 5, first.cursor);
    expect(steps.at(-1)!.done).toBe(true);
    expect(await planObjects(repo)).toEqual(expected);
  });

  it("GIVEN two invocations of the same step at once (a retry beside a zombie) WHEN each chain goes on to the end THEN both leave exactly the uninterrupted plan, and their cursors never overwrite each other", async () => {
    const expected = await planObjects((await uninterrupted()).repo);
    const repo = repoOf(new MemoryObjectStore());
    const src = source();
    const first = await planRunStep({ repo, source: src, ...deadlineAfter(src, 3) }, { input: INPUT });
    if (first.done) throw new Error("expected a cursor");
    // Two chains from the same cursor, cut at different points, interleaved on one store.
    const srcA = source();
    const srcB = source();
    const [chainA, chainB] = await Promise.all([
      resumed(repo, srcA, 4, first.cursor),
      resumed(repo, srcB, 9, first.cursor),
    ]);
    expect(chainA.at(-1)!.done && chainB.at(-1)!.done).toBe(true);
    expect(await planObjects(repo)).toEqual(expected);
    // Each cursor is its own object, pinned by its digest: every one still opens.
    const refs = [...chainA, ...chainB].flatMap((s) => (s.done ? [] : [s.cursor]));
    expect(new Set(refs.map((r) => r.key)).size).toBe(refs.length);
    for (const ref of refs) {
      const s = await planRunStep({ repo, source: source() }, { runId: RUN, resume: ref });
      expect(s.done).toBe(true);
    }
    expect(await planObjects(repo)).toEqual(expected);
  });

  it("GIVEN an invocation that cannot list one shard before its deadline WHEN resumed THEN it fails with PlanStalledError instead of looping", async () => {
    const repo = repoOf(new MemoryObjectStore());
    const src = source();
    const first = await planRunStep({ repo, source: src, ...deadlineAfter(src, 3) }, { input: INPUT });
    if (first.done) throw new Error("expected a cursor");
    // One List per invocation: 300 blocks a page never make a 700-block shard.
    await expect(
      planRunStep({ repo, source: src, ...deadlineAfter(src, 1) }, { runId: RUN, resume: first.cursor }),
    ).rejects.toBeInstanceOf(PlanStalledError);
  });

  it("GIVEN a cursor that is not the one returned (another digest, another run, another prefix) THEN the step refuses it", async () => {
    const repo = repoOf(new MemoryObjectStore());
    const src = source();
    const first = await planRunStep({ repo, source: src, ...deadlineAfter(src, 3) }, { input: INPUT });
    if (first.done) throw new Error("expected a cursor");
    await expect(
      planRunStep({ repo, source: src }, { runId: RUN, resume: { ...first.cursor, sha256: "0".repeat(64) } }),
    ).rejects.toBeInstanceOf(CorruptObjectError);
    await expect(
      planRunStep({ repo, source: src }, { runId: "run-other", resume: first.cursor }),
    ).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(
      planRunStep(
        { repo, source: src },
        { runId: RUN, resume: { key: "g/HEAD", sha256: first.cursor.sha256 } },
      ),
    ).rejects.toThrow(/expected a plan cursor key under/);
  });

  it("GIVEN more shards than a run passes on THEN the plan fails with PlanTooLargeError as soon as it knows", async () => {
    const whole = source();
    await planRunStep({ repo: repoOf(new MemoryObjectStore()), source: whole }, { input: INPUT });
    const repo = repoOf(new MemoryObjectStore());
    const src = source();
    await expect(
      planRunStep({ repo, source: src }, { input: { ...INPUT, maxShards: 5 } }),
    ).rejects.toBeInstanceOf(PlanTooLargeError);
    // It stopped at the sixth shard of the first volume, long before listing everything.
    expect(src.lists).toBeLessThan(whole.lists / 2);
  });

  it("GIVEN volumes too large for the configured shard size THEN shardBlocksWithin's size plans them within the limit", async () => {
    const maxShards = 12;
    // The configured 700 blocks: the first volume alone needs more than 12 shards.
    await expect(
      planRunStep(
        { repo: repoOf(new MemoryObjectStore()), source: source() },
        { input: { ...INPUT, maxShards } },
      ),
    ).rejects.toBeInstanceOf(PlanTooLargeError);
    const src = source();
    const sizes = await volumeBlocksOf(src, INPUT.volumes, BLOCK_SIZE);
    expect(sizes).toEqual([40_000, 9_000, 25_000]);
    expect(src.lists).toBe(3);
    const shardBlocks = shardBlocksWithin(sizes, INPUT.shardBlocks, maxShards);
    expect(shardBlocks).toBeGreaterThan(INPUT.shardBlocks);
    const step = await planRunStep(
      { repo: repoOf(new MemoryObjectStore()), source: source() },
      { input: { ...INPUT, shardBlocks, maxShards } },
    );
    if (!step.done) throw new Error("expected one invocation to plan it");
    const shards = step.volumes.reduce((a, v) => a + v.totals.shards, 0);
    expect(shards).toBeGreaterThan(0);
    expect(shards).toBeLessThanOrEqual(maxShards);
    // The same blocks are planned as with the configured size, only in fewer, larger shards.
    const configured = await planRunStep(
      { repo: repoOf(new MemoryObjectStore()), source: source() },
      { input: INPUT },
    );
    if (!configured.done) throw new Error("expected one invocation to plan it");
    const changed = (p: typeof step) => p.volumes.map((v) => v.totals.changedBlocks);
    expect(changed(step)).toEqual(changed(configured));
    expect(shards).toBeLessThan(configured.volumes.reduce((a, v) => a + v.totals.shards, 0));
  });
});
