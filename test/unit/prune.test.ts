/**
 * Forget and prune (docs/format.md §10.2) over the real task handlers on in-memory S3 and EBS: what
 * they delete, what they keep (every retained generation reads back exactly and verifies), repack
 * through relocation records, the retired-segment set that keeps backups from deduplicating into
 * deleted segments, and a prune that a backup fences out stops.
 */
import { describe, expect, it } from "vitest";
import { readRetiredSegments, relocationKey, retiredSegmentsKey } from "#core/format/gc-state.ts";
import { listGenerations } from "#core/format/generation.ts";
import { keys } from "#core/format/layout.ts";
import { applyForget, type ForgetPlan, planForget } from "#core/lifecycle/forget.ts";
import { withGroupHeld } from "#core/lifecycle/maintenance.ts";
import { type PruneOptions, type PruneReport, pruneRepository } from "#core/lifecycle/prune.ts";
import type { ObjectVersionRef } from "#core/ports/object-store.ts";
import { verifyGeneration } from "#core/restore/verify.ts";
import { FaultyStore } from "../support/faulty-store.ts";
import { churn, type MemGroup, memGroup, readMatches } from "../support/mem-group.ts";
import { runPipeline } from "../support/pipeline.ts";

const VOLS = [
  { id: "vol-a", instanceId: "i-a", blocks: 10 },
  { id: "vol-b", instanceId: "i-b", blocks: 8 },
] as const;
const DAY = 24 * 3_600_000;

async function backups(g: MemGroup, from: number, to: number, changes = 4): Promise<void> {
  for (let i = from; i <= to; i++) {
    churn(g, i, changes);
    expect(await runPipeline(g.deps(), g.config, `run-${i}`)).toMatchObject({ outcome: "committed" });
  }
}

async function prune(
  g: MemGroup,
  options: Partial<PruneOptions> = {},
  runId = "prune-1",
): Promise<PruneReport> {
  return withGroupHeld(g.repo, { runId }, ({ lease }) => pruneRepository(g.repo, { lease, ...options }));
}

async function forget(g: MemGroup, keepLast: number, runId = "forget-1"): Promise<ForgetPlan> {
  return withGroupHeld(g.repo, { runId }, async ({ lease }) => {
    const plan = await planForget(g.repo, { keepLast });
    await applyForget(g.repo, lease, plan);
    return plan;
  });
}

async function objectCount(g: MemGroup, prefix: string): Promise<number> {
  let n = 0;
  for await (const _ of g.store.listVersions(`${g.repo.prefix}/${prefix}`)) n++;
  return n;
}

async function everyRetainedReadsBack(g: MemGroup, label: string): Promise<void> {
  for (const n of await listGenerations(g.repo)) {
    expect(await readMatches(g, n), `${label}: generation ${n} reads back`).toEqual([]);
    const report = await verifyGeneration(g.repo, { generation: n, readData: 1 });
    expect(report.problems, `${label}: generation ${n} verifies`).toEqual([]);
  }
}

describe("forget", () => {
  it("GIVEN six generations WHEN forgetting with keepLast 2 THEN only the two newest stay, each with its reason", async () => {
    const g = memGroup({ volumes: VOLS });
    await backups(g, 1, 6);
    const plan = await forget(g, 2);
    expect(plan.keep).toEqual([5, 6]);
    expect(plan.forget).toEqual([1, 2, 3, 4]);
    expect(plan.decisions.find((d) => d.generation === 6)?.reasons).toEqual(["head", "last"]);
    expect(await listGenerations(g.repo)).toEqual([5, 6]);
    await everyRetainedReadsBack(g, "after forget");
  });

  it("fails to plan with an empty policy (it would forget every generation but HEAD)", async () => {
    const g = memGroup({ volumes: VOLS });
    await backups(g, 1, 2);
    await expect(planForget(g.repo, {})).rejects.toThrow(/no rule/);
  });
});

describe("prune", () => {
  it("GIVEN forgotten generations WHEN pruning THEN their data goes, the retained ones read back, and a second prune finds nothing", async () => {
    const g = memGroup({ volumes: VOLS });
    await backups(g, 1, 8, 6);
    await forget(g, 3);
    const segmentsBefore = await objectCount(g, "segments/");
    const dry = await prune(g, { dryRun: true, repackThreshold: 1 });
    expect(dry.objectsDeleted).toBeGreaterThan(0);
    expect(await objectCount(g, "segments/")).toBe(segmentsBefore);
    const report = await prune(g, { repackThreshold: 1 }, "prune-2");
    expect(report.deleted.segments.count).toBeGreaterThan(0);
    expect(report.deleted.rootVersions.count).toBeGreaterThan(0);
    expect(report.deleted.manifests.count).toBe(0);
    await everyRetainedReadsBack(g, "after prune");
    const again = await prune(g, { repackThreshold: 1 }, "prune-3");
    expect(again.objectsDeleted).toBe(0);
    // The next backups still commit and read back (dedup never points at a deleted segment).
    await backups(g, 9, 11, 6);
    await everyRetainedReadsBack(g, "after more backups");
  });

  it("GIVEN a reverted run and a run that died WHEN pruning THEN their segments, runs and scratch files go", async () => {
    const g = memGroup({ volumes: VOLS });
    await backups(g, 1, 2);
    churn(g, 50, 6);
    const failed = await runPipeline(g.deps(), g.config, "run-failed", {
      call: (task, input, invoke) => {
        if (task === "Prepare") throw Object.assign(new Error("boom"), { name: "InternalError" });
        return invoke(input);
      },
    });
    expect(failed.outcome).toBe("reverted");
    churn(g, 51, 6);
    const dead = await runPipeline(g.deps(), g.config, "run-dead", {
      call: (task, input, invoke) => {
        if (task === "Commit" || task === "Revert") throw new Error("the execution died");
        return invoke(input);
      },
    });
    expect(dead.outcome).toBe("reverted");
    const report = await withGroupHeld(
      g.repo,
      { runId: "prune-1", now: new Date(Date.now() + DAY) },
      ({ lease }) => pruneRepository(g.repo, { lease, repackThreshold: 1 }),
    );
    expect(report.deleted.segments.count).toBeGreaterThan(0);
    expect(await objectCount(g, "runs/")).toBe(0);
    await everyRetainedReadsBack(g, "after prune");
    await backups(g, 3, 4);
    await everyRetainedReadsBack(g, "after more backups");
  });

  it("GIVEN segments that are mostly garbage WHEN pruning THEN they are repacked, reads follow the relocation records, and a later prune reclaims the repacked segments in turn", async () => {
    const g = memGroup({ volumes: VOLS });
    await backups(g, 1, 6, 8);
    await forget(g, 2);
    const report = await prune(g, { repackThreshold: 0.3, segmentBytes: 4 * 524_288 });
    expect(report.repack.segments).toBeGreaterThan(0);
    expect(report.repack.newSegments).toBeGreaterThan(0);
    let records = 0;
    for await (const o of g.store.list(`${g.repo.prefix}/segments/`)) if (o.key.endsWith(".moved")) records++;
    expect(records).toBeGreaterThan(0);
    await everyRetainedReadsBack(g, "after repack");
    await backups(g, 7, 10, 8);
    await forget(g, 2, "forget-2");
    const second = await prune(g, { repackThreshold: 0.3, segmentBytes: 4 * 524_288 }, "prune-2");
    // The repacked segments' blocks are garbage now too: repacked again or deleted with their records.
    expect(second.repack.segments + second.deleted.relocations.count).toBeGreaterThan(0);
    await everyRetainedReadsBack(g, "after the second repack");
    const third = await prune(g, { repackThreshold: 0.3, segmentBytes: 4 * 524_288 }, "prune-3");
    expect(third.deleted.segments.count).toBe(0);
    expect(relocationKey(g.repo, "00".repeat(16))).toMatch(/segments\/00\/0{32}\.moved$/);
  });

  it("GIVEN a prune that deletes segments HEAD's dedup runs name WHEN the same content is written again THEN the backup stores it anew and it reads back", async () => {
    const g = memGroup({ volumes: VOLS });
    g.ebs.write("vol-a", 1, "payload-x");
    await backups(g, 1, 1, 0);
    g.ebs.write("vol-a", 1, "payload-y");
    await backups(g, 2, 2, 0);
    await forget(g, 1);
    const report = await prune(g, { repackThreshold: 1 });
    expect(report.deleted.segments.count).toBeGreaterThan(0);
    const { retired } = await readRetiredSegments(g.repo);
    expect(retired.size).toBeGreaterThan(0);
    g.ebs.write("vol-b", 2, "payload-x");
    await backups(g, 3, 3, 0);
    await everyRetainedReadsBack(g, "content re-stored");
  });

  it("fails with LockLostError and deletes nothing more when a backup fences the group during the prune", async () => {
    const g = memGroup({ volumes: VOLS });
    await backups(g, 1, 5, 6);
    await forget(g, 2);
    let fenced = false;
    const store = new (class extends FaultyStore {
      override async deleteVersions(refs: readonly ObjectVersionRef[]) {
        if (!fenced) {
          fenced = true;
          // A backup takes the group over (the prune's lease expired) before the first delete lands.
          churn(g, 40, 4);
          const run = await runPipeline(
            g.deps({ clock: { now: () => Date.now() + DAY } }),
            g.config,
            "run-takeover",
          );
          expect(run.outcome).toBe("committed");
        }
        return super.deleteVersions(refs);
      }
    })(g.store);
    const repo = { ...g.repo, store };
    await expect(
      withGroupHeld(repo, { runId: "prune-1", ttlMs: 1 }, ({ lease }) => pruneRepository(repo, { lease })),
    ).rejects.toThrow(/LockLost|fenced by run/);
    await everyRetainedReadsBack(g, "after the fenced-out prune");
    const after = await prune(g, {}, "prune-2");
    expect(after.retainedGenerations).toContain(6);
    await everyRetainedReadsBack(g, "after the next prune");
    expect(keys.head(g.repo)).toMatch(/HEAD$/);
  });
});

describe("what prune leaves behind is checked when read", () => {
  it("fails the next backup (naming the object) and reports in verify when a byte of the retired-segment set is flipped; nothing committed changes", async () => {
    const g = memGroup({ volumes: VOLS });
    await backups(g, 1, 4, 6);
    await forget(g, 1);
    await prune(g, { repackThreshold: 1 });
    const key = retiredSegmentsKey(g.repo);
    const got = await g.store.get(key);
    expect(got.body.byteLength).toBeGreaterThan(48);
    const bad = Buffer.from(got.body);
    bad[20] = bad[20]! ^ 0x01;
    await g.store.put(key, bad);
    churn(g, 50, 4);
    const run = await runPipeline(g.deps(), g.config, "run-after-flip");
    expect(run.outcome).toBe("reverted");
    expect(run).toMatchObject({ message: expect.stringContaining("retired-segments") });
    const report = await verifyGeneration(g.repo, {});
    expect(report.problems.some((p) => p.key === key)).toBe(true);
    // Restore does not read the retired set: every retained generation still reads back exactly.
    for (const n of await listGenerations(g.repo)) expect(await readMatches(g, n)).toEqual([]);
  });

  it("fails a restore of a repacked segment's block, naming the relocation record, when a byte of the record is flipped", async () => {
    const g = memGroup({ volumes: VOLS });
    for (const b of [0, 1, 2]) g.ebs.write("vol-a", b, `first-${b}`);
    await backups(g, 1, 1, 0);
    for (const b of [0, 1]) g.ebs.write("vol-a", b, `second-${b}`);
    await backups(g, 2, 2, 0);
    await forget(g, 1);
    const report = await prune(g, { repackThreshold: 0.3 });
    expect(report.repack.segments).toBeGreaterThan(0);
    let recordKey: string | undefined;
    for await (const o of g.store.list(`${g.repo.prefix}/segments/`))
      if (o.key.endsWith(".moved")) recordKey = o.key;
    const got = await g.store.get(recordKey!);
    const text = Buffer.from(got.body).toString("utf8").replace('"at":0', '"at":1');
    await g.store.put(recordKey!, Buffer.from(text));
    await expect(readMatches(g, 2)).rejects.toThrow(/\.moved.*corrupt|corrupt.*\.moved/);
  });
});
