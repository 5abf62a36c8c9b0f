/**
 * Issue 10, finding 5: a reverted run leaks no segment. Revert (and Recover, for a run it takes over
 * that provably did not commit) deletes the segments the run wrote, found from its shard results and
 * Transfer checkpoints, and never a segment a committed generation references. A Transfer whose run
 * lost the group uploads no further segment (core/run-guard.ts).
 *
 * Runs the real task handlers over in-memory S3 and EBS (test/support/pipeline.ts).
 */
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { LockLostError } from "#core/errors.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { readHead } from "#core/format/generation.ts";
import { createRepo, keys, type Repo } from "#core/format/layout.ts";
import { encodeMetadata } from "#core/format/metadata.ts";
import { SEGMENT_RUN_ID_METADATA } from "#core/format/segment.ts";
import { revertRun } from "#core/protocol/commit.ts";
import { acquireLock, readLock, releaseLock } from "#core/protocol/lock.ts";
import { RunGuard } from "#core/protocol/run-guard.ts";
import { readRunSegmentRecords } from "#core/protocol/run-segments.ts";
import { planVolume } from "#core/transfer/planner.ts";
import { planKeys } from "#core/transfer/shard-list.ts";
import { transferShard } from "#core/transfer/worker.ts";
import { churn, type MemGroup, memGroup, readMatches } from "../support/mem-group.ts";
import { runPipeline } from "../support/pipeline.ts";
import { FakeBlockSource } from "./transfer-fixtures.ts";

const VOLS = [
  { id: "vol-a", instanceId: "i-a", blocks: 12 },
  { id: "vol-b", instanceId: "i-b", blocks: 10 },
] as const;
const DAY = 24 * 3_600_000;

/** Segment keys under the repository, with the run their metadata names. */
async function segmentsByRun(g: { store: MemoryObjectStore; repo: Repo }): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  const prefix = keys.segment(g.repo, "00000000000000000000000000000000").replace(/00\/0+\.seg$/, "");
  for await (const o of g.store.list(prefix)) {
    const h = await g.store.head(o.key);
    const run = h?.metadata[SEGMENT_RUN_ID_METADATA] ?? "(none)";
    out.set(run, [...(out.get(run) ?? []), o.key]);
  }
  return out;
}

/** Fails the run at Commit (after every segment, result and index version was written). */
const failAtCommit = {
  call: async (task: string, input: unknown, invoke: (i: unknown) => Promise<unknown>) => {
    if (task === "Commit") throw Object.assign(new Error("HEAD moved"), { name: "CommitConflictError" });
    return invoke(input);
  },
};

async function committedGroup(): Promise<MemGroup> {
  const g = memGroup({ volumes: VOLS });
  for (const i of [1, 2]) {
    churn(g, i, 6);
    expect(await runPipeline(g.deps(), g.config, `run-${i}`)).toMatchObject({ outcome: "committed" });
  }
  return g;
}

describe("Revert deletes the segments of the reverted run", () => {
  it("GIVEN a run that wrote segments and failed at Commit WHEN it is reverted THEN no segment of it is left and every committed generation reads back", async () => {
    const g = await committedGroup();
    churn(g, 3, 8);
    const out = await runPipeline(g.deps(), g.config, "run-3", failAtCommit);
    expect(out).toMatchObject({ outcome: "reverted", revert: { alreadyCommitted: false } });
    const revert = (out as { revert: { deletedSegments: number } }).revert;
    expect(revert.deletedSegments).toBeGreaterThan(0);
    const byRun = await segmentsByRun(g);
    expect(byRun.get("run-3")).toBeUndefined();
    expect(byRun.get("run-1")?.length).toBeGreaterThan(0);
    expect(await readMatches(g, 1)).toEqual([]);
    expect(await readMatches(g, 2)).toEqual([]);
    // The next run commits from the committed state.
    churn(g, 4, 3);
    expect(await runPipeline(g.deps(), g.config, "run-4")).toMatchObject({ outcome: "committed" });
    expect(await readMatches(g)).toEqual([]);
  });

  it("GIVEN Transfer attempts that wrote their result run but crashed before their summary THEN Revert finds their segments in the result runs", async () => {
    const g = await committedGroup();
    churn(g, 3, 8);
    let crashed = 0;
    const out = await runPipeline(g.deps(), g.config, "run-3", {
      call: async (task, input, invoke) => {
        const result = await invoke(input);
        if (task === "Transfer") {
          const { volumeId, shard } = input as { volumeId: string; shard: number };
          await g.store.delete(planKeys.shardSummary(g.repo, "run-3", volumeId, shard));
          crashed++;
          throw Object.assign(new Error("crashed before its summary"), { name: "Crash" });
        }
        return result;
      },
    });
    expect(out).toMatchObject({ outcome: "reverted", error: "Crash" });
    expect(crashed).toBeGreaterThan(0);
    expect((await segmentsByRun(g)).get("run-3")).toBeUndefined();
    expect(await readMatches(g, 2)).toEqual([]);
  });

  it("GIVEN a reverted run whose blocks were deduplicated against committed segments THEN Revert keeps those segments (their metadata names another run)", async () => {
    const g = memGroup({ volumes: VOLS });
    for (let i = 0; i < 6; i++) g.ebs.write("vol-a", i, `kept-${i}`);
    expect(await runPipeline(g.deps(), g.config, "run-1")).toMatchObject({ outcome: "committed" });
    churn(g, 2, 6);
    expect(await runPipeline(g.deps(), g.config, "run-2")).toMatchObject({ outcome: "committed" });
    // The same content written elsewhere: run-3 references run-1's segments for it (dedup), next to
    // segments of its own.
    for (let i = 0; i < 6; i++) g.ebs.write("vol-b", i, `kept-${i}`);
    churn(g, 4, 4);
    const before = await segmentsByRun(g);
    const run1 = new Set(before.get("run-1")!.map((k) => k.replace(/^.*\/([0-9a-f]{32})\.seg$/, "$1")));
    let referencedRun1 = 0;
    const out = await runPipeline(g.deps(), g.config, "run-3", {
      call: async (task, input, invoke) => {
        if (task === "Commit") throw Object.assign(new Error("HEAD moved"), { name: "CommitConflictError" });
        if (task === "Revert") {
          const records = await readRunSegmentRecords(g.repo, "run-3");
          referencedRun1 = [...records.segmentIds].filter((id) => run1.has(id)).length;
        }
        return invoke(input);
      },
    });
    expect(out).toMatchObject({ outcome: "reverted" });
    expect(referencedRun1).toBeGreaterThan(0);
    const after = await segmentsByRun(g);
    expect(after.get("run-3")).toBeUndefined();
    for (const run of ["run-1", "run-2"]) expect(after.get(run), run).toEqual(before.get(run));
    expect(await readMatches(g, 1)).toEqual([]);
    expect(await readMatches(g, 2)).toEqual([]);
  });

  it("GIVEN a run that committed (its answer was lost) WHEN Revert runs for it THEN nothing is deleted", async () => {
    const g = await committedGroup();
    churn(g, 3, 6);
    expect(await runPipeline(g.deps(), g.config, "run-3")).toMatchObject({ outcome: "committed" });
    const before = await segmentsByRun(g);
    const head = (await readHead(g.repo))!.head;
    const outcome = await revertRun(g.repo, {
      runId: "run-3",
      fencing: head.commit!.fencing,
      volumeIds: VOLS.map((v) => v.id),
    });
    expect(outcome).toMatchObject({ alreadyCommitted: true });
    expect(await segmentsByRun(g)).toEqual(before);
    expect(await readMatches(g)).toEqual([]);
  });

  it("GIVEN a run taken over by a run that then committed WHEN the old run's Revert runs late THEN it leaves its segments to prune and deletes nothing committed", async () => {
    const g = await committedGroup();
    churn(g, 3, 6);
    // run-3 wrote everything, then its execution died (no Commit, no Revert): the lock stays.
    const dead = await runPipeline(g.deps(), g.config, "run-3", {
      call: async (task, input, invoke) => {
        if (task === "Commit" || task === "Revert") throw new Error("the execution died");
        return invoke(input);
      },
    });
    expect(dead.outcome).toBe("reverted");
    // Keep a copy of run-3's records: run-4's Recover deletes them with run-3's segments.
    const deadFencing = (await readLock(g.repo))!.record.fencing;
    churn(g, 4, 3);
    const later = g.deps({ clock: { now: () => Date.now() + DAY } });
    expect(await runPipeline(later, g.config, "run-4")).toMatchObject({ outcome: "committed" });
    expect((await segmentsByRun(g)).get("run-3")).toBeUndefined(); // Recover deleted them
    const before = await segmentsByRun(g);
    const late = await revertRun(g.repo, {
      runId: "run-3",
      fencing: deadFencing,
      volumeIds: VOLS.map((v) => v.id),
    });
    expect(late).toMatchObject({ alreadyCommitted: false });
    if (late.alreadyCommitted) throw new Error("unreachable");
    expect(late.segments.skipped).toMatch(
      /run run-4 \(fencing \d+\) committed generation 3 after this run fenced/,
    );
    expect(await segmentsByRun(g)).toEqual(before);
    for (const n of [1, 2, 3]) expect(await readMatches(g, n), `generation ${n}`).toEqual([]);
  });

  it("GIVEN a run that committed and died before ReleaseLock WHEN the next run takes over THEN its Recover deletes none of the dead run's segments", async () => {
    const g = await committedGroup();
    churn(g, 3, 6);
    const died = await runPipeline(g.deps(), g.config, "run-3", {
      call: async (task, input, invoke) => {
        if (task === "ReleaseLock" || task === "Revert") throw new Error("the execution died");
        return invoke(input);
      },
    });
    expect(died.outcome).toBe("committed");
    expect((await readLock(g.repo))!.record).toMatchObject({ runId: "run-3", released: false });
    expect((await readHead(g.repo))!.head.commit?.runId).toBe("run-3");
    const before = await segmentsByRun(g);
    expect(before.get("run-3")?.length).toBeGreaterThan(0);
    churn(g, 4, 3);
    const later = g.deps({ clock: { now: () => Date.now() + DAY } });
    expect(await runPipeline(later, g.config, "run-4")).toMatchObject({ outcome: "committed" });
    expect((await segmentsByRun(g)).get("run-3")).toEqual(before.get("run-3"));
    for (const n of [1, 2, 3, 4]) expect(await readMatches(g, n), `generation ${n}`).toEqual([]);
  });

  it("GIVEN a dead run whose run plan fails its check WHEN the next run takes over THEN its segments are left to prune (its generation is unknown)", async () => {
    const g = await committedGroup();
    churn(g, 3, 6);
    await runPipeline(g.deps(), g.config, "run-3", {
      call: async (task, input, invoke) => {
        if (task === "Commit" || task === "Revert") throw new Error("the execution died");
        return invoke(input);
      },
    });
    const planKey = `${keys.runPrefix(g.repo, "run-3")}plan.json`;
    const plan = (await g.store.get(planKey)).body.slice();
    plan[20] = plan[20]! ^ 1;
    await g.store.put(planKey, plan);
    const before = (await segmentsByRun(g)).get("run-3");
    expect(before?.length).toBeGreaterThan(0);
    churn(g, 4, 3);
    const later = g.deps({ clock: { now: () => Date.now() + DAY } });
    expect(await runPipeline(later, g.config, "run-4")).toMatchObject({ outcome: "committed" });
    expect((await segmentsByRun(g)).get("run-3")).toEqual(before);
    for (const n of [1, 2, 3]) expect(await readMatches(g, n), `generation ${n}`).toEqual([]);
  });

  it("GIVEN Transfer checkpoints WHEN Revert reads them THEN a checked checkpoint's segments are deleted and a checkpoint that fails its check is not trusted", async () => {
    const g = await committedGroup();
    const ours = async (id: string) => {
      await g.store.put(keys.segment(g.repo, id), new Uint8Array([1, 2, 3]), {
        metadata: { [SEGMENT_RUN_ID_METADATA]: "run-9", "cgmirror-kind": "segment" },
      });
      return { segmentId: id, key: keys.relative(g.repo, keys.segment(g.repo, id)) };
    };
    const good = await ours("a".repeat(32));
    const bad = await ours("b".repeat(32));
    const elsewhere = await ours("c".repeat(32));
    const cp = (name: string) => `${keys.runPrefix(g.repo, "run-9")}checkpoints/vol-a/${name}`;
    await g.store.put(
      cp("000000-0001-x.json"),
      encodeMetadata("cgmirror.transfer-checkpoint", { runId: "run-9", segments: [good] }),
    );
    const sealed = encodeMetadata("cgmirror.transfer-checkpoint", { runId: "run-9", segments: [bad] });
    sealed[sealed.length - 5] = sealed[sealed.length - 5]! ^ 1; // its seal fails
    await g.store.put(cp("000000-0002-y.json"), sealed);
    await g.store.put(
      cp("000001-0001-z.json"),
      encodeMetadata("cgmirror.transfer-checkpoint", {
        runId: "run-9",
        segments: [{ segmentId: elsewhere.segmentId, key: "segments/zz/elsewhere.seg" }],
      }),
    );
    const records = await readRunSegmentRecords(g.repo, "run-9");
    expect([...records.segmentIds]).toEqual([good.segmentId]);
    expect(records.untrusted).toEqual([cp("000000-0002-y.json"), cp("000001-0001-z.json")]);
    const head = (await readHead(g.repo))!.head;
    const out = await revertRun(g.repo, {
      runId: "run-9",
      fencing: head.fence.fencing + 1,
      volumeIds: VOLS.map((v) => v.id),
    });
    if (out.alreadyCommitted) throw new Error("unexpected");
    expect(out.segments).toMatchObject({ deletedSegments: 1, untrusted: records.untrusted });
    expect(await g.store.head(keys.segment(g.repo, good.segmentId))).toBeUndefined();
    expect(await g.store.head(keys.segment(g.repo, bad.segmentId))).toBeDefined();
    expect(await g.store.head(keys.segment(g.repo, elsewhere.segmentId))).toBeDefined();
    expect(await readMatches(g)).toEqual([]);
  });

  it("GIVEN a Revert crashed at each of its deletes (and retried, or finished by the next run's Recover) THEN it converges: no segment of the run left, committed data intact", async () => {
    // Which deletes does a clean Revert make?
    const base = await committedGroup();
    churn(base, 3, 8);
    const probe = memGroup({ volumes: VOLS, from: base });
    const seen: string[] = [];
    const counting = {
      call: async (task: string, input: unknown, invoke: (i: unknown) => Promise<unknown>) => {
        if (task === "Commit") throw Object.assign(new Error("HEAD moved"), { name: "CommitConflictError" });
        return invoke(input);
      },
    };
    const origDelete = probe.store.deleteVersions.bind(probe.store);
    let inRevert = false;
    probe.store.deleteVersions = async (objs) => {
      if (inRevert && objs.length > 0) seen.push(objs[0]!.key);
      return origDelete(objs);
    };
    await runPipeline(probe.deps(), probe.config, "run-3", {
      call: async (task, input, invoke) => {
        inRevert = task === "Revert";
        return counting.call(task, input, invoke);
      },
    });
    expect(seen.some((k) => k.includes("/segments/") || k.startsWith("segments/"))).toBe(true);
    for (let at = 1; at <= seen.length; at++) {
      for (const then of ["retry", "die"] as const) {
        const g = memGroup({ volumes: VOLS, from: base });
        const real = g.store.deleteVersions.bind(g.store);
        let n = 0;
        let revert = false;
        g.store.deleteVersions = async (objs) => {
          if (revert && objs.length > 0 && ++n === at) {
            throw Object.assign(new Error("injected crash"), {
              name: then === "retry" ? "InternalError" : "Crash",
            });
          }
          return real(objs);
        };
        const out = await runPipeline(g.deps(), g.config, "run-3", {
          call: async (task, input, invoke) => {
            revert = task === "Revert";
            return counting.call(task, input, invoke);
          },
        });
        expect(out.outcome, `${then} at delete ${at}`).toBe("reverted");
        // "die": the Revert failed for good (RevertFailed): the lock stays; the next run takes over.
        g.store.deleteVersions = real;
        churn(g, 5, 2);
        const next = await runPipeline(g.deps({ clock: { now: () => Date.now() + DAY } }), g.config, "run-4");
        expect(next, `${then} at delete ${at}`).toMatchObject({ outcome: "committed" });
        expect((await segmentsByRun(g)).get("run-3"), `${then} at delete ${at}`).toBeUndefined();
        for (const gen of [1, 2, 3])
          expect(await readMatches(g, gen), `${then} at ${at}: generation ${gen}`).toEqual([]);
      }
    }
  });
});

describe("a Transfer stops writing segments once its run lost the group", () => {
  async function shardSetup() {
    const store = new MemoryObjectStore();
    const repo = createRepo({ store, prefix: "g", group: "g" });
    const source = new FakeBlockSource({ volumeBlocks: 200, has: () => true });
    const plan = await planVolume(
      { repo, source },
      {
        runId: "run-1",
        volumeId: "vol-1",
        snapshotId: source.snapshotId,
        baseSnapshotId: null,
        shardBlocks: 200,
        pageSize: 100,
      },
    );
    return { store, repo, source, shard: plan.shards![0]! };
  }

  it("GIVEN another run takes the lock over (higher fencing) mid-shard THEN the Transfer fails with LockLostError and uploads no further segment", async () => {
    const { store, repo, source, shard } = await shardSetup();
    const now = Date.parse("2026-01-01T00:00:00Z");
    await acquireLock(repo, { runId: "run-1", ttlMs: 3_600_000, now: new Date(now) });
    const guard = new RunGuard(repo, "run-1", { now: () => now, maxAgeMs: 0 });
    let takenOver = false;
    let segmentsAfter = 0;
    let segmentsBefore = 0;
    const put = store.put.bind(store);
    store.put = async (key, body, options) => {
      if (!key.endsWith(".seg")) return put(key, body, options);
      if (takenOver) segmentsAfter++;
      else segmentsBefore++;
      const done = await put(key, body, options);
      if (segmentsBefore === 2 && !takenOver) {
        // run-1's execution ended without releasing (its Map failed, its Transfers keep going):
        // run-2 takes the group over at once, with a higher fencing number.
        const taken = await acquireLock(repo, {
          runId: "run-2",
          ttlMs: 3_600_000,
          now: new Date(now),
          holderState: async () => "ended",
        });
        expect(taken).toMatchObject({ acquired: true, takenOverFrom: "run-1" });
        takenOver = true;
      }
      return done;
    };
    const error = await transferShard(
      { repo, source, beforeSegmentUpload: () => guard.check() },
      {
        runId: "run-1",
        shard,
        options: {
          compression: "none",
          segmentBytes: 4 * BLOCK_SIZE,
          allowSmallSegments: true,
          initialRate: 5000,
          maxRate: 100_000,
          maxConcurrency: 4,
        },
      },
    ).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(error).toBeInstanceOf(LockLostError);
    expect(error?.message).toContain("run run-2 (fencing 2) holds the group");
    expect(takenOver).toBe(true);
    expect(segmentsBefore).toBeGreaterThan(0);
    expect(segmentsAfter).toBe(0);
    expect((await readLock(repo))!.record).toMatchObject({ runId: "run-2", fencing: 2 });
  });

  it("RunGuard: reuses a positive answer for maxAgeMs, and a lost group (released, taken, expired) stays lost", async () => {
    const store = new MemoryObjectStore();
    const repo = createRepo({ store, prefix: "", group: "g" });
    let now = 1_000_000;
    await acquireLock(repo, { runId: "r1", ttlMs: 10_000, now: new Date(now) });
    const guard = new RunGuard(repo, "r1", { now: () => now, maxAgeMs: 1000 });
    await guard.check();
    await guard.check();
    await Promise.all([guard.check(), guard.check()]);
    expect(guard.reads).toBe(1);
    now += 1000;
    await guard.check();
    expect(guard.reads).toBe(2);
    await releaseLock(repo, { runId: "r1", fencing: 1 });
    await guard.check(); // still within maxAgeMs of the last read
    now += 1000;
    await expect(guard.check()).rejects.toThrow(/released the group/);
    await expect(guard.check()).rejects.toBeInstanceOf(LockLostError);
    expect(guard.reads).toBe(3);

    const expiring = new RunGuard(repo, "r2", { now: () => now, maxAgeMs: 0 });
    await acquireLock(repo, { runId: "r2", ttlMs: 5000, now: new Date(now) });
    await expiring.check();
    now += 5000;
    await expect(expiring.check()).rejects.toThrow(/lease expired/);
    const other = new RunGuard(repo, "r3", { now: () => now });
    await expect(other.check()).rejects.toThrow(/run r2 \(fencing 2\) holds the group/);
  });
});
