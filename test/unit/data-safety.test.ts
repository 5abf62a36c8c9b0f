/**
 * Regression tests for the data-safety holes of issue 9, each reproduced through the real code: the
 * real task handlers (test/support/pipeline.ts) or the core protocol over an in-memory S3 and EBS.
 * Each test failed on the code before the fix.
 */
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import {
  encodeHead,
  listGenerations,
  readCommittedManifest,
  readGeneration,
  readHead,
  sealManifest,
} from "#core/format/generation.ts";
import { createRepo, keys } from "#core/format/layout.ts";
import { SEGMENT_TRAILER_BYTES } from "#core/format/segment.ts";
import { readVolumeIndexRoot } from "#core/format/volume-index.ts";
import { commitGeneration, fenceHead, recoverRun, revertRun } from "#core/protocol/commit.ts";
import { acquireLock } from "#core/protocol/lock.ts";
import { applyRepair, planRepair } from "#core/restore/repair.ts";
import { restoreGroup, restoreVolume } from "#core/restore/restore.ts";
import { verifyGeneration } from "#core/restore/verify.ts";
import {
  allGenerationsRestore,
  churn,
  type MemGroup,
  memGroup,
  restoreMatches,
} from "../support/mem-group.ts";
import { runPipeline } from "../support/pipeline.ts";

async function backup(g: MemGroup, runId: string, hooks?: Parameters<typeof runPipeline>[3]) {
  return runPipeline(g.deps(), g.config, runId, hooks);
}

/** Every version of every object except the lock (which each attempt takes and releases). */
async function snapshotStore(store: MemoryObjectStore): Promise<string[]> {
  const out: string[] = [];
  for await (const v of store.listVersions("")) {
    if (v.key.includes("/locks/")) continue;
    out.push(`${v.key}@${v.versionId}${v.isDeleteMarker ? " (delete marker)" : ""}`);
  }
  return out;
}

async function committedHistory(g: MemGroup, runs: number): Promise<void> {
  for (let i = 1; i <= runs; i++) {
    churn(g, i);
    expect(await backup(g, `run-${i}`)).toMatchObject({ outcome: "committed", generation: i });
  }
}

describe("1: a retried Transfer never references a segment its failed attempt did not upload", () => {
  it("GIVEN the first segment upload of a shard fails transiently WHEN the shard is retried in the same process THEN the run commits and every generation restores", async () => {
    const g = memGroup();
    await committedHistory(g, 1);
    churn(g, 99, 10);
    let failed = false;
    g.store.beforeOperation = (op, key) => {
      if (op === "put" && key.endsWith(".seg") && !failed) {
        failed = true;
        throw Object.assign(new Error("We encountered an internal error. Please try again."), {
          name: "InternalError",
          $metadata: { httpStatusCode: 500 },
        });
      }
    };
    const transferCalls: number[] = [];
    const run = await backup(g, "run-2", {
      call: (task, input, invoke, attempt) => {
        if (task === "Transfer") transferCalls.push(attempt);
        return invoke(input);
      },
    });
    g.store.beforeOperation = undefined;
    expect(failed).toBe(true);
    expect(transferCalls.length).toBeGreaterThan(1); // the failed shard was retried
    expect(run).toMatchObject({ outcome: "committed", generation: 2 });
    const report = await verifyGeneration(g.repo, { readData: 1 });
    expect(report.problems).toEqual([]);
    expect(await allGenerationsRestore(g)).toEqual([]);
    // The committed dedup index carries no dangling ref into the next generation either.
    churn(g, 100);
    expect(await backup(g, "run-3")).toMatchObject({ outcome: "committed", generation: 3 });
    expect(await allGenerationsRestore(g)).toEqual([]);
  });
});

describe("2: a missing or rolled-back HEAD stops the run; repair restores it", () => {
  it("GIVEN HEAD has a delete marker WHEN the next run starts THEN it stops with RepositoryStateError, changes nothing, and repair brings HEAD back", async () => {
    const g = memGroup();
    await committedHistory(g, 3);
    await g.store.delete(keys.head(g.repo)); // a plain `rm` in the console: a delete marker
    const before = await snapshotStore(g.store);
    const snapshotsBefore = g.ebs.snaps.size;
    churn(g, 50);
    const run = await backup(g, "run-4");
    expect(run).toMatchObject({ outcome: "reverted", error: "RepositoryStateError" });
    if (run.outcome === "reverted")
      expect(run.message).toMatch(/delete marker.*Nothing was changed.*cgmirror repair/);
    expect(await snapshotStore(g.store)).toEqual(before);
    expect(g.ebs.snaps.size).toBe(snapshotsBefore); // no committed snapshot deleted
    expect(g.metrics.some((m) => m.name === "RepositoryNeedsRepair")).toBe(true);

    const plan = await planRepair(g.repo);
    expect(plan).toMatchObject({ state: "needs-repair", chosen: { generation: 3 }, quarantine: [] });
    await applyRepair(g.repo, plan, { runId: "repair-1", fencing: 100 });
    expect((await planRepair(g.repo)).state).toBe("ok");
    expect(await backup(g, "run-5")).toMatchObject({ outcome: "committed", generation: 4 });
    expect(await allGenerationsRestore(g)).toEqual([]);
  });

  it("GIVEN HEAD was rolled back one version WHEN the next run starts THEN it stops without deleting the newer generation", async () => {
    const g = memGroup();
    await committedHistory(g, 3);
    const versions: string[] = [];
    for await (const v of g.store.listVersions(keys.head(g.repo))) versions.push(v.versionId);
    // Find the newest HEAD version that names generation 2 and put it back as current.
    let old: Uint8Array | undefined;
    for (const id of versions) {
      const got = await g.store.get(keys.head(g.repo), { versionId: id });
      if (new TextDecoder().decode(got.body).includes('"generation":2,')) {
        old = got.body;
        break;
      }
    }
    await g.store.put(keys.head(g.repo), old!);
    expect((await readHead(g.repo))!.head.generation).toBe(2);
    const before = await snapshotStore(g.store);
    churn(g, 60);
    const run = await backup(g, "run-4");
    expect(run).toMatchObject({ outcome: "reverted", error: "RepositoryStateError" });
    if (run.outcome === "reverted")
      expect(run.message).toMatch(/names generation 2 but generation 3 was committed/);
    expect(await snapshotStore(g.store)).toEqual(before);
    const plan = await planRepair(g.repo);
    expect(plan.chosen?.generation).toBe(3);
    await applyRepair(g.repo, plan, { runId: "repair-1", fencing: 100 });
    expect(await backup(g, "run-5")).toMatchObject({ outcome: "committed", generation: 4 });
    expect(await allGenerationsRestore(g)).toEqual([]);
  });
});

describe("3: the commit is fenced", () => {
  it("GIVEN run A prepared and lost the group to B WHEN A commits THEN A fails, B recovers and commits, and nothing is wedged", async () => {
    const g = memGroup();
    await committedHistory(g, 1);
    churn(g, 7);
    // Run A: everything up to Commit, then it stalls (its lease expires meanwhile).
    let resumeA!: () => void;
    const stalled = new Promise<void>((r) => {
      resumeA = r;
    });
    let reachedCommit!: () => void;
    const atCommit = new Promise<void>((r) => {
      reachedCommit = r;
    });
    const short = {
      ...g.config,
      runTimeoutMinutes: 15,
      snapshots: { ...g.config.snapshots, completionTimeoutMinutes: 10 },
    };
    const a = runPipeline(g.deps(), short, "run-a", {
      call: async (task, input, invoke) => {
        if (task === "Commit") {
          reachedCommit();
          await stalled;
        }
        return invoke(input);
      },
    });
    await atCommit;
    // B takes the expired lock over (its clock is two hours later), recovers A's prepare, commits.
    const later = g.deps({ clock: { now: () => Date.now() + 2 * 3_600_000 } });
    churn(g, 8);
    const b = await runPipeline(later, g.config, "run-b");
    expect(b).toMatchObject({ outcome: "committed", generation: 2 });
    resumeA();
    const ra = await a;
    expect(ra).toMatchObject({ outcome: "reverted", error: "LockLostError" });
    expect((await readHead(g.repo))!.head.commit).toMatchObject({ runId: "run-b" });
    churn(g, 9);
    expect(await backup(g, "run-c")).toMatchObject({ outcome: "committed", generation: 3 });
    expect(await allGenerationsRestore(g)).toEqual([]);
  });

  it("GIVEN A's commit lands between B's lock takeover and B's fence WHEN B recovers THEN it keeps A's generation and commits the next", async () => {
    const g = memGroup();
    await committedHistory(g, 1);
    churn(g, 11);
    const a = await acquireLock(g.repo, { runId: "run-a", ttlMs: 1, now: new Date(Date.now() - 10_000) });
    if (!a.acquired) throw new Error("unreachable");
    const leaseA = { runId: "run-a", fencing: a.lease.fencing };
    // A does its whole run with the core functions, stopping before Commit.
    const { writeGeneration } = await import("#core/protocol/write-generation.ts");
    const head = (await readCommittedManifest(g.repo))!;
    await fenceHead(g.repo, leaseA);
    const prepared = await writeGeneration(g.repo, {
      runId: "run-a",
      lease: leaseA,
      commit: false,
      volumes: [
        {
          volumeId: "vol-a",
          sizeBytes: 12 * BLOCK_SIZE,
          blocks: [{ block: 0, data: Buffer.alloc(BLOCK_SIZE, 7) }],
        },
      ],
    });
    // B takes the (expired) lock over; before it fences, A commits.
    const b = await acquireLock(g.repo, { runId: "run-b", ttlMs: 60_000 });
    if (!b.acquired) throw new Error("unreachable");
    const volumes = head.volumes.map((v) => {
      const p = prepared.prepared.find((x) => x.volumeId === v.volumeId);
      return p ? { ...v, index: { versionId: p.versionId ?? null, sha256: p.sha256 } } : v;
    });
    await commitGeneration(g.repo, { ...leaseA, generation: 2, pointInTime: new Date(), volumes });
    const rec = await recoverRun(g.repo, {
      runId: "run-b",
      fencing: b.lease.fencing,
      deadRunId: "run-a",
      volumeIds: g.config.volumes.map((v) => v.id),
    });
    expect(rec).toMatchObject({ deadRunCommitted: true, indexVersions: [] });
    expect((await readGeneration(g.repo, 2)).runId).toBe("run-a");
    await expect(verifyGeneration(g.repo, { generation: 2, readData: 1 })).resolves.toMatchObject({
      ok: true,
    });
  });
});

describe("4: a losing commit never overwrites a committed manifest", () => {
  it("GIVEN B commits generation 2 while A is about to write its manifest WHEN A continues and reverts THEN generation 2 is B's and restores exactly", async () => {
    const g = memGroup();
    await committedHistory(g, 1);
    churn(g, 21);
    let resumeA!: () => void;
    const stalled = new Promise<void>((r) => {
      resumeA = r;
    });
    let reached!: () => void;
    const atManifest = new Promise<void>((r) => {
      reached = r;
    });
    // A's store pauses A's manifest write: A has passed every check of its Commit by then.
    const paused = new Proxy(g.store, {
      get(target, prop, receiver) {
        if (prop === "put") {
          return async (key: string, body: Uint8Array, options?: object) => {
            if (key.includes("/generations/")) {
              reached();
              await stalled;
            }
            return target.put(key, body, options);
          };
        }
        const value = Reflect.get(target, prop, receiver);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const a = runPipeline(g.deps({ store: () => paused }), g.config, "run-a");
    await atManifest;
    churn(g, 22);
    const b = await runPipeline(
      g.deps({ clock: { now: () => Date.now() + 48 * 3_600_000 } }),
      g.config,
      "run-b",
    );
    expect(b).toMatchObject({ outcome: "committed", generation: 2 });
    const manifestB = await readGeneration(g.repo, 2);
    resumeA();
    expect(await a).toMatchObject({ outcome: "reverted", error: "LockLostError" });
    expect(await readGeneration(g.repo, 2)).toEqual(manifestB);
    expect(manifestB.runId).toBe("run-b");
    expect(await restoreMatches(g, 2)).toEqual([]);
    await expect(verifyGeneration(g.repo, { generation: 2, readData: 1 })).resolves.toMatchObject({
      ok: true,
    });
    // A's own manifest was removed by its revert; B's is the only one of generation 2.
    const left: string[] = [];
    for await (const o of g.store.list(`${g.repo.prefix}/generations/0000000002-`)) left.push(o.key);
    expect(left).toEqual([keys.manifest(g.repo, 2, b.outcome === "committed" ? b.fencing : 0)]);
  });
});

describe("5: readers reach a generation only through what HEAD committed", () => {
  it("GIVEN a run died at its HEAD write WHEN generation N is restored, verified or listed THEN it is not found", async () => {
    const g = memGroup();
    await committedHistory(g, 2);
    churn(g, 31);
    g.store.beforeOperation = (op, key) => {
      if (op === "put" && key === keys.head(g.repo) && writtenManifest)
        throw new Error("injected: died at the HEAD write");
      if (op === "put" && key.includes("/generations/")) writtenManifest = true;
    };
    let writtenManifest = false;
    const run = await runPipeline(g.deps(), g.config, "run-3", {
      call: async (task, input, invoke) => {
        if (task === "Revert" || task === "ReleaseLock") throw new Error("the run's Lambda is gone");
        return invoke(input);
      },
    });
    g.store.beforeOperation = undefined;
    expect(run.outcome).toBe("reverted");
    expect(writtenManifest).toBe(true);
    await expect(readGeneration(g.repo, 3)).rejects.toThrow(
      /generation 3 is not a committed generation.*generations 1-2/,
    );
    const dir = await mkdtemp(join(tmpdir(), "cgm-"));
    try {
      await expect(restoreGroup(g.repo, { directory: dir, generation: 3 })).rejects.toThrow(
        /not a committed generation/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    expect((await verifyGeneration(g.repo, { generation: 3 })).ok).toBe(false);
    expect(await listGenerations(g.repo)).toEqual([1, 2]);
  });
});

describe("6: every metadata byte is checked and every pointer pins its target", () => {
  it("GIVEN the committed manifest's sizeBytes re-sealed with another value WHEN restored or verified THEN both refuse", async () => {
    const g = memGroup();
    await committedHistory(g, 2);
    const head = (await readHead(g.repo))!.head;
    const key = keys.resolve(g.repo, head.commit!.manifest.key, "test");
    const m = await readGeneration(g.repo, 2);
    const forged = sealManifest({
      ...m,
      volumes: m.volumes.map((v, i) => (i === 0 ? { ...v, sizeBytes: v.sizeBytes + BLOCK_SIZE } : v)),
    });
    g.store.corrupt(key, () => forged.bytes, head.commit!.manifest.versionId!);
    const dir = await mkdtemp(join(tmpdir(), "cgm-"));
    try {
      await expect(restoreGroup(g.repo, { directory: dir })).rejects.toThrow(
        /is not the object its pointer pins/,
      );
      expect((await readdir(dir)).length).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    const report = await verifyGeneration(g.repo);
    expect(report.ok).toBe(false);
    expect(report.problems[0]?.key).toBe(key);
  });

  it("GIVEN a generation's base run swapped for another run of the same size WHEN restored THEN it refuses naming the run", async () => {
    const g = memGroup({ volumes: [{ id: "vol-a", blocks: 8 }] });
    g.ebs.write("vol-a", 1, "one");
    expect(await backup(g, "run-1")).toMatchObject({ outcome: "committed" });
    g.ebs.write("vol-a", 1, "two");
    // A full merge every generation: generation 2 gets its own base run of the same size.
    const deps = g.deps();
    expect(await runPipeline(deps, g.config, "run-2")).toMatchObject({ outcome: "committed" });
    const r1 = (
      await readVolumeIndexRoot(g.repo, "vol-a", (await readGeneration(g.repo, 1)).volumes[0]!.index)
    ).root;
    const r2 = (
      await readVolumeIndexRoot(g.repo, "vol-a", (await readGeneration(g.repo, 2)).volumes[0]!.index)
    ).root;
    const runs2 = [r2.base!, ...r2.deltas];
    const target = runs2.find((r) => r.bytes === r1.base!.bytes && r.key !== r1.base!.key);
    expect(target, "generation 2 has a run of generation 1's base size").toBeDefined();
    const other = await g.store.get(keys.resolve(g.repo, r1.base!.key, "t"));
    g.store.corrupt(keys.resolve(g.repo, target!.key, "t"), () => other.body);
    await expect(
      restoreVolume(g.repo, { volumeId: "vol-a", path: join(tmpdir(), "never.img") }),
    ).rejects.toThrow(/index run is not the run its pointer pins/);
  });
});

describe("8: a volume that shrinks is refused before commit; verify checks block numbers", () => {
  it("GIVEN a volume is smaller than in the committed generation WHEN backed up THEN the run reverts with VolumeShrunkError and HEAD stays", async () => {
    const g = memGroup();
    churn(g, 1, 12);
    g.ebs.write("vol-a", 11, "last");
    await committedHistory(g, 1);
    const v = g.ebs.volumes.get("vol-a")!;
    v.sizeBlocks = 6;
    for (const b of [...v.blocks.keys()]) if (b >= 6) v.blocks.delete(b);
    const run = await backup(g, "run-2");
    expect(run).toMatchObject({ outcome: "reverted", error: "VolumeShrunkError" });
    expect((await readHead(g.repo))!.head.generation).toBe(1);
    expect(await allGenerationsRestore(g)).toEqual([]);
  });
});

describe("9: a failed restore leaves no image", () => {
  it("GIVEN a damaged segment WHEN a volume is restored THEN it fails and leaves neither an image nor a partial file, and an existing image is untouched", async () => {
    const g = memGroup({ volumes: [{ id: "vol-a", blocks: 8 }] });
    for (let b = 0; b < 8; b++) g.ebs.write("vol-a", b, `x${b}`);
    await committedHistory(g, 1);
    const seg = [];
    for await (const o of g.store.list(`${g.repo.prefix}/segments/`)) seg.push(o.key);
    g.store.corrupt(seg.at(-1)!, (b) => {
      b[100]! ^= 1;
      return b;
    });
    const dir = await mkdtemp(join(tmpdir(), "cgm-"));
    try {
      await expect(
        restoreVolume(g.repo, { volumeId: "vol-a", path: join(dir, "vol-a.img") }),
      ).rejects.toThrow(/fails its SHA-256 check/);
      expect(await readdir(dir)).toEqual([]);
      await writeFile(join(dir, "vol-a.img"), "precious");
      await expect(
        restoreVolume(g.repo, { volumeId: "vol-a", path: join(dir, "vol-a.img") }),
      ).rejects.toThrow();
      expect(await readdir(dir)).toEqual(["vol-a.img"]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("10: verify reads every dedup page; restore refuses an unknown segment major", () => {
  it("GIVEN a damaged dedup page WHEN verified THEN verify reports it naming the run", async () => {
    const g = memGroup();
    await committedHistory(g, 2);
    const m = (await readCommittedManifest(g.repo))!;
    const root = (await readVolumeIndexRoot(g.repo, "vol-a", m.volumes[0]!.index)).root;
    const run = keys.resolve(g.repo, root.dedup!.base!.key, "t");
    g.store.corrupt(run, (b) => {
      b[60]! ^= 0x10; // inside the first page
      return b;
    });
    const report = await verifyGeneration(g.repo);
    expect(report.problems).toEqual([expect.objectContaining({ kind: "dedup", key: run })]);
  });

  it("GIVEN a segment whose trailer says major 3 WHEN restored THEN it refuses naming the segment", async () => {
    const g = memGroup({ volumes: [{ id: "vol-a", blocks: 4 }] });
    g.ebs.write("vol-a", 0, "a");
    await committedHistory(g, 1);
    const seg = [];
    for await (const o of g.store.list(`${g.repo.prefix}/segments/`)) seg.push(o.key);
    g.store.corrupt(seg[0]!, (b) => {
      new DataView(b.buffer, b.byteOffset).setUint16(b.byteLength - SEGMENT_TRAILER_BYTES + 8, 3, true);
      return b;
    });
    await expect(
      restoreVolume(g.repo, { volumeId: "vol-a", path: join(tmpdir(), "never2.img") }),
    ).rejects.toThrow(/segment 3\.0; this cgmirror reads segment 2\.x/);
  });
});

describe("11: a run id names one run", () => {
  it("GIVEN run-1 committed WHEN another backup uses run id run-1 THEN it is refused and nothing is reported committed", async () => {
    const g = memGroup();
    await committedHistory(g, 1);
    churn(g, 5);
    await expect(backup(g, "run-1")).rejects.toThrow(/run id run-1 was already used/);
    expect((await readHead(g.repo))!.head.generation).toBe(1);
  });

  it("GIVEN HEAD records a run id under another fencing number WHEN that id commits THEN it is not 'already committed'", async () => {
    const g = memGroup();
    await committedHistory(g, 1);
    const head = (await readHead(g.repo))!.head;
    await expect(
      commitGeneration(g.repo, {
        runId: "run-1",
        fencing: head.commit!.fencing + 5,
        generation: 1,
        pointInTime: new Date(),
        volumes: [],
      }),
    ).rejects.toThrow(/LockLost|fenced by/);
  });
});

describe("12: the memory store owns its bytes", () => {
  it("GIVEN a Buffer was put WHEN the caller changes it, or the bytes it got back THEN the stored object is unchanged", async () => {
    const store = new MemoryObjectStore();
    const body = Buffer.from("original");
    await store.put("k", body);
    body.write("CHANGED!");
    const got = await store.get("k");
    expect(Buffer.from(got.body).toString()).toBe("original");
    got.body[0] = 0x58;
    expect(Buffer.from((await store.get("k")).body).toString()).toBe("original");
    const part = Buffer.alloc(6 * 1024 * 1024, 1);
    const up = await store.createMultipartUpload("m");
    await up.uploadPart(1, part);
    part.fill(2);
    await up.complete();
    expect((await store.get("m")).body[0]).toBe(1);
  });
});

describe("13: a repository copied with its versions to another bucket and prefix stays readable", () => {
  it("GIVEN every version copied in order to a new store and prefix (new version ids) WHEN restored THEN every generation matches", async () => {
    const g = memGroup();
    await committedHistory(g, 3);
    const copy = new MemoryObjectStore();
    const all: Array<{ key: string; versionId: string }> = [];
    for await (const v of g.store.listVersions(`${g.repo.prefix}/`)) if (!v.isDeleteMarker) all.push(v);
    // Oldest version first per key, so the copy's newest is the source's newest.
    const byKey = new Map<string, string[]>();
    for (const v of all) byKey.set(v.key, [...(byKey.get(v.key) ?? []), v.versionId]);
    for (const [key, ids] of byKey) {
      for (const id of [...ids].reverse()) {
        const got = await g.store.get(key, { versionId: id });
        await copy.put(`elsewhere/copy/${key.slice(g.repo.prefix.length + 1)}`, got.body);
      }
    }
    const repo = createRepo({ store: copy, prefix: "elsewhere/copy", group: g.config.group });
    for (const n of await listGenerations(repo)) {
      const dir = await mkdtemp(join(tmpdir(), "cgm-copy-"));
      try {
        await restoreGroup(repo, { directory: dir, generation: n });
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
      await expect(verifyGeneration(repo, { generation: n, readData: 1 })).resolves.toMatchObject({
        ok: true,
      });
    }
    expect(await listGenerations(repo)).toEqual([1, 2, 3]);
  });
});

describe("fencing and repair details", () => {
  it("GIVEN a HEAD that carries another group's name WHEN read THEN it is refused (two groups on one prefix)", async () => {
    const g = memGroup();
    await committedHistory(g, 1);
    const head = (await readHead(g.repo))!.head;
    await g.store.put(keys.head(g.repo), encodeHead({ ...head, group: "other" }));
    await expect(readHead(g.repo)).rejects.toThrow(/belongs to group other/);
  });

  it("GIVEN revert finds the repository ambiguous WHEN it runs THEN it deletes nothing", async () => {
    const g = memGroup();
    await committedHistory(g, 2);
    await g.store.delete(keys.head(g.repo));
    const before = await snapshotStore(g.store);
    await expect(
      revertRun(g.repo, { runId: "run-2", fencing: 2, volumeIds: g.config.volumes.map((v) => v.id) }),
    ).rejects.toThrow(/needs repair/);
    expect(await snapshotStore(g.store)).toEqual(before);
  });
});
