import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { commitGeneration, recoverRun, revertRun } from "#core/commit.ts";
import { readCommittedManifest, readHead, readManifest } from "#core/generation.ts";
import { createRepo, keys } from "#core/layout.ts";
import { acquireLock, assertLockHeld, releaseLock, renewLock } from "#core/lock.ts";
import { encodeMetadata } from "#core/metadata.ts";
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

  it("GIVEN concurrent acquirers WHEN they race THEN exactly one holds the lock", async () => {
    const { repo } = newRepo();
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => acquireLock(repo, { runId: `r${i}`, ttlMs: 60_000 })),
    );
    expect(results.filter((r) => r.acquired)).toHaveLength(1);
  });
});

describe("commit", () => {
  it("GIVEN a committed run WHEN Commit is retried THEN it reports alreadyCommitted and HEAD is unchanged", async () => {
    const { repo } = newRepo();
    const first = await commitGeneration(repo, { runId: "r1", pointInTime: new Date(), volumes: [] });
    expect(first).toMatchObject({ generation: 1, alreadyCommitted: false });
    const again = await commitGeneration(repo, { runId: "r1", pointInTime: new Date(), volumes: [] });
    expect(again).toMatchObject({ generation: 1, alreadyCommitted: true, headEtag: first.headEtag });
  });

  it("fails with CommitConflictError when HEAD moved during the commit", async () => {
    const { store, repo } = newRepo();
    await commitGeneration(repo, { runId: "r1", pointInTime: new Date(), volumes: [] });
    let raced = false;
    store.beforeOperation = (op, key) => {
      if (op === "put" && key === keys.head(repo) && !raced) {
        raced = true;
        void store.put(
          key,
          encodeMetadata("cgmirror.head", {
            group: "orders",
            generation: 2,
            manifestKey: "x",
            manifestVersionId: null,
            runId: "intruder",
            committedAt: "",
          }),
        );
      }
    };
    await expect(
      commitGeneration(repo, { runId: "r2", pointInTime: new Date(), volumes: [] }),
    ).rejects.toThrow(/CommitConflict|HEAD moved/);
  });

  it("fails when the expected generation is not the next one", async () => {
    const { repo } = newRepo();
    await expect(
      commitGeneration(repo, { runId: "r1", generation: 3, pointInTime: new Date(), volumes: [] }),
    ).rejects.toThrow(/expected to commit generation 3/);
  });

  it("fails with LockLostError when the lease was taken over", async () => {
    const { repo } = newRepo();
    const a = await acquireLock(repo, { runId: "a", ttlMs: 1, now: new Date(Date.now() - 1000) });
    await acquireLock(repo, { runId: "b", ttlMs: 60_000 });
    if (!a.acquired) throw new Error("unreachable");
    await expect(
      commitGeneration(repo, { runId: "a", pointInTime: new Date(), volumes: [], lease: a.lease }),
    ).rejects.toThrow(/no longer held/);
    expect(await readHead(repo)).toBeUndefined();
  });

  it("GIVEN a run that wrote its manifest but died before HEAD WHEN recovered THEN the manifest is removed and the next run commits that number", async () => {
    const { store, repo } = newRepo();
    await twoGenerations(repo);
    store.beforeOperation = (op, key) => {
      if (op === "put" && key === keys.head(repo)) throw new Error("injected: Lambda died");
    };
    const models = VOLUMES.map((v) => new VolumeModel(v.blocks));
    await expect(
      backupGeneration(repo, models, [{ volume: 0, block: 0, kind: "text", seed: 5 }], "run-dead", false),
    ).rejects.toThrow(/injected/);
    store.beforeOperation = undefined;
    expect(await store.head(keys.generation(repo, 3))).toBeDefined();
    const recovered = await recoverRun(repo, { currentRunId: "run-new", deadRunId: "run-dead" });
    expect(recovered.outcome).toBe("reverted");
    expect(await store.head(keys.generation(repo, 3))).toBeUndefined();
    const next = await backupGeneration(
      repo,
      models,
      [{ volume: 1, block: 1, kind: "text", seed: 6 }],
      "run-new",
      false,
    );
    expect(next.generation).toBe(3);
    expect((await readManifest(repo, 3)).runId).toBe("run-new");
  });

  it("GIVEN a run that committed but died before cleanup WHEN recovered THEN it is reported committed and nothing is reverted", async () => {
    const { repo } = newRepo();
    await twoGenerations(repo);
    const outcome = await recoverRun(repo, { currentRunId: "run-3", deadRunId: "run-2" });
    expect(outcome.outcome).toBe("committed");
    expect((await readCommittedManifest(repo))!.runId).toBe("run-2");
  });

  it("fails to revert a committed run", async () => {
    const { repo } = newRepo();
    await twoGenerations(repo);
    await expect(revertRun(repo, "run-2")).rejects.toThrow(/committed as generation 2/);
  });

  it("GIVEN a volume dropped from the group WHEN an unrelated run is recovered THEN its old committed versions are kept", async () => {
    const { repo } = newRepo();
    await twoGenerations(repo);
    // Generation 3 without vol-c (it left the group).
    const m = (await readCommittedManifest(repo))!;
    await commitGeneration(repo, {
      runId: "run-3",
      pointInTime: new Date(),
      volumes: m.volumes.filter((v) => v.volumeId !== "vol-c").map((v) => ({ ...v })),
    });
    const r = await recoverRun(repo, { currentRunId: "run-4" });
    expect(r.outcome === "reverted" && r.reverted.indexVersions).toEqual([]);
  });
});

describe("metadata versions", () => {
  it("fails with a clear error on an unknown major version of HEAD", async () => {
    const { store, repo } = newRepo();
    await store.put(
      keys.head(repo),
      new TextEncoder().encode(JSON.stringify({ format: "cgmirror.head", version: "2.0" })),
    );
    await expect(readHead(repo)).rejects.toThrow(
      /p\/HEAD has format cgmirror\.head 2\.0; this cgmirror reads cgmirror\.head 1\.x/,
    );
  });

  it("fails naming the key on a HEAD that is not JSON", async () => {
    const { store, repo } = newRepo();
    await store.put(keys.head(repo), new TextEncoder().encode("{garbage"));
    await expect(readHead(repo)).rejects.toThrow(
      /object p\/HEAD \(version \w+\) is corrupt.*not valid UTF-8 JSON/,
    );
  });

  it("GIVEN a newer minor version with extra fields WHEN read THEN it is accepted", async () => {
    const { store, repo } = newRepo();
    await commitGeneration(repo, { runId: "r1", pointInTime: new Date(), volumes: [] });
    const got = await store.get(keys.head(repo));
    const json = JSON.parse(new TextDecoder().decode(got.body));
    await store.put(
      keys.head(repo),
      new TextEncoder().encode(JSON.stringify({ ...json, version: "1.7", future: true })),
    );
    expect((await readHead(repo))!.head.generation).toBe(1);
  });
});
