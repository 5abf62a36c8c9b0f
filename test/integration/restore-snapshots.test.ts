/**
 * Restore into EBS (core/restore/restore-snapshots.ts) against the EBS direct API emulator through the real
 * `@aws-sdk/client-ebs`: every restored volume read back with GetSnapshotBlock equals the generation's
 * image; an incremental restore writes exactly the blocks that differ; a failure on one volume leaves
 * no snapshot of the restore behind; throttling and 5xx answers slow the restore down, never fail it;
 * a block damaged in S3 is refused by EBS's checksum check and reported as damaged.
 */
import { randomBytes } from "node:crypto";
import { EBSClient } from "@aws-sdk/client-ebs";
import { type EbsEmulator, startEbsEmulator } from "@cgmirror/ebs-emulator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEbsClient } from "#adapters/ebs-source.ts";
import { EbsSnapshotWriter } from "#adapters/ebs-writer.ts";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { BlockIntegrityError } from "#core/errors.ts";
import type { IndexEntry } from "#core/format/block-ref.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { readCommittedManifest, readGeneration } from "#core/format/generation.ts";
import { createRepo, keys } from "#core/format/layout.ts";
import { openVolumeIndex } from "#core/format/volume-index.ts";
import { BlockSourceFatalError } from "#core/ports/block-source.ts";
import type { SnapshotWriter } from "#core/ports/snapshot-writer.ts";
import { writeGeneration } from "#core/protocol/write-generation.ts";
import {
  RESTORE_TAGS,
  RestoreToSnapshotsError,
  restoreGroupToSnapshots,
  restoreVolumeToSnapshot,
} from "#core/restore/restore-snapshots.ts";
import { emulatorSnapshotCatalog } from "../../local/snapshot-catalog.ts";
import { blockBytes } from "../support/mem-ebs.ts";
import { type MemGroup, memGroup } from "../support/mem-group.ts";
import { runPipeline } from "../support/pipeline.ts";
import { readSnapshot } from "../support/snapshot-readback.ts";

let emu: EbsEmulator;
let client: EBSClient;
let reader: EBSClient;
let g: MemGroup;
const VOLS = [
  { id: "vol-a", instanceId: "i-a", blocks: 24 },
  { id: "vol-b", instanceId: "i-b", blocks: 16 },
] as const;

function writer(): EbsSnapshotWriter {
  return new EbsSnapshotWriter({ client, catalog: emulatorSnapshotCatalog(emu) });
}

beforeAll(async () => {
  emu = await startEbsEmulator();
  const credentials = { accessKeyId: "AKIDRESTORE", secretAccessKey: "x" };
  client = createEbsClient({ endpoint: emu.endpoint, region: "us-east-1", maxSockets: 64, credentials });
  reader = new EBSClient({ endpoint: emu.endpoint, region: "us-east-1", credentials });
  g = memGroup({ volumes: VOLS });
  for (let i = 1; i <= 3; i++) {
    // Generation i rewrites about a third of each volume; some blocks become zero, some repeat content.
    for (const v of VOLS) {
      for (let b = 0; b < v.blocks; b++) {
        if ((b + i) % 3 !== 0) continue;
        g.ebs.write(
          v.id,
          b,
          b % 7 === 0 && i > 1 ? null : b % 5 === 0 ? `shared-${b % 2}` : `g${i}-${v.id}-${b}`,
        );
      }
    }
    expect(await runPipeline(g.deps(), g.config, `run-${i}`)).toMatchObject({ outcome: "committed" });
  }
});

afterAll(async () => {
  client?.destroy();
  reader?.destroy();
  await emu?.close();
});

/** `w` with its putBlock replaced (to inject failures or record refusals). */
function withPutBlock(w: SnapshotWriter, putBlock: SnapshotWriter["putBlock"]): SnapshotWriter {
  return {
    startSnapshot: (r) => w.startSnapshot(r),
    completeSnapshot: (id, n) => w.completeSnapshot(id, n),
    deleteSnapshot: (id) => w.deleteSnapshot(id),
    describeSnapshot: (id) => w.describeSnapshot(id),
    findSnapshots: (t) => w.findSnapshots(t),
    putBlock,
  };
}

/** Differences between a snapshot read back and a generation's image of the volume. */
async function compare(snapshotId: string, generation: number, volumeId: string): Promise<string[]> {
  const m = await readGeneration(g.repo, generation);
  const image = g.ebs.image(m.volumes.find((v) => v.volumeId === volumeId)!.sourceSnapshotId!);
  const got = await readSnapshot(reader, snapshotId);
  const zero = Buffer.alloc(BLOCK_SIZE);
  const problems: string[] = [];
  for (let b = 0; b < image.sizeBlocks; b++) {
    if (!(got.get(b) ?? zero).equals(blockBytes(image.blocks.get(b) ?? null))) {
      problems.push(`${volumeId} block ${b} differs from generation ${generation}`);
    }
  }
  for (const [b, data] of got)
    if (b >= image.sizeBlocks && !data.equals(zero)) problems.push(`block ${b} beyond`);
  return problems;
}

/** Blocks whose content differs between two generations of a volume (from the images). */
async function differing(a: number, b: number, volumeId: string): Promise<number> {
  const img = async (n: number) => {
    const m = await readGeneration(g.repo, n);
    return g.ebs.image(m.volumes.find((v) => v.volumeId === volumeId)!.sourceSnapshotId!);
  };
  const [x, y] = [await img(a), await img(b)];
  let n = 0;
  for (let i = 0; i < y.sizeBlocks; i++) {
    if (!blockBytes(x.blocks.get(i) ?? null).equals(blockBytes(y.blocks.get(i) ?? null))) n++;
  }
  return n;
}

describe("restore into EBS snapshots", () => {
  it("GIVEN three generations WHEN HEAD is restored into snapshots THEN every volume read back through GetSnapshotBlock is the generation's image, tagged, with only stored blocks written", async () => {
    const before = emu.stats().requests.PutSnapshotBlock;
    const r = await restoreGroupToSnapshots(g.repo, writer(), { autoParent: false });
    expect(r.generation).toBe(3);
    expect(r.volumes).toHaveLength(2);
    let stored = 0;
    for (const v of r.volumes) {
      expect(v).toMatchObject({ done: true, status: "completed", parentSnapshotId: null, zeroBlocks: 0 });
      expect(await compare(v.snapshotId, 3, v.volumeId)).toEqual([]);
      const d = emu.describeSnapshot(v.snapshotId)!;
      const tags = Object.fromEntries(d.tags.map((t) => [t.Key, t.Value]));
      expect(tags).toMatchObject({
        [RESTORE_TAGS.group]: "db",
        [RESTORE_TAGS.generation]: "3",
        [RESTORE_TAGS.volume]: v.volumeId,
        [RESTORE_TAGS.restoreId]: r.restoreId,
      });
      stored += v.dataBlocks;
      // Only blocks with data were written: zero and never-written blocks were skipped.
      const image = g.ebs.image(
        (await readGeneration(g.repo, 3)).volumes.find((x) => x.volumeId === v.volumeId)!.sourceSnapshotId!,
      );
      const nonZero = [...image.blocks.values()].filter((c) => c !== null).length;
      expect(v.dataBlocks).toBe(nonZero);
    }
    expect(emu.stats().requests.PutSnapshotBlock - before).toBe(stored);
  });

  it("GIVEN a snapshot a restore wrote of generation 3 WHEN generation 1 is restored THEN it names that parent and writes exactly the blocks that differ, and reads back as generation 1", async () => {
    const before = emu.stats().requests.PutSnapshotBlock;
    const r = await restoreGroupToSnapshots(g.repo, writer(), { generation: 1 });
    let expected = 0;
    for (const v of r.volumes) {
      expect(v.parentGeneration, v.volumeId).toBe(3);
      expect(v.parentSnapshotId).toMatch(/^snap-/);
      expect(emu.describeSnapshot(v.snapshotId)?.parentSnapshotId).toBe(v.parentSnapshotId);
      const diff = await differing(3, 1, v.volumeId);
      expect(v.blocksWritten, `${v.volumeId}: only the differing blocks`).toBe(diff);
      expected += diff;
      expect(await compare(v.snapshotId, 1, v.volumeId)).toEqual([]);
    }
    expect(emu.stats().requests.PutSnapshotBlock - before).toBe(expected);
    // Blocks generation 1 never wrote but generation 3 holds are written as zeros.
    expect(r.volumes.some((v) => v.zeroBlocks > 0)).toBe(true);
  });

  it("fails with RestoreToSnapshotsError and leaves no snapshot of the restore when one volume fails", async () => {
    const w = writer();
    const failing = withPutBlock(w, async (req) => {
      if (
        req.blockIndex >= 3 &&
        emu.describeSnapshot(req.snapshotId)?.tags.some((t) => t.Value === "vol-b")
      ) {
        throw new BlockSourceFatalError(
          "PutSnapshotBlock",
          "AccessDeniedException",
          "injected: no access to the key",
        );
      }
      return w.putBlock(req);
    });
    const count = emu.listSnapshots().length;
    const error = await restoreGroupToSnapshots(g.repo, failing, {
      autoParent: false,
      restoreId: "restore-fails",
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(RestoreToSnapshotsError);
    expect((error as Error).message).toMatch(/AccessDeniedException.*deleted the 2 snapshot/);
    expect((error as RestoreToSnapshotsError).left).toEqual([]);
    expect(emu.listSnapshots()).toHaveLength(count);
    expect(emu.listSnapshots().some((s) => s.tags.some((t) => t.Value === "restore-fails"))).toBe(false);
  });

  it("GIVEN throttling and random 5xx answers WHEN restoring THEN the limiter backs off and the snapshots are still exact", async () => {
    emu.setFaults({ errorRate: 0.05, dataPlaneRpsPerSnapshot: 60 });
    try {
      const r = await restoreGroupToSnapshots(g.repo, writer(), {
        generation: 2,
        autoParent: false,
        aimd: { initialRate: 200 },
        backoffBaseMs: 5,
        backoffCapMs: 50,
      });
      for (const v of r.volumes) expect(await compare(v.snapshotId, 2, v.volumeId)).toEqual([]);
      expect(emu.stats().throttled + emu.stats().errorsInjected).toBeGreaterThan(0);
    } finally {
      emu.resetFaults();
    }
  });

  /** g.repo through a store whose ranged segment reads take a while and are counted while in flight. */
  function countingRepo(failAt?: number) {
    const c = { inFlight: 0, max: 0, reads: 0 };
    const store = new Proxy(g.store, {
      get(target, prop) {
        if (prop === "get") {
          return async (key: string, options?: { range?: unknown }) => {
            if (!key.endsWith(".seg") || !options?.range) return target.get(key, options as never);
            const n = ++c.reads;
            c.inFlight++;
            c.max = Math.max(c.max, c.inFlight);
            try {
              await new Promise((r) => setTimeout(r, 3));
              if (n === failAt) throw new Error(`injected: read ${n} failed`);
              return await target.get(key, options as never);
            } finally {
              c.inFlight--;
            }
          };
        }
        const v = Reflect.get(target, prop, target);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    return { c, repo: createRepo({ store, prefix: g.repo.prefix, group: g.repo.group }) };
  }

  it("GIVEN batches of 3 blocks and 2 reads at once WHEN restored THEN the batches share the 2 reads (never more in flight) and the snapshot reads back exactly", async () => {
    const m = await readGeneration(g.repo, 3);
    const { c, repo } = countingRepo();
    const r = await restoreVolumeToSnapshot(repo, writer(), {
      manifest: m,
      volumeId: "vol-a",
      restoreId: "restore-shared-reads",
      batchBlocks: 3,
      readConcurrency: 2,
    });
    expect(r.status).toBe("completed");
    expect(c.reads).toBeGreaterThan(3);
    expect(c.max).toBeLessThanOrEqual(2);
    expect(await compare(r.snapshotId, 3, "vol-a")).toEqual([]);
  });

  it("GIVEN a segment read that fails in a later batch WHEN restored THEN the restore fails with it and no read is under way once it has failed", async () => {
    const m = await readGeneration(g.repo, 3);
    const { c, repo } = countingRepo(4);
    const error = await restoreVolumeToSnapshot(repo, writer(), {
      manifest: m,
      volumeId: "vol-a",
      restoreId: "restore-read-fails",
      batchBlocks: 2,
      readConcurrency: 2,
    }).catch((e: unknown) => e);
    expect(c.inFlight).toBe(0);
    expect((error as Error).message).toBe("injected: read 4 failed");
  });

  it("GIVEN a stored block damaged in S3 WHEN restored into a snapshot THEN EBS refuses its put (its checksum is the backup's digest), the restore fails with BlockIntegrityError naming it, and the snapshot is not completed", async () => {
    // Its own repository, blocks stored raw: the flipped byte reaches PutSnapshotBlock as it is.
    const store = new MemoryObjectStore();
    const repo = createRepo({ store, prefix: "r", group: "damaged" });
    const content = Array.from({ length: 12 }, () => randomBytes(BLOCK_SIZE));
    await writeGeneration(repo, {
      runId: "damaged",
      volumes: [
        { volumeId: "vol-d", sizeBytes: 1024 ** 3, blocks: content.map((data, block) => ({ block, data })) },
      ],
      segments: { compression: "none" },
    });
    const manifest = (await readCommittedManifest(repo))!;
    const index = await openVolumeIndex(repo, "vol-d", manifest.volumes[0]!.index);
    const entries: IndexEntry[] = [];
    await index.scan((b) => {
      entries.push(...b);
    });
    const bad = entries.find((e) => e.block === 7)!;
    const key = keys.segment(repo, bad.ref.segment!);
    const body = Buffer.from((await store.get(key)).body);
    body[bad.ref.offset + 1000]! ^= 0x40;
    await store.put(key, body);

    const w = writer();
    const refused: Array<{ block: number; reason: unknown }> = [];
    const recording = withPutBlock(w, (req) =>
      w.putBlock(req).catch((error: unknown) => {
        refused.push({
          block: req.blockIndex,
          reason: (error as { cause?: { Reason?: unknown } }).cause?.Reason,
        });
        throw error;
      }),
    );
    const before = new Set(emu.listSnapshots().map((s) => s.snapshotId));
    const error = await restoreVolumeToSnapshot(repo, recording, {
      manifest,
      volumeId: "vol-d",
      restoreId: "restore-damaged",
      batchBlocks: 4,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BlockIntegrityError);
    expect((error as BlockIntegrityError).blockIndex).toBe(7);
    expect((error as Error).message).toContain(bad.ref.segment!);
    // the check that caught it was EBS's: the put of block 7 was refused as INVALID_BLOCK
    expect(refused).toEqual([{ block: 7, reason: "INVALID_BLOCK" }]);
    const made = emu.listSnapshots().filter((s) => !before.has(s.snapshotId));
    expect(made).toHaveLength(1);
    expect(made[0]!.status).toBe("pending");
  });

  it("GIVEN a restore stopped after its first batch WHEN it is resumed with the cursor THEN the same snapshot is completed and reads back exactly", async () => {
    const m = await readGeneration(g.repo, 3);
    const w = writer();
    const first = await restoreVolumeToSnapshot(g.repo, w, {
      manifest: m,
      volumeId: "vol-a",
      restoreId: "restore-resume",
      batchBlocks: 4,
      shouldStop: () => true,
    });
    expect(first).toMatchObject({ done: false, blocksWritten: 4, status: "pending" });
    expect(emu.describeSnapshot(first.snapshotId)?.status).toBe("pending");
    const again = await restoreVolumeToSnapshot(g.repo, w, {
      manifest: m,
      volumeId: "vol-a",
      restoreId: "restore-resume",
      resume: first,
    });
    expect(again.snapshotId).toBe(first.snapshotId);
    expect(again.status).toBe("completed");
    expect(await compare(again.snapshotId, 3, "vol-a")).toEqual([]);
  });
});
