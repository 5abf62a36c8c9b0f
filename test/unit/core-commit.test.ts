import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { LockLostError } from "#core/errors.ts";
import {
  encodeHead,
  manifestPrefixOf,
  readCommitRecord,
  readCommittedManifest,
  readGeneration,
  readHead,
} from "#core/format/generation.ts";
import { createRepo, keys } from "#core/format/layout.ts";
import { commitGeneration, fenceHead, recoverRun, revertRun } from "#core/protocol/commit.ts";
import { acquireLock, assertLockHeld, releaseLock, renewLock } from "#core/protocol/lock.ts";
import { verifyGeneration } from "#core/restore/verify.ts";
import { VolumeModel } from "../support/blocks.ts";
import { backupGeneration, twoGenerations, VOLUMES } from "../support/repo-scenarios.ts";

const newRepo = () => {
  const store = new MemoryObjectStore();
  return { store, repo: createRepo({ store, prefix: "p", group: "orders" }) };
};

describe("group lock", () => {
  it("GIVEN no lock WHEN a run acquires THEN it gets fencing 1 and a second run is skipped", async () => {
    const { repo } = newRepo();
    const a = await acquireLock(repo, { runId: "a", ttlMs: 60_000 });
    expect(a).toMatchObject({ acquired: true, lease: { runId: "a", fencing: 1 } });
    expect(await acquireLock(repo, { runId: "b", ttlMs: 60_000 })).toMatchObject({
      acquired: false,
      holderRunId: "a",
    });
    expect(await acquireLock(repo, { runId: "a", ttlMs: 60_000 })).toMatchObject({
      acquired: true,
      lease: { fencing: 1 },
    });
  });

  it("GIVEN an expired lock WHEN another run acquires THEN it takes over with a higher fencing number and the old lease is lost", async () => {
    const { repo } = newRepo();
    const old = await acquireLock(repo, { runId: "a", ttlMs: 1000, now: new Date(Date.now() - 5000) });
    const b = await acquireLock(repo, { runId: "b", ttlMs: 60_000 });
    expect(b).toMatchObject({ acquired: true, lease: { fencing: 2 }, takenOverFrom: "a" });
    if (!old.acquired) throw new Error("unreachable");
    await expect(assertLockHeld(repo, old.lease)).rejects.toThrow(/LockLost|no longer held/);
    await expect(renewLock(repo, old.lease, 1000)).rejects.toThrow(/no longer held/);
    expect(await releaseLock(repo, old.lease)).toBe(false);
  });

  it("GIVEN a released lock WHEN acquired again THEN fencing keeps increasing", async () => {
    const { repo } = newRepo();
    const a = await acquireLock(repo, { runId: "a", ttlMs: 60_000 });
    if (!a.acquired) throw new Error("unreachable");
    expect(await releaseLock(repo, a.lease)).toBe(true);
    expect(await releaseLock(repo, a.lease)).toBe(true);
    expect(await acquireLock(repo, { runId: "b", ttlMs: 60_000 })).toMatchObject({
      acquired: true,
      lease: { fencing: 2 },
      takenOverFrom: undefined,
    });
  });

  it("GIVEN a live lock whose holder's execution has ended WHEN another run acquires THEN it takes over at once, above HEAD's fence, and the old run is fenced out", async () => {
    const { repo } = newRepo();
    const dead = await fenced(repo, "dead", 3_600_000); // fenced HEAD, then its execution failed
    const asked: string[] = [];
    const b = await acquireLock(repo, {
      runId: "b",
      ttlMs: 60_000,
      holderState: async (runId) => {
        asked.push(runId);
        return "ended";
      },
    });
    expect(asked).toEqual(["dead"]);
    expect(b).toMatchObject({
      acquired: true,
      lease: { fencing: dead.fencing + 1 },
      takenOverFrom: "dead",
      takeover: "holderEnded",
    });
    if (!b.acquired) throw new Error("unreachable");
    await fenceHead(repo, { runId: "b", fencing: b.lease.fencing });
    // The old run cannot commit, renew or release any more (docs/format.md §9.1).
    await expect(
      commitGeneration(repo, { ...dead, generation: 1, pointInTime: new Date(), volumes: [] }),
    ).rejects.toThrow(LockLostError);
    expect(await releaseLock(repo, dead)).toBe(false);
  });

  it("GIVEN a live lock whose holder is running or whose state is unknown WHEN another run acquires THEN it is skipped until the lease expires", async () => {
    const { repo } = newRepo();
    await acquireLock(repo, { runId: "a", ttlMs: 60_000 });
    for (const state of ["running", "unknown"] as const) {
      expect(
        await acquireLock(repo, { runId: "b", ttlMs: 60_000, holderState: async () => state }),
      ).toMatchObject({ acquired: false, holderRunId: "a" });
    }
    const later = new Date(Date.now() + 120_000);
    expect(
      await acquireLock(repo, { runId: "b", ttlMs: 60_000, now: later, holderState: async () => "unknown" }),
    ).toMatchObject({ acquired: true, takenOverFrom: "a", takeover: "expired" });
  });

  it("GIVEN concurrent acquirers WHEN they race THEN exactly one holds the lock", async () => {
    const { repo } = newRepo();
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => acquireLock(repo, { runId: `r${i}`, ttlMs: 60_000 })),
    );
    expect(results.filter((r) => r.acquired)).toHaveLength(1);
  });
});

/** Acquires the lock and fences HEAD for `runId`: what AcquireLock + Recover do for a run. */
let lockClock = Date.now() - 3_600_000;
async function fenced(repo: ReturnType<typeof newRepo>["repo"], runId: string, ttlMs = 1) {
  // Leases of 1 ms on a clock that advances a second per call: the next caller always takes over.
  lockClock += 1000;
  const got = await acquireLock(repo, { runId, ttlMs, now: new Date(lockClock) });
  if (!got.acquired) throw new Error(`lock held by ${got.holderRunId}`);
  const lease = { runId, fencing: got.lease.fencing };
  await fenceHead(repo, lease);
  return lease;
}

describe("commit", () => {
  it("GIVEN a committed run WHEN Commit is retried THEN it reports alreadyCommitted and HEAD is unchanged", async () => {
    const { repo, store } = newRepo();
    const lease = await fenced(repo, "r1");
    const first = await commitGeneration(repo, {
      ...lease,
      generation: 1,
      pointInTime: new Date(),
      volumes: [],
    });
    expect(first).toMatchObject({ generation: 1, alreadyCommitted: false });
    const head = await store.get(keys.head(repo));
    const again = await commitGeneration(repo, {
      ...lease,
      generation: 1,
      pointInTime: new Date(),
      volumes: [],
    });
    expect(again).toMatchObject({ generation: 1, alreadyCommitted: true, manifest: first.manifest });
    expect((await store.get(keys.head(repo))).etag).toBe(head.etag);
    expect(await readCommitRecord(repo, 1)).toMatchObject({ runId: "r1", fencing: lease.fencing });
  });

  it("fails with CommitConflictError when HEAD moved during the commit", async () => {
    const { store, repo } = newRepo();
    const lease = await fenced(repo, "r1");
    const headNow = (await readHead(repo))?.head;
    let raced = false;
    store.beforeOperation = (op, key) => {
      if (op === "put" && key === keys.head(repo) && !raced) {
        raced = true;
        // Another writer changes HEAD (same fence) between this commit's read and its write.
        void store.put(
          key,
          encodeHead({ ...headNow!, fence: { ...headNow!.fence, at: "2000-01-01T00:00:00.000Z" } }),
        );
      }
    };
    await expect(
      commitGeneration(repo, { ...lease, generation: 1, pointInTime: new Date(), volumes: [] }),
    ).rejects.toThrow(/CommitConflict|HEAD moved/);
  });

  it("fails when the generation is not HEAD's next one", async () => {
    const { repo } = newRepo();
    const lease = await fenced(repo, "r1");
    await expect(
      commitGeneration(repo, { ...lease, generation: 3, pointInTime: new Date(), volumes: [] }),
    ).rejects.toThrow(/prepared generation 3 but HEAD is at 0/);
  });

  it("fails with LockLostError when a newer run fenced the group, and HEAD stays as the newer run left it", async () => {
    const { repo } = newRepo();
    const a = await fenced(repo, "a");
    const b = await fenced(repo, "b");
    expect(b.fencing).toBeGreaterThan(a.fencing);
    await expect(
      commitGeneration(repo, { ...a, generation: 1, pointInTime: new Date(), volumes: [] }),
    ).rejects.toThrow(/LockLost|took the group|fenced by run b/);
    const head = (await readHead(repo))!.head;
    expect(head).toMatchObject({ generation: 0, commit: null, fence: { runId: "b", fencing: b.fencing } });
  });

  it("GIVEN a run that wrote its manifest but died before HEAD WHEN the next run recovers THEN its manifest is removed and the next run commits that number", async () => {
    const { store, repo } = newRepo();
    await twoGenerations(repo);
    store.beforeOperation = (op, key) => {
      if (op === "put" && key === keys.head(repo) && deadFenced) throw new Error("injected: Lambda died");
      if (op === "put" && key.includes("/generations/")) deadFenced = true;
    };
    let deadFenced = false;
    const models = VOLUMES.map((v) => new VolumeModel(v.blocks));
    await expect(
      backupGeneration(repo, models, [{ volume: 0, block: 0, kind: "text", seed: 5 }], "run-dead", false),
    ).rejects.toThrow(/injected/);
    store.beforeOperation = undefined;
    const manifests = async () => {
      const out: string[] = [];
      for await (const o of store.list(manifestPrefixOf(repo, 3))) out.push(o.key);
      return out;
    };
    expect(await manifests()).toHaveLength(1);
    const next = await backupGeneration(
      repo,
      models,
      [{ volume: 1, block: 1, kind: "text", seed: 6 }],
      "run-new",
      false,
    );
    expect(next.generation).toBe(3);
    expect((await readGeneration(repo, 3)).runId).toBe("run-new");
    expect(await manifests()).toEqual([keys.manifest(repo, 3, next.fencing)]);
  });

  it("GIVEN a run that committed but died before cleanup WHEN recovered THEN it is reported committed and nothing is reverted", async () => {
    const { repo } = newRepo();
    await twoGenerations(repo);
    const lease = await fenced(repo, "run-3");
    const outcome = await recoverRun(repo, {
      ...lease,
      deadRunId: "run-2",
      volumeIds: ["vol-a", "vol-b", "vol-c"],
    });
    expect(outcome).toMatchObject({ deadRunCommitted: true, indexVersions: [] });
    expect((await readCommittedManifest(repo))!.runId).toBe("run-2");
  });

  it("GIVEN a committed run WHEN it is reverted (its Commit answer was lost) THEN nothing is deleted", async () => {
    const { repo, store } = newRepo();
    await twoGenerations(repo);
    const head = (await readHead(repo))!.head;
    const before = store.stats.puts;
    const outcome = await revertRun(repo, {
      runId: "run-2",
      fencing: head.commit!.fencing,
      volumeIds: ["vol-a", "vol-b", "vol-c"],
    });
    expect(outcome).toEqual({ alreadyCommitted: true, generation: 2 });
    expect(store.stats.puts).toBe(before);
    await expect(verifyGeneration(repo, { readData: 1 })).resolves.toMatchObject({ ok: true });
  });

  it("GIVEN a volume dropped from the group WHEN an unrelated run is recovered THEN its old committed versions are kept", async () => {
    const { repo } = newRepo();
    await twoGenerations(repo);
    // Generation 3 without vol-c (it left the group).
    const m = (await readCommittedManifest(repo))!;
    const lease3 = await fenced(repo, "run-3");
    await commitGeneration(repo, {
      ...lease3,
      generation: 3,
      pointInTime: new Date(),
      volumes: m.volumes.filter((v) => v.volumeId !== "vol-c").map((v) => ({ ...v })),
    });
    const lease4 = await fenced(repo, "run-4");
    // The group's config no longer names vol-c; the committed generation 3 does not either.
    const r = await recoverRun(repo, { ...lease4, volumeIds: ["vol-a", "vol-b"] });
    expect(r.indexVersions).toEqual([]);
    await expect(verifyGeneration(repo, { generation: 2, readData: 1 })).resolves.toMatchObject({ ok: true });
  });
});

describe("metadata versions and seals", () => {
  it("fails with a clear error on an unknown major version of HEAD", async () => {
    const { store, repo } = newRepo();
    await store.put(
      keys.head(repo),
      new TextEncoder().encode(JSON.stringify({ format: "cgmirror.head", version: "3.0" })),
    );
    await expect(readHead(repo)).rejects.toThrow(
      /p\/HEAD has format cgmirror\.head 3\.0; this cgmirror reads cgmirror\.head 2\.x\. Upgrade cgmirror/,
    );
  });

  it("fails saying which cgmirror wrote it on a format 1 repository", async () => {
    const { store, repo } = newRepo();
    await store.put(
      keys.head(repo),
      new TextEncoder().encode(JSON.stringify({ format: "cgmirror.head", version: "1.0", generation: 1 })),
    );
    await expect(readHead(repo)).rejects.toThrow(
      /cgmirror\.head 1\.0.*older cgmirror \(format 1, cgmirror 0\.1\)/,
    );
  });

  it("fails naming the key on a HEAD that is not JSON", async () => {
    const { store, repo } = newRepo();
    await store.put(keys.head(repo), new TextEncoder().encode("{garbage"));
    await expect(readHead(repo)).rejects.toThrow(
      /object p\/HEAD \(version \w+\) is corrupt.*no sha256 checksum seal/,
    );
  });

  it("fails naming the key when one byte of HEAD changed", async () => {
    const { store, repo } = newRepo();
    await fenced(repo, "r1");
    store.corrupt(keys.head(repo), (b) => {
      const text = new TextDecoder().decode(b).replace('"generation":0', '"generation":7');
      return new TextEncoder().encode(text);
    });
    await expect(readHead(repo)).rejects.toThrow(/p\/HEAD .*fails its SHA-256 checksum/);
  });

  it("GIVEN a newer minor version with extra fields WHEN read THEN it is accepted", async () => {
    const { store, repo } = newRepo();
    await fenced(repo, "r1");
    const head = (await readHead(repo))!.head;
    const text = JSON.stringify({ format: "cgmirror.head", version: "2.7", ...head, future: true });
    const digest = createHash("sha256").update(text).digest("hex");
    await store.put(
      keys.head(repo),
      new TextEncoder().encode(`${text.slice(0, -1)},"checksum":"sha256:${digest}"}\n`),
    );
    expect((await readHead(repo))!.head).toEqual(head);
  });
});
