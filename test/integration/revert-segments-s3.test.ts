/**
 * Issue 10, finding 5, on the local S3 server: segments carry their run's id as user metadata
 * (HEAD returns it), Revert deletes the reverted run's segments with DeleteObjects and keeps every
 * committed one. The real task handlers run over MemoryEbs and an S3ObjectStore.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { parseGroupConfig } from "#core/config/group-config.ts";
import { createRepo, keys } from "#core/format/layout.ts";
import { SEGMENT_RUN_ID_METADATA } from "#core/format/segment.ts";
import { readVolume } from "#core/restore/restore.ts";
import { churn, memGroup } from "../support/mem-group.ts";
import { runPipeline } from "../support/pipeline.ts";
import { type S3TestBucket, s3TestBucket } from "../support/s3.ts";

let t: S3TestBucket;
let store: S3ObjectStore;

beforeAll(async () => {
  t = await s3TestBucket();
  store = new S3ObjectStore({ client: t.client, bucket: t.bucket });
});
afterAll(async () => {
  await t.cleanup();
});

describe("Revert deletes a reverted run's segments (local S3 server)", () => {
  it("GIVEN two committed generations and a run that failed at Commit WHEN it is reverted THEN none of its segments is left, and the committed ones are kept and read back", async () => {
    const VOLS = [
      { id: "vol-a", instanceId: "i-a", blocks: 10 },
      { id: "vol-b", instanceId: "i-b", blocks: 8 },
    ];
    const g = memGroup({ volumes: VOLS });
    const prefix = `${t.prefix}revert-segments`;
    const config = parseGroupConfig({
      group: "db",
      volumes: VOLS.map((v) => ({ id: v.id, instanceId: v.instanceId })),
      target: { bucket: t.bucket, prefix },
      schedule: { expression: "rate(1 hour)" },
      transfer: { shardBlocks: 64 },
      snapshots: { keep: 100 },
    });
    const repo = createRepo({ store, prefix, group: "db" });
    const deps = () => g.deps({ store: () => store });
    for (const i of [1, 2]) {
      churn(g, i, 5);
      expect(await runPipeline(deps(), config, `run-${i}`)).toMatchObject({ outcome: "committed" });
    }
    churn(g, 3, 6);
    const out = await runPipeline(deps(), config, "run-3", {
      call: async (task, input, invoke) => {
        if (task === "Commit") throw Object.assign(new Error("HEAD moved"), { name: "CommitConflictError" });
        return invoke(input);
      },
    });
    expect(out).toMatchObject({ outcome: "reverted" });
    expect((out as { revert: { deletedSegments: number } }).revert.deletedSegments).toBeGreaterThan(0);
    const writers = new Map<string, number>();
    const segmentsPrefix = keys.segment(repo, "0".repeat(32)).replace(/00\/0+\.seg$/, "");
    for await (const v of store.listVersions(segmentsPrefix)) {
      const h = await store.head(v.key, { versionId: v.versionId });
      const run = h?.metadata[SEGMENT_RUN_ID_METADATA] ?? "(none)";
      writers.set(run, (writers.get(run) ?? 0) + 1);
    }
    expect(writers.get("run-3")).toBeUndefined();
    expect(writers.get("run-1")).toBeGreaterThan(0);
    expect([...writers.keys()].sort()).toEqual(["run-1", "run-2"]);
    // Generation 2 reads back (every block checked against its SHA-256).
    for (const v of VOLS) await readVolume(repo, { volumeId: v.id, generation: 2 }, () => {});
  });
});
