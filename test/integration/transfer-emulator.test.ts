/**
 * The planner and the transfer worker against the EBS emulator (throttling, random 5xx, short-lived
 * tokens) and the local S3 server: results restore byte-exact through Prepare; a crash between the
 * segment uploads and the result write is re-run into the same result without duplicate references.
 */
import { createHash } from "node:crypto";
import { EBSClient } from "@aws-sdk/client-ebs";
import { type EbsEmulator, startEbsEmulator } from "@cgmirror/ebs-emulator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEbsClient, EbsBlockSource } from "#adapters/ebs-source.ts";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import type { IndexEntry } from "#core/format/block-ref.ts";
import { Codec } from "#core/format/codec.ts";
import { createRepo, keys, type Repo } from "#core/format/layout.ts";
import { openVolumeIndexRoot, prepareVolume } from "#core/format/volume-index.ts";
import type { ObjectStore } from "#core/ports/object-store.ts";
import { fetchBlocks } from "#core/restore/restore.ts";
import { planVolume, type ShardDescriptor } from "#core/transfer/planner.ts";
import { collectShardRuns, type ShardResultSummary, transferShard } from "#core/transfer/worker.ts";
import { snapshotBlocks } from "#local/snapshot-image.ts";
import { type S3TestBucket, s3TestBucket } from "../support/s3.ts";

let emu: EbsEmulator;
let t: S3TestBucket;
let ebs: EBSClient;
let plain: EBSClient;

beforeAll(async () => {
  emu = await startEbsEmulator();
  t = await s3TestBucket();
  ebs = createEbsClient({
    endpoint: emu.endpoint,
    region: "us-east-1",
    maxSockets: 64,
    credentials: { accessKeyId: "AKIDTRANSFER", secretAccessKey: "x" },
  });
  plain = new EBSClient({
    endpoint: emu.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "AKIDVERIFY", secretAccessKey: "x" },
  });
});

afterAll(async () => {
  ebs?.destroy();
  plain?.destroy();
  await t?.cleanup();
  await emu?.close();
});

function repoFor(
  store: ObjectStore = new S3ObjectStore({ client: t.client, bucket: t.bucket }),
  name = "g",
): Repo {
  return createRepo({ store, prefix: `${t.prefix}${name}`, group: "g" });
}

/** The emulator's own SHA-256 of every written block of a snapshot (faults off). */
async function checksums(snapshotId: string): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  for await (const b of snapshotBlocks(plain, snapshotId, { maxResults: 10000 })) {
    out.set(b.index, createHash("sha256").update(b.data).digest("hex"));
  }
  return out;
}

/** Restores every entry and checks it against the snapshot's blocks (absent / unwritten ⇒ zeros). */
async function expectExact(repo: Repo, entries: readonly IndexEntry[], expected: Map<number, string>) {
  const zero = createHash("sha256").update(Buffer.alloc(524288)).digest("hex");
  let restored = 0;
  await fetchBlocks(repo, entries, (block, raw) => {
    expect(createHash("sha256").update(raw).digest("hex"), `block ${block}`).toBe(expected.get(block));
    restored++;
  });
  for (const e of entries) {
    const want = expected.get(e.block) ?? zero;
    expect(Buffer.from(e.ref.sha256).toString("hex"), `block ${e.block}`).toBe(want);
    if (e.ref.codec === Codec.zero) expect(want).toBe(zero);
  }
  return restored;
}

async function transferAll(repo: Repo, runId: string, shards: readonly ShardDescriptor[], maxRate = 1000) {
  const source = new EbsBlockSource(ebs);
  const out: ShardResultSummary[] = [];
  for (const shard of shards) {
    out.push(
      await transferShard(
        { repo, source },
        {
          runId,
          shard,
          options: {
            maxRate,
            segmentBytes: 8 * 1024 * 1024,
            backoffBaseMs: 20,
            backoffCapMs: 500,
            progressIntervalMs: 200,
          },
        },
      ),
    );
  }
  return out;
}

describe("transfer against the EBS emulator and local S3", () => {
  it("GIVEN throttling, random 5xx and expiring tokens WHEN two generations are planned and transferred THEN Prepare's index restores byte-exact", async () => {
    const root = await emu.createSyntheticSnapshot({
      volumeSizeGiB: 1,
      seed: "transfer-it",
      writtenFraction: 0.12,
      zeroFraction: 0.1,
      compressibleFraction: 0.4,
    });
    const child = await emu.createSyntheticSnapshot({
      parentSnapshotId: root.snapshotId,
      changedFraction: 0.1,
    });
    const [rootSums, childSums] = [await checksums(root.snapshotId), await checksums(child.snapshotId)];
    emu.setFaults({
      dataPlaneRpsPerSnapshot: 80,
      burstSeconds: 0.1,
      errorRate: 0.03,
      errorOperations: ["GetSnapshotBlock", "ListChangedBlocks", "ListSnapshotBlocks"],
      tokenTtlMs: 500,
      latencyMs: 2,
    });
    const repo = repoFor();
    try {
      let previous: { versionId: string | null; sha256: string } | null = null;
      let refreshes = 0;
      let throttled = 0;
      let generation = 0;
      for (const [snap, base, sums] of [
        [root.snapshotId, null, rootSums],
        [child.snapshotId, root.snapshotId, childSums],
      ] as const) {
        generation++;
        const runId = `run-${generation}`;
        const plan = await planVolume(
          { repo, source: new EbsBlockSource(ebs), retry: { baseMs: 20, capMs: 200 } },
          {
            runId,
            volumeId: "vol-1",
            snapshotId: snap,
            baseSnapshotId: base,
            shardBlocks: 60,
            pageSize: 100,
          },
        );
        expect(plan.totals.shards).toBeGreaterThan(1);
        const results = await transferAll(repo, runId, plan.shards!);
        for (const r of results) {
          refreshes += r.stats.tokenRefreshes;
          throttled += r.stats.throttled;
        }
        const runs = await collectShardRuns(repo, runId, "vol-1", plan.totals.shards);
        expect(runs.map((r) => r.key)).toEqual(results.map((r) => r.run.key));
        const prepared = await prepareVolume(repo, {
          volumeId: "vol-1",
          runId,
          generation,
          sizeBytes: plan.volumeSizeBytes,
          fencing: generation,
          changes: runs,
          previous,
        });
        previous = { versionId: prepared.versionId ?? null, sha256: prepared.sha256 };
        const index = await openVolumeIndexRoot(repo, prepared.root, prepared.versionId);
        const entries: IndexEntry[] = [];
        await index.scan((batch) => {
          entries.push(...batch);
        });
        // The index after this generation holds exactly the blocks the snapshot has written.
        expect(
          entries.filter((e) => e.ref.codec !== Codec.zero || sums.has(e.block)).map((e) => e.block),
        ).toEqual([...sums.keys()].sort((a, b) => a - b));
        await expectExact(repo, entries, sums);
      }
      const stats = emu.stats();
      expect(stats.throttled).toBeGreaterThan(0);
      expect(throttled).toBeGreaterThan(0);
      expect(refreshes).toBeGreaterThan(0);
      expect(stats.errorsInjected).toBeGreaterThan(0);
    } finally {
      emu.resetFaults();
    }
  });

  it("GIVEN a crash between the segment uploads and the result write WHEN the shard is re-run THEN the result is the same and no crashed segment is referenced", async () => {
    const snap = await emu.createSyntheticSnapshot({
      volumeSizeGiB: 1,
      seed: "crash-it",
      writtenFraction: 0.1,
    });
    const sums = await checksums(snap.snapshotId);
    const s3 = new S3ObjectStore({ client: t.client, bucket: t.bucket });
    const uploaded: string[] = [];
    let crash = true;
    const crashing: ObjectStore = {
      get: (k, o) => s3.get(k, o),
      head: (k, o) => s3.head(k, o),
      delete: (k, o) => s3.delete(k, o),
      deleteVersions: (v) => s3.deleteVersions(v),
      list: (p, o) => s3.list(p, o),
      listVersions: (p) => s3.listVersions(p),
      createMultipartUpload: (k, o) => s3.createMultipartUpload(k, o),
      put: (key, body, options) => {
        if (key.endsWith(".seg")) uploaded.push(key);
        if (crash && key.includes("/shards/") && key.endsWith(".run")) {
          return Promise.reject(new Error("killed between segment upload and result write"));
        }
        return s3.put(key, body, options);
      },
    };
    const repo = repoFor(crashing, "crash");
    const plan = await planVolume(
      { repo, source: new EbsBlockSource(ebs) },
      { runId: "run-c", volumeId: "vol-c", snapshotId: snap.snapshotId },
    );
    const shard = plan.shards![0]!;
    await expect(transferAll(repo, "run-c", [shard])).rejects.toThrow(/killed/);
    const crashed = new Set(uploaded.map((k) => k.slice(k.lastIndexOf("/") + 1, -4)));
    expect(crashed.size).toBeGreaterThan(0);
    crash = false;
    const [again] = await transferAll(repo, "run-c", [shard]);
    const [third] = await transferAll(repo, "run-c", [shard]);
    expect(third!.reused).toBe(true);
    expect(third!.run).toEqual(again!.run);
    const entries: IndexEntry[] = [];
    const { IndexRunReader } = await import("#core/format/index-run.ts");
    const reader = await IndexRunReader.open(repo.store, again!.run.key, { bytes: again!.run.bytes });
    for (let p = 0; p < reader.pageCount; p++) {
      const page = await reader.readPage(p);
      for (let i = 0; i < page.count; i++) entries.push(page.entry(i));
    }
    expect(await expectExact(repo, entries, sums)).toBe(sums.size);
    const referenced = new Set(entries.map((e) => e.ref.segment).filter((s): s is string => s !== null));
    expect([...referenced].sort()).toEqual([...again!.segments].sort());
    for (const id of referenced) {
      expect(crashed.has(id)).toBe(false);
      expect(await repo.store.head(keys.segment(repo, id))).toBeDefined();
    }
  });
});
