/**
 * A restore against a concurrent forget + prune (docs/format.md §10.2, read leases), on the real local
 * S3 server and the EBS emulator: the restore workflow run by the local runner, its tasks retried
 * after they did their work and delivered twice at once, while forget drops the generation it reads
 * and prune reclaims what no retained generation reaches. Every restored volume, read back through
 * GetSnapshotBlock, must be the generation's image; a restore that loses the race does so before it
 * writes (no snapshot, no lease left); and without a live lease the data does go (the control: the
 * restore then fails and deletes its snapshots, never writing wrong bytes).
 */
import { EBSClient } from "@aws-sdk/client-ebs";
import { type EbsEmulator, startEbsEmulator } from "@cgmirror/ebs-emulator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEbsClient } from "#adapters/ebs-source.ts";
import { EbsSnapshotWriter } from "#adapters/ebs-writer.ts";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import type { GroupConfig } from "#core/config/group-config.ts";
import { listGenerations, readGeneration } from "#core/format/generation.ts";
import { createRepo, keys, type Repo } from "#core/format/layout.ts";
import { applyForget, planForget } from "#core/lifecycle/forget.ts";
import { maintenanceRunId, withGroupHeld } from "#core/lifecycle/maintenance.ts";
import { pruneRepository } from "#core/lifecycle/prune.ts";
import { READ_LEASE_TTL_MS } from "#core/protocol/read-lease.ts";
import { RESTORE_TAGS } from "#core/restore/restore-snapshots.ts";
import type { RestoreWorkflowInputT } from "#lambdas/contracts.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import { TransientError } from "#workflows/errors.ts";
import { runLocalRestore } from "../../local/restore-runner.ts";
import { emulatorSnapshotCatalog } from "../../local/snapshot-catalog.ts";
import { type MemGroup, memGroup } from "../support/mem-group.ts";
import { runPipeline } from "../support/pipeline.ts";
import { type S3TestBucket, s3TestBucket } from "../support/s3.ts";
import { snapshotDifferences } from "../support/snapshot-readback.ts";

const VOLS = [
  { id: "vol-a", instanceId: "i-a", blocks: 24 },
  { id: "vol-b", instanceId: "i-b", blocks: 16 },
] as const;

let emu: EbsEmulator;
let client: EBSClient;
let reader: EBSClient;
let bucket: S3TestBucket;

beforeAll(async () => {
  emu = await startEbsEmulator();
  const credentials = { accessKeyId: "AKIDRESTORERACE", secretAccessKey: "x" };
  client = createEbsClient({ endpoint: emu.endpoint, region: "us-east-1", maxSockets: 16, credentials });
  reader = new EBSClient({ endpoint: emu.endpoint, region: "us-east-1", credentials });
  bucket = await s3TestBucket();
});

afterAll(async () => {
  await bucket?.cleanup();
  client?.destroy();
  reader?.destroy();
  await emu?.close();
});

/** A group whose repository is on the S3 server (its own prefix), its volumes in memory. */
interface S3Group {
  readonly g: MemGroup;
  readonly config: GroupConfig;
  readonly repo: Repo;
  deps(restoreOptions?: TaskDeps["restoreOptions"]): TaskDeps;
  /** The source snapshot of each volume of each generation (captured before forget drops them). */
  readonly sources: Map<number, Map<string, string>>;
  backup(): Promise<number>;
}

let groups = 0;
function s3Group(): S3Group {
  const g = memGroup({ volumes: VOLS });
  const store = new S3ObjectStore({ client: bucket.client, bucket: bucket.bucket });
  const config: GroupConfig = {
    ...g.config,
    target: { ...g.config.target, bucket: bucket.bucket, prefix: `${bucket.prefix}g${++groups}` },
  };
  const repo = createRepo({ store, prefix: config.target.prefix, group: config.group });
  const sources = new Map<number, Map<string, string>>();
  const writer = new EbsSnapshotWriter({ client, catalog: emulatorSnapshotCatalog(emu) });
  const deps = (restoreOptions?: TaskDeps["restoreOptions"]) =>
    g.deps({
      store: () => store,
      snapshotWriter: () => writer,
      ...(restoreOptions ? { restoreOptions } : {}),
    });
  let round = 0;
  return {
    g,
    config,
    repo,
    deps,
    sources,
    async backup() {
      round++;
      // Every generation rewrites most blocks with its own content: an old generation's segments are
      // garbage once it is forgotten.
      for (const v of VOLS) {
        for (let b = 0; b < v.blocks; b++) {
          if ((b + round) % 4 === 0) continue;
          g.ebs.write(v.id, b, b % 9 === 0 && round > 1 ? null : `r${round}-${v.id}-${b}`);
        }
      }
      const out = await runPipeline(deps(), config, `run-${round}`);
      expect(out).toMatchObject({ outcome: "committed" });
      const n = (out as { generation: number }).generation;
      const m = await readGeneration(repo, n);
      sources.set(n, new Map(m.volumes.map((v) => [v.volumeId, v.sourceSnapshotId!])));
      return n;
    },
  };
}

function input(s: S3Group, restoreId: string, generation: number): RestoreWorkflowInputT {
  return {
    config: s.config as unknown as Record<string, unknown>,
    restoreId,
    generation,
    volumes: null,
    parents: null,
    autoParent: false,
  };
}

/** Forget all but HEAD, then prune, holding the group (as `cgmirror forget --prune` does). */
async function forgetAndPrune(s: S3Group, now: () => number = Date.now) {
  return withGroupHeld(
    s.repo,
    { runId: maintenanceRunId("prune"), volumeIds: VOLS.map((v) => v.id) },
    async ({ lease }) => {
      const forget = await applyForget(s.repo, lease, await planForget(s.repo, { keepLast: 1 }), {
        now: now(),
      });
      const prune = await pruneRepository(s.repo, { lease, now });
      return { forget, prune };
    },
  );
}

/** Differences between a snapshot read back through GetSnapshotBlock and a generation's image. */
async function compare(s: S3Group, snapshotId: string, generation: number, volumeId: string) {
  const image = s.g.ebs.image(s.sources.get(generation)!.get(volumeId)!);
  return snapshotDifferences(reader, snapshotId, image, { volumeId, generation });
}

function snapshotsOf(restoreId: string) {
  return emu
    .listSnapshots()
    .filter((d) => d.tags.some((t) => t.Key === RESTORE_TAGS.restoreId && t.Value === restoreId));
}

type Handler = (e: unknown) => Promise<unknown>;

/**
 * The volume steps as an unreliable Lambda delivers them: some invoked twice at once (the first
 * answer wins), some failing after doing their work (the state machine retries them).
 */
function unreliable(fn: Handler, seed: number): Handler {
  let n = 0;
  return async (event) => {
    n++;
    if ((n + seed) % 3 === 0) {
      const [a] = await Promise.all([fn(event), fn(event)]);
      return a;
    }
    const out = await fn(event);
    if ((n + seed) % 5 === 0) throw new TransientError("injected: the task's answer was lost");
    return out;
  };
}

describe("a restore against a concurrent forget + prune (read leases)", () => {
  it("GIVEN a restore of an old generation under way WHEN forget drops it and prune runs between its volume steps (steps retried and delivered twice) THEN prune keeps its data, the snapshots are its image, and the next prune reclaims it", async () => {
    const s = s3Group();
    for (let i = 0; i < 3; i++) await s.backup();
    const restoreId = "restore-race-1";
    let maintenance: Awaited<ReturnType<typeof forgetAndPrune>> | undefined;
    let steps = 0;
    const r = await runLocalRestore({
      input: input(s, restoreId, 1),
      deps: s.deps({ batchBlocks: 4, budgetMs: 0 }),
      wrap: (state, fn) => {
        if (state !== "RestoreVolume") return fn;
        const flaky = unreliable(fn, 1);
        return async (event) => {
          // After the first volume steps wrote blocks: generation 1 is forgotten and pruned.
          if (++steps === 3) maintenance = await forgetAndPrune(s);
          return flaky(event);
        };
      },
    });
    expect(r.status, `${r.error}: ${r.cause}`).toBe("SUCCEEDED");
    expect(maintenance).toBeDefined();
    const { forget, prune } = maintenance!;
    expect(forget.forgotten).toEqual([1, 2]);
    expect(forget.leased).toEqual([1]); // its manifest stayed for the restore
    expect(prune.leasedGenerations).toEqual([{ generation: 1, restoreIds: [restoreId] }]);
    // Mostly-garbage segments stay unrepacked while the restore may read them.
    expect(prune.repack.segments).toBe(0);
    expect(await listGenerations(s.repo)).toEqual([3]);

    const out = r.output as { generation: number; snapshots: { volumeId: string; snapshotId: string }[] };
    expect(out.generation).toBe(1);
    expect(out.snapshots).toHaveLength(2);
    for (const snap of out.snapshots) {
      expect(await compare(s, snap.snapshotId, 1, snap.volumeId)).toEqual([]);
    }
    expect(snapshotsOf(restoreId)).toHaveLength(2); // one per volume, duplicates and retries included
    expect(await s.repo.store.head(keys.readLease(s.repo, restoreId))).toBeUndefined();

    // The restore ended: the next prune reclaims generation 1 (its manifest and its own segments).
    const after = await forgetAndPrune(s);
    expect(after.prune.leasedGenerations).toEqual([]);
    expect(after.prune.deleted.manifests.count).toBeGreaterThan(0);
    expect(after.prune.deleted.segments.count).toBeGreaterThan(0);
  });

  it("GIVEN the restore's lease has expired for forget and prune (the control) WHEN they run between its steps THEN generation 1's data goes and the restore fails, leaving no snapshot and no lease", async () => {
    const s = s3Group();
    for (let i = 0; i < 3; i++) await s.backup();
    const restoreId = "restore-race-2";
    let running: ReturnType<typeof forgetAndPrune> | undefined;
    let steps = 0;
    const r = await runLocalRestore({
      input: input(s, restoreId, 1),
      deps: s.deps({ batchBlocks: 4, budgetMs: 0 }),
      wrap: (state, fn) =>
        state !== "RestoreVolume"
          ? fn
          : async (event) => {
              if (++steps === 3) {
                // Past any renewal the other volume's steps make meanwhile (each sets now + TTL).
                running = forgetAndPrune(s, () => Date.now() + 2 * READ_LEASE_TTL_MS);
                await running;
              }
              return fn(event);
            },
    });
    // The other volume's steps run on meanwhile: the execution may end before the prune does.
    expect(running, `${r.error}: ${r.cause}`).toBeDefined();
    const maintenance = await running!;
    expect(maintenance.forget.forgotten).toEqual([1, 2]);
    expect(maintenance.forget.leased).toEqual([]);
    expect(maintenance.prune.leasedGenerations).toEqual([]);
    expect(maintenance.prune.deleted.segments.count).toBeGreaterThan(0);
    expect(r.status).toBe("FAILED");
    // Generation 1's manifest or segments are gone: a clear error naming the object, never wrong bytes.
    expect(r.cause).toMatch(/ObjectNotFoundError|CorruptObjectError/);
    expect(r.cause).toMatch(/deleted the \d snapshot/);
    expect(snapshotsOf(restoreId)).toEqual([]);
    expect(await s.repo.store.head(keys.readLease(s.repo, restoreId))).toBeUndefined();
  });

  it("GIVEN restores and forget + prune started at once, round after round THEN each restore either completes with its generation's image or fails before writing (no snapshot, no lease), and every retained generation stays whole", async () => {
    const s = s3Group();
    await s.backup();
    let succeeded = 0;
    for (let round = 1; round <= 4; round++) {
      const generation = (await listGenerations(s.repo)).at(-1)!;
      await s.backup(); // the restored generation is no longer HEAD: forget drops it
      const restoreId = `restore-race-3-${round}`;
      const delay = [0, 5, 40, 150][round - 1]!;
      const [r, m] = await Promise.all([
        runLocalRestore({
          input: input(s, restoreId, generation),
          deps: s.deps({ batchBlocks: 4, budgetMs: 0 }),
          wrap: (state, fn) => (state === "RestoreVolume" ? unreliable(fn, round) : fn),
        }),
        new Promise((res) => setTimeout(res, delay)).then(() => forgetAndPrune(s)),
      ]);
      if (r.status === "SUCCEEDED") {
        succeeded++;
        const out = r.output as { snapshots: { volumeId: string; snapshotId: string }[] };
        for (const snap of out.snapshots) {
          expect(await compare(s, snap.snapshotId, generation, snap.volumeId), `round ${round}`).toEqual([]);
        }
      } else {
        // It lost the race before its lease: the generation was already forgotten.
        expect(r.cause, `round ${round}`).toMatch(/GenerationNotFoundError|generation \d+ .*(not|no)/i);
        expect(r.cause).toMatch(/it had created no snapshot/);
        expect(m.forget.forgotten).toContain(generation);
      }
      expect(snapshotsOf(restoreId).length, `round ${round}`).toBe(r.status === "SUCCEEDED" ? 2 : 0);
      expect(await s.repo.store.head(keys.readLease(s.repo, restoreId))).toBeUndefined();
    }
    expect(succeeded, "at least one restore raced a prune to its end").toBeGreaterThan(0);
    // Whatever the interleaving, HEAD restores whole after the last prune.
    const head = (await listGenerations(s.repo)).at(-1)!;
    const r = await runLocalRestore({ input: input(s, "restore-race-3-head", head), deps: s.deps() });
    expect(r.status, `${r.error}: ${r.cause}`).toBe("SUCCEEDED");
    for (const snap of (r.output as { snapshots: { volumeId: string; snapshotId: string }[] }).snapshots) {
      expect(await compare(s, snap.snapshotId, head, snap.volumeId)).toEqual([]);
    }
  });
});
