import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { readHead } from "#core/format/generation.ts";
import { createRepo, type Repo } from "#core/format/layout.ts";
import { readSegmentFooter, SegmentWriter } from "#core/format/segment.ts";
import { recoverRun } from "#core/protocol/commit.ts";
import { acquireLock, releaseLock } from "#core/protocol/lock.ts";
import { makeBlock } from "../support/blocks.ts";
import {
  checkCorruption,
  checkRandomHistories,
  checkRevert,
  twoGenerations,
} from "../support/repo-scenarios.ts";
import { type S3TestBucket, s3TestBucket } from "../support/s3.ts";

let t: S3TestBucket;
let store: S3ObjectStore;
let n = 0;
const freshRepo = async (): Promise<Repo> =>
  createRepo({ store, prefix: `${t.prefix}repo-${++n}`, group: "g1" });

beforeAll(async () => {
  t = await s3TestBucket();
  store = new S3ObjectStore({ client: t.client, bucket: t.bucket });
});
afterAll(async () => {
  await t.cleanup();
});

describe("repository on the local S3 server", () => {
  it("GIVEN random writes to three volumes over 5+ generations WHEN each is committed THEN every generation restores byte for byte", async () => {
    await checkRandomHistories(freshRepo, 3);
  });

  it("GIVEN a run prepared on some volumes WHEN reverted THEN the previous generation is current and exact and nothing of the run is reachable", async () => {
    await checkRevert(await freshRepo());
  });

  for (const kind of ["flip-segment-byte", "missing-segment", "truncated-index-page"] as const) {
    it(`fails loudly on restore and reports in verify when ${kind}`, async () => {
      await checkCorruption(await freshRepo(), kind);
    });
  }

  it("GIVEN objects WHEN read whole, by range and empty THEN get returns exactly their bytes", async () => {
    const data = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 251));
    await store.put(`${t.prefix}get/whole`, data);
    await store.put(`${t.prefix}get/empty`, new Uint8Array(0));
    const whole = await store.get(`${t.prefix}get/whole`);
    expect(Buffer.from(whole.body).equals(data)).toBe(true);
    const ranged = await store.get(`${t.prefix}get/whole`, { range: { start: 65_530, end: 200_001 } });
    expect(Buffer.from(ranged.body).equals(data.subarray(65_530, 200_001))).toBe(true);
    expect(ranged.size).toBe(data.byteLength);
    expect((await store.get(`${t.prefix}get/empty`)).body.byteLength).toBe(0);
  });

  it("GIVEN segments above the part size WHEN written THEN they upload as multipart with checksums and read back", async () => {
    const repo = await freshRepo();
    const w = new SegmentWriter({
      repo,
      targetBytes: 12 * BLOCK_SIZE,
      allowSmallSegments: true,
      partBytes: 5 * 1024 * 1024,
      compression: "none",
    });
    for (let i = 0; i < 12; i++) await w.add(makeBlock({ kind: "noise", seed: i }));
    const [seg] = await w.close();
    expect((await readSegmentFooter(store, seg!.key)).entries).toHaveLength(12);
  });

  it("GIVEN a run that died after Prepare and an expired lock WHEN the next run takes over and recovers THEN the dead run is reverted", async () => {
    const repo = await freshRepo();
    await twoGenerations(repo);
    const dead = await acquireLock(repo, { runId: "run-dead", ttlMs: 1, now: new Date(Date.now() - 10_000) });
    expect(dead.acquired).toBe(true);
    const { backupGeneration } = await import("../support/repo-scenarios.ts");
    const { VolumeModel } = await import("../support/blocks.ts");
    const models = [new VolumeModel(16), new VolumeModel(24), new VolumeModel(8)];
    await backupGeneration(
      repo,
      models,
      [{ volume: 0, block: 0, kind: "noise", seed: 1 }],
      "run-dead",
      false,
      { commit: false },
    );
    const next = await acquireLock(repo, { runId: "run-next", ttlMs: 60_000 });
    expect(next).toMatchObject({ acquired: true, takenOverFrom: "run-dead" });
    if (!next.acquired) throw new Error("unreachable");
    expect(next.lease.fencing).toBe(4);
    const recovered = await recoverRun(repo, {
      runId: "run-next",
      fencing: next.lease.fencing,
      deadRunId: "run-dead",
      volumeIds: ["vol-a", "vol-b", "vol-c"],
    });
    expect(recovered).toMatchObject({ deadRunCommitted: false });
    expect(recovered.indexVersions).toHaveLength(1);
    expect((await readHead(repo))!.head.commit?.runId).toBe("run-2");
    expect(await releaseLock(repo, next.lease)).toBe(true);
  });
});
