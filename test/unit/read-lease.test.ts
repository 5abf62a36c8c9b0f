/**
 * Read leases (core/protocol/read-lease.ts, docs/format.md §10.2 "Running restores") on in-memory S3:
 * the check after the lease is written catches a generation forgotten in between; renewing an expired
 * or released lease fails; forget keeps a leased manifest and prune the leased data; prune deletes
 * nothing when a live lease names a manifest that is gone, or when a lease cannot be read.
 */
import { describe, expect, it } from "vitest";
import { GenerationNotFoundError } from "#core/errors.ts";
import { keys, type Repo } from "#core/format/layout.ts";
import { applyForget, planForget } from "#core/lifecycle/forget.ts";
import { withGroupHeld } from "#core/lifecycle/maintenance.ts";
import { PruneRefusedError, pruneRepository } from "#core/lifecycle/prune.ts";
import {
  liveReadLeases,
  READ_LEASE_TTL_MS,
  ReadLeaseLostError,
  readPinnedGeneration,
  releaseReadLease,
  renewReadLease,
  takeReadLease,
  withReadLease,
} from "#core/protocol/read-lease.ts";
import { churn, type MemGroup, memGroup, readMatches } from "../support/mem-group.ts";
import { runPipeline } from "../support/pipeline.ts";

const VOLS = [
  { id: "vol-a", instanceId: "i-a", blocks: 10 },
  { id: "vol-b", instanceId: "i-b", blocks: 8 },
] as const;

async function group(generations: number): Promise<MemGroup> {
  const g = memGroup({ volumes: VOLS });
  for (let i = 1; i <= generations; i++) {
    churn(g, i, 8);
    expect(await runPipeline(g.deps(), g.config, `run-${i}`)).toMatchObject({ outcome: "committed" });
  }
  return g;
}

let runs = 0;

function forgetAllButHead(repo: Repo, now: number) {
  return withGroupHeld(repo, { runId: `forget-${++runs}` }, async ({ lease }) =>
    applyForget(repo, lease, await planForget(repo, { keepLast: 1 }), { now }),
  );
}

function prune(repo: Repo, now: number) {
  return withGroupHeld(repo, { runId: `prune-${++runs}` }, ({ lease }) =>
    pruneRepository(repo, { lease, now: () => now, repackThreshold: 0.3 }),
  );
}

/** Every version but the lock's and HEAD's (a maintenance run takes the lock and fences HEAD). */
async function versions(g: MemGroup): Promise<string[]> {
  const out: string[] = [];
  for await (const v of g.store.listVersions(`${g.repo.prefix}/`)) {
    if (v.key === keys.head(g.repo) || v.key === keys.lock(g.repo)) continue;
    out.push(`${v.key}@${v.versionId}`);
  }
  return out;
}

describe("read leases", () => {
  it("GIVEN a lease WHEN renewed THEN it lives on; once expired or released it is lost, and expired leases are not live", async () => {
    const g = await group(2);
    const t0 = Date.now();
    const lease = await takeReadLease(g.repo, { restoreId: "r-1", generations: [1, 2, 1], now: t0 });
    expect(lease.generations.map((p) => p.generation)).toEqual([1, 2]);
    expect((await readPinnedGeneration(g.repo, lease.generations[0]!, "r-1")).generation).toBe(1);
    expect(await liveReadLeases(g.repo, t0 + 1)).toHaveLength(1);
    expect(await liveReadLeases(g.repo, t0 + READ_LEASE_TTL_MS)).toEqual([]);

    const renewed = await renewReadLease(g.repo, "r-1", t0 + READ_LEASE_TTL_MS - 1);
    expect(Date.parse(renewed.expiresAt)).toBe(t0 + 2 * READ_LEASE_TTL_MS - 1);
    expect(await liveReadLeases(g.repo, t0 + READ_LEASE_TTL_MS)).toHaveLength(1);
    await expect(renewReadLease(g.repo, "r-1", t0 + 3 * READ_LEASE_TTL_MS)).rejects.toThrow(
      ReadLeaseLostError,
    );

    await releaseReadLease(g.repo, "r-1");
    await releaseReadLease(g.repo, "r-1"); // idempotent
    await expect(renewReadLease(g.repo, "r-1", t0)).rejects.toThrow(/has no read lease/);
  });

  it("GIVEN a forget that deletes the commit record right after the lease is written WHEN the lease is taken THEN the check after it fails with GenerationNotFoundError and the lease is gone", async () => {
    const g = await group(3);
    const put = g.store.put.bind(g.store);
    let raced = false;
    g.store.put = async (key, body, options) => {
      const out = await put(key, body, options);
      if (!raced && key === keys.readLease(g.repo, "r-2")) {
        raced = true;
        await forgetAllButHead(g.repo, 0); // a lease written "now" is expired at t = 0 + TTL only
      }
      return out;
    };
    await expect(
      takeReadLease(g.repo, { restoreId: "r-2", generations: [1], now: Date.now() }),
    ).rejects.toThrow(GenerationNotFoundError);
    expect(raced).toBe(true);
    expect(await g.store.head(keys.readLease(g.repo, "r-2"))).toBeUndefined();
  });

  it("GIVEN a live lease on generation 5 of 6 WHEN forget and prune keep only HEAD THEN its manifest and data stay and nothing is repacked; released, the next prune reclaims and repacks", async () => {
    const g = await group(6);
    const now = Date.now();
    const lease = await takeReadLease(g.repo, { restoreId: "r-3", generations: [5], now });
    const forgot = await forgetAllButHead(g.repo, now);
    expect(forgot).toMatchObject({ forgotten: [1, 2, 3, 4, 5], leased: [5] });
    const report = await prune(g.repo, now);
    expect(report.leasedGenerations).toEqual([{ generation: 5, restoreIds: ["r-3"] }]);
    expect(report.retainedGenerations).toEqual([6]);
    // Mostly-garbage segments are there, but repacking would delete what the restore may be reading.
    expect(report.repack.candidates).toBeGreaterThan(0);
    expect(report.repack.segments).toBe(0);
    const m = await readPinnedGeneration(g.repo, lease.generations[0]!, "r-3");
    expect(m.generation).toBe(5);
    // Generation 5 is no longer committed for readers, but its data is whole (read through the lease's manifest).
    expect(await readMatches(g, 6)).toEqual([]);

    await releaseReadLease(g.repo, "r-3");
    const after = await prune(g.repo, now);
    expect(after.leasedGenerations).toEqual([]);
    expect(after.repack.segments).toBeGreaterThan(0);
    expect(after.deleted.manifests.count).toBe(1);
    expect(after.deleted.segments.count).toBeGreaterThan(0);
  });

  it("GIVEN a live lease whose generation's manifest is gone (a forget that ignored it: its clock was ahead) WHEN prune runs THEN it deletes nothing (PruneRefusedError naming the restore)", async () => {
    const g = await group(3);
    const now = Date.now();
    await takeReadLease(g.repo, { restoreId: "r-4", generations: [1], now });
    await forgetAllButHead(g.repo, now + READ_LEASE_TTL_MS + 1);
    const before = await versions(g);
    await expect(prune(g.repo, now)).rejects.toThrow(PruneRefusedError);
    await expect(prune(g.repo, now)).rejects.toThrow(/restore r-4 reads generation 1/);
    expect(await versions(g)).toEqual(before);
    expect(await readMatches(g, 3)).toEqual([]);
  });

  it("GIVEN a restore to files under withReadLease WHEN forget + prune run during it THEN its generation is kept and it is released after; a lease the store refuses runs it unleased, a forgotten generation does not run it", async () => {
    const g = await group(3);
    const now = Date.now();
    const inside = await withReadLease(g.repo, { restoreId: "r-6", generations: [1] }, async () => {
      await forgetAllButHead(g.repo, now);
      return prune(g.repo, now);
    });
    expect(inside.leasedGenerations).toEqual([{ generation: 1, restoreIds: ["r-6"] }]);
    expect(await liveReadLeases(g.repo, now)).toEqual([]);
    expect((await prune(g.repo, now)).deleted.manifests.count).toBe(1);

    const put = g.store.put.bind(g.store);
    g.store.put = async (key, body, options) => {
      if (key.includes("/leases/")) throw new Error("AccessDenied: no s3:PutObject on leases/");
      return put(key, body, options);
    };
    const unleased: unknown[] = [];
    const ran = await withReadLease(
      g.repo,
      { restoreId: "r-7", generations: [3], onUnleased: (e) => unleased.push(e) },
      async () => "ran",
    );
    expect(ran).toBe("ran");
    expect(String(unleased[0])).toMatch(/AccessDenied/);
    await expect(
      withReadLease(g.repo, { restoreId: "r-8", generations: [3] }, async () => "ran"),
    ).rejects.toThrow(/AccessDenied/);
    g.store.put = put;
    await expect(
      withReadLease(g.repo, { restoreId: "r-9", generations: [1], onUnleased: () => {} }, async () => "ran"),
    ).rejects.toThrow(GenerationNotFoundError);
  });

  it("GIVEN a lease object that cannot be read WHEN prune runs THEN it deletes nothing and names the object", async () => {
    const g = await group(3);
    await forgetAllButHead(g.repo, Date.now());
    const key = keys.readLease(g.repo, "r-5");
    await g.store.put(key, new TextEncoder().encode('{"format":"cgmirror.read-lease","version":"2.0"}\n'));
    const segmentsBefore = [];
    for await (const v of g.store.listVersions(`${g.repo.prefix}/segments/`)) segmentsBefore.push(v.key);
    await expect(prune(g.repo, Date.now())).rejects.toThrow(new RegExp(`CorruptObject|${key}`));
    const segmentsAfter = [];
    for await (const v of g.store.listVersions(`${g.repo.prefix}/segments/`)) segmentsAfter.push(v.key);
    expect(segmentsAfter).toEqual(segmentsBefore);
  });
});
