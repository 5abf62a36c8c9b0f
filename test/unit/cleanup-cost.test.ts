/**
 * Cleanup cost does not grow with history (issue 10, item 4): Revert, Recover and a committed run's
 * cleanup make the same S3 requests after 3 committed generations as after 24, and ReleaseLock releases
 * the lock before its housekeeping. Requests are counted as S3 would bill them, with listing pages of
 * 10 entries instead of S3's 1,000, so that a listing that grows with history shows in a small test.
 */
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { parseGroupConfig } from "#core/config/group-config.ts";
import { createRepo, type Repo } from "#core/format/layout.ts";
import type { BlockSource } from "#core/ports/block-source.ts";
import type {
  GetOptions,
  ListOptions,
  MultipartUploadOptions,
  ObjectStore,
  ObjectVersionRef,
  PutOptions,
} from "#core/ports/object-store.ts";
import { cleanupRun, commitGeneration, fenceHead, recoverRun, revertRun } from "#core/protocol/commit.ts";
import { acquireLock, readLock } from "#core/protocol/lock.ts";
import { releaseLockTask } from "#lambdas/release-lock.ts";
import { VolumeModel } from "../support/blocks.ts";
import { backupGeneration, type Op, VOLUMES } from "../support/repo-scenarios.ts";
import { memoryDeps } from "./lambda-fixtures.ts";

const PAGE = 10;

/** An ObjectStore that counts requests (listings in pages of PAGE entries, deletes in batches of 1,000). */
class CountingStore implements ObjectStore {
  requests = 0;
  readonly inner: MemoryObjectStore;
  constructor(inner: MemoryObjectStore) {
    this.inner = inner;
  }
  async #pages<T>(source: AsyncIterable<T>): Promise<AsyncIterable<T>> {
    this.requests++;
    const self = this;
    return (async function* () {
      let n = 0;
      for await (const item of source) {
        if (n > 0 && n % PAGE === 0) self.requests++;
        n++;
        yield item;
      }
    })();
  }
  get(key: string, options?: GetOptions) {
    this.requests++;
    return this.inner.get(key, options);
  }
  put(key: string, body: Uint8Array, options?: PutOptions) {
    this.requests++;
    return this.inner.put(key, body, options);
  }
  delete(key: string, options?: { versionId?: string }) {
    this.requests++;
    return this.inner.delete(key, options);
  }
  head(key: string, options?: { versionId?: string }) {
    this.requests++;
    return this.inner.head(key, options);
  }
  async *list(prefix: string, options?: ListOptions) {
    yield* await this.#pages(this.inner.list(prefix, options));
  }
  async *listVersions(prefix: string) {
    yield* await this.#pages(this.inner.listVersions(prefix));
  }
  createMultipartUpload(key: string, options?: MultipartUploadOptions) {
    this.requests++;
    return this.inner.createMultipartUpload(key, options);
  }
  deleteVersions(objects: readonly ObjectVersionRef[]) {
    this.requests += Math.ceil(objects.length / 1000);
    return this.inner.deleteVersions(objects);
  }
}

const VOLUME_IDS = VOLUMES.map((v) => v.id);

/** A repository with `generations` committed generations (a few changed blocks each). */
async function history(
  generations: number,
): Promise<{ store: CountingStore; repo: Repo; models: VolumeModel[] }> {
  const store = new CountingStore(new MemoryObjectStore());
  const repo = createRepo({ store, prefix: "groups/orders", group: "orders" });
  const models = VOLUMES.map((v) => new VolumeModel(v.blocks));
  for (let g = 1; g <= generations; g++) {
    const ops: Op[] = VOLUMES.map((_, volume) => ({
      volume,
      block: g % 8,
      kind: "text",
      seed: g * 10 + volume,
    }));
    await backupGeneration(repo, models, ops, `run-${g}`, g === 1);
  }
  return { store, repo, models };
}

/** A run that fenced and prepared every volume, then died before Commit. */
async function preparedButNotCommitted(repo: Repo, models: VolumeModel[], runId: string) {
  const ops: Op[] = VOLUMES.map((_, volume) => ({ volume, block: 1, kind: "noise", seed: 999 + volume }));
  const r = await backupGeneration(repo, models, ops, runId, false, { commit: false });
  return { runId, fencing: r.fencing };
}

async function counted<T>(store: CountingStore, fn: () => Promise<T>): Promise<number> {
  const before = store.requests;
  await fn();
  return store.requests - before;
}

/** The requests Revert, Recover and a commit's cleanup make in a repository with this much history. */
async function cleanupRequests(generations: number) {
  const { store, repo, models } = await history(generations);
  const failed = await preparedButNotCommitted(repo, models, "run-failed");
  const revert = await counted(store, () => revertRun(repo, { ...failed, volumeIds: VOLUME_IDS }));

  await preparedButNotCommitted(repo, models, "run-dead");
  const next = await acquireLock(repo, { runId: "run-next", ttlMs: 60_000 });
  if (!next.acquired) throw new Error("the dead run's lock was not taken over");
  const recover = await counted(store, () =>
    recoverRun(repo, {
      runId: "run-next",
      fencing: next.lease.fencing,
      deadRunId: "run-dead",
      volumeIds: VOLUME_IDS,
    }),
  );
  const cleanup = await counted(store, () => cleanupRun(repo, `run-${generations}`));
  return { revert, recover, cleanup };
}

describe("cleanup cost", () => {
  it("GIVEN 3 or 24 committed generations THEN Revert, Recover and a commit's cleanup make the same number of requests", async () => {
    const short = await cleanupRequests(3);
    const long = await cleanupRequests(24);
    expect(long).toEqual(short);
    expect(short.revert).toBeGreaterThan(0);
  }, 120_000);

  it("GIVEN housekeeping that hangs after a commit THEN ReleaseLock has released the lock already", async () => {
    const deps = memoryDeps({} as BlockSource);
    let hung = false;
    let resume!: () => void;
    const snapshots = deps.snapshots();
    deps.snapshots = () => ({
      ...snapshots,
      findSnapshots: async () => {
        hung = true;
        await new Promise<void>((r) => {
          resume = r;
        });
        return [];
      },
      deleteSnapshot: snapshots.deleteSnapshot.bind(snapshots),
      describeSnapshots: snapshots.describeSnapshots.bind(snapshots),
      createInstanceSnapshots: snapshots.createInstanceSnapshots.bind(snapshots),
      createVolumeSnapshot: snapshots.createVolumeSnapshot.bind(snapshots),
    });
    const config = parseGroupConfig({
      group: "orders",
      volumes: [{ id: "vol-a" }],
      target: { bucket: "my-backups" },
      schedule: { expression: "rate(1 hour)" },
    });
    const repo = createRepo({
      store: deps.store("my-backups"),
      prefix: config.target.prefix,
      group: "orders",
    });
    const got = await acquireLock(repo, { runId: "run-1", ttlMs: 3_600_000 });
    if (!got.acquired) throw new Error("unreachable");
    const lease = { runId: "run-1", fencing: got.lease.fencing };
    await fenceHead(repo, lease);
    await commitGeneration(repo, { ...lease, generation: 1, pointInTime: new Date(), volumes: [] });

    const release = releaseLockTask(
      { config, runId: "run-1", fencing: lease.fencing, outcome: "committed" },
      deps,
    );
    for (let i = 0; i < 200 && !hung; i++) await new Promise((r) => setTimeout(r, 10));
    expect(hung).toBe(true); // housekeeping is stuck in DescribeSnapshots...
    expect((await readLock(repo))?.record.released).toBe(true); // ...and the lock is free
    resume();
    expect(await release).toMatchObject({ released: true });
  });
});
