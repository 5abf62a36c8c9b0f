/**
 * Repository scenarios shared by the unit tests (in-memory store) and the integration tests (the local
 * S3 server): random histories that must restore byte for byte, corruption, revert and recovery.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { expect } from "vitest";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { Codec } from "#core/format/codec.ts";
import { readCommittedManifest, readHead } from "#core/format/generation.ts";
import { keys, type Repo } from "#core/format/layout.ts";
import { openVolumeIndex, readVolumeIndexRoot, runKeysOf } from "#core/format/volume-index.ts";
import { type BlockWrite, writeGeneration } from "#core/protocol/write-generation.ts";
import { restoreGroup, restoreVolume } from "#core/restore/restore.ts";
import { verifyGeneration } from "#core/restore/verify.ts";
import { type BlockKind, expectImage, makeBlock, VolumeModel } from "./blocks.ts";

export const VOLUMES = [
  { id: "vol-a", blocks: 16 },
  { id: "vol-b", blocks: 24 },
  { id: "vol-c", blocks: 8 },
] as const;

export const SMALL = {
  segments: { targetBytes: 3 * BLOCK_SIZE, allowSmallSegments: true, compression: "zstd" as const },
  runOptions: { pageEntries: 4 },
};

export interface Op {
  readonly volume: number;
  readonly block: number;
  readonly kind: BlockKind | "trim";
  readonly seed: number;
}

const opArb: fc.Arbitrary<Op> = fc
  .record({
    volume: fc.integer({ min: 0, max: VOLUMES.length - 1 }),
    block: fc.nat(),
    kind: fc.constantFrom<BlockKind | "trim">("text", "text", "noise", "zero", "trim"),
    seed: fc.integer({ min: 0, max: 12 }), // small range: identical blocks recur (dedup)
  })
  .map((o) => ({ ...o, block: o.block % VOLUMES[o.volume]!.blocks }));

export const historyArb = fc.array(fc.array(opArb, { maxLength: 10 }), { minLength: 5, maxLength: 6 });

export async function withTmp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "cgm-repo-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

let lockClock = Date.now() - 3_600_000;
/** Lock clock readings a second apart: each run's 1 ms lease has expired for the next one. */
function nextLockTime(): Date {
  lockClock += 1000;
  return new Date(lockClock);
}

/** Applies one generation of ops to the models and to the repository (Transfer → Prepare → Commit). */
export async function backupGeneration(
  repo: Repo,
  models: VolumeModel[],
  ops: readonly Op[],
  runId: string,
  first: boolean,
  options: { commit?: boolean } = {},
): Promise<Awaited<ReturnType<typeof writeGeneration>>> {
  const writes = new Map<number, BlockWrite[]>();
  for (const op of ops) {
    const data = op.kind === "trim" ? null : makeBlock({ kind: op.kind, seed: op.seed });
    if (options.commit !== false) models[op.volume]!.write(op.block, data);
    const list = writes.get(op.volume) ?? [];
    list.push({ block: op.block, data });
    writes.set(op.volume, list);
  }
  return writeGeneration(repo, {
    runId,
    pointInTime: new Date(),
    volumes: VOLUMES.map((v, i) => ({ v, i }))
      .filter(({ i }) => first || writes.has(i))
      .map(({ v, i }) => ({
        volumeId: v.id,
        sizeBytes: v.blocks * BLOCK_SIZE,
        sourceSnapshotId: `snap-${runId}-${i}`,
        blocks: writes.get(i) ?? [],
      })),
    ...SMALL,
    commit: options.commit ?? true,
    // A run that dies (or stops after Prepare) leaves its lock; the next run takes it over at once.
    lockTtlMs: 1,
    lockNow: nextLockTime(),
  });
}

/** Property: random write histories over >= 5 generations; after every commit every generation restores exactly. */
export async function checkRandomHistories(makeRepo: () => Promise<Repo>, numRuns: number): Promise<void> {
  await fc.assert(
    fc.asyncProperty(historyArb, async (history) => {
      const repo = await makeRepo();
      const models = VOLUMES.map((v) => new VolumeModel(v.blocks));
      const snapshots: VolumeModel[][] = [];
      await withTmp(async (dir) => {
        for (const [g, ops] of history.entries()) {
          const result = await backupGeneration(repo, models, ops, `run-${g + 1}`, g === 0);
          expect(result.generation).toBe(g + 1);
          snapshots.push(models.map((m) => m.clone()));
          for (let gen = 1; gen <= snapshots.length; gen++) {
            const out = join(dir, `g${g}-${gen}`);
            await restoreGroup(repo, { generation: gen, directory: out, concurrency: 3 });
            for (const [i, v] of VOLUMES.entries())
              await expectImage(join(out, `${v.id}.img`), snapshots[gen - 1]![i]!);
            await rm(out, { recursive: true, force: true });
          }
        }
      });
      const report = await verifyGeneration(repo, { readData: 1 });
      expect(report.problems).toEqual([]);
      expect(report.ok).toBe(true);
    }),
    { numRuns },
  );
}

/** A repository with two committed generations of non-trivial content; returns models per generation. */
export async function twoGenerations(repo: Repo): Promise<VolumeModel[][]> {
  const models = VOLUMES.map((v) => new VolumeModel(v.blocks));
  const gen1: Op[] = [];
  for (const [vi, v] of VOLUMES.entries()) {
    for (let b = 0; b < v.blocks; b += 2)
      gen1.push({ volume: vi, block: b, kind: b % 3 ? "text" : "noise", seed: vi * 100 + b });
  }
  await backupGeneration(repo, models, gen1, "run-1", true);
  const s1 = models.map((m) => m.clone());
  await backupGeneration(
    repo,
    models,
    [
      { volume: 0, block: 1, kind: "noise", seed: 501 },
      { volume: 1, block: 2, kind: "trim", seed: 0 },
      { volume: 2, block: 7, kind: "text", seed: 502 },
    ],
    "run-2",
    false,
  );
  return [s1, models.map((m) => m.clone())];
}

/** Every object key reachable from HEAD: manifest, index root versions, runs, segments. */
export async function reachableFromHead(
  repo: Repo,
): Promise<{ keys: Set<string>; indexVersions: Set<string> }> {
  const out = new Set<string>();
  const versions = new Set<string>();
  const state = await readHead(repo);
  if (!state) return { keys: out, indexVersions: versions };
  out.add(keys.head(repo));
  if (!state.head.commit) return { keys: out, indexVersions: versions };
  out.add(keys.resolve(repo, state.head.commit.manifest.key, "HEAD"));
  const manifest = (await readCommittedManifest(repo))!;
  for (const v of manifest.volumes) {
    versions.add(`${keys.volumeIndex(repo, v.volumeId)}@${v.index.versionId}`);
    const index = await openVolumeIndex(repo, v.volumeId, v.index);
    for (const k of runKeysOf(repo, index.root, "test")) out.add(k);
    await index.scan((batch) => {
      for (const e of batch) if (e.ref.codec !== Codec.zero) out.add(keys.segment(repo, e.ref.segment!));
    });
  }
  return { keys: out, indexVersions: versions };
}

/** Revert: Prepare some volumes of run-3, revert; generation 2 stays current and exact; nothing of run-3 reachable. */
export async function checkRevert(repo: Repo): Promise<void> {
  const [, s2] = await twoGenerations(repo);
  const models = s2!.map((m) => m.clone());
  const before = await reachableFromHead(repo);
  const run3 = await backupGeneration(
    repo,
    models,
    [
      { volume: 0, block: 3, kind: "noise", seed: 900 },
      { volume: 1, block: 5, kind: "text", seed: 901 },
    ],
    "run-3",
    false,
    { commit: false },
  );
  expect(run3.prepared.length).toBe(2);
  const preparedVersions = run3.prepared.map((p) => p.versionId!);
  // Prepared but not committed: the latest index version is run-3's, HEAD still names generation 2.
  expect((await readVolumeIndexRoot(repo, "vol-a")).root.runId).toBe("run-3");
  expect((await readHead(repo))!.head.generation).toBe(2);

  const { revertRun } = await import("#core/protocol/commit.ts");
  const lease = { runId: "run-3", fencing: run3.fencing };
  const volumeIds = VOLUMES.map((v) => v.id);
  const reverted = await revertRun(repo, { ...lease, volumeIds });
  if (reverted.alreadyCommitted) throw new Error("run-3 did not commit");
  expect(reverted.indexVersions.map((v) => v.versionId).sort()).toEqual([...preparedVersions].sort());
  // Idempotent.
  const again = await revertRun(repo, { ...lease, volumeIds });
  expect(again.alreadyCommitted === false && again.indexVersions).toEqual([]);

  for (const v of ["vol-a", "vol-b"]) expect((await readVolumeIndexRoot(repo, v)).root.runId).toBe("run-2");
  const after = await reachableFromHead(repo);
  expect([...after.keys].sort()).toEqual([...before.keys].sort());
  expect([...after.indexVersions].sort()).toEqual([...before.indexVersions].sort());
  const run3Runs = run3.prepared.flatMap((p) => [
    p.root.base?.key,
    ...p.root.deltas.map((d) => d.key),
    ...(p.root.dedup ? [p.root.dedup.base, ...p.root.dedup.deltas] : []).flatMap((d) =>
      d ? [d.key, d.bloomKey] : [],
    ),
  ]);
  expect(run3Runs.some((k) => k?.endsWith(".bloom"))).toBe(true);
  const run3Only = run3Runs
    .filter((k): k is string => k !== undefined)
    .map((k) => keys.resolve(repo, k, "test"))
    .filter((k) => !before.keys.has(k));
  for (const k of run3Only) expect(await repo.store.head(k)).toBeUndefined();
  for await (const o of repo.store.list(keys.runPrefix(repo, "run-3")))
    throw new Error(`left behind: ${o.key}`);
  await withTmp(async (dir) => {
    await restoreGroup(repo, { directory: dir });
    for (const [i, v] of VOLUMES.entries()) await expectImage(join(dir, `${v.id}.img`), s2![i]!);
  });
  // The next run commits generation 3 normally.
  const next = await backupGeneration(
    repo,
    models,
    [{ volume: 2, block: 0, kind: "text", seed: 77 }],
    "run-4",
    false,
  );
  expect(next.generation).toBe(3);
}

async function corruptObject(repo: Repo, key: string, mutate: (b: Uint8Array) => Uint8Array): Promise<void> {
  const got = await repo.store.get(key);
  await repo.store.put(key, mutate(got.body.slice()));
}

async function someSegment(repo: Repo, volumeId: string): Promise<{ key: string; block: number }> {
  const manifest = (await readCommittedManifest(repo))!;
  const v = manifest.volumes.find((x) => x.volumeId === volumeId)!;
  const index = await openVolumeIndex(repo, volumeId, v.index);
  let found: { key: string; block: number } | undefined;
  await index.scan((batch) => {
    for (const e of batch)
      if (!found && e.ref.codec !== Codec.zero)
        found = { key: keys.segment(repo, e.ref.segment!), block: e.block };
  });
  return found!;
}

export type Corruption = "flip-segment-byte" | "missing-segment" | "truncated-index-page";

/** Corruption: verify reports the damaged object and restore of the volume fails loudly, naming it. */
export async function checkCorruption(repo: Repo, kind: Corruption): Promise<void> {
  await twoGenerations(repo);
  let damaged: string;
  if (kind === "truncated-index-page") {
    const root = (await readVolumeIndexRoot(repo, "vol-a")).root;
    damaged = keys.resolve(repo, (root.deltas.at(-1) ?? root.base)!.key, "test");
    await corruptObject(repo, damaged, (b) => b.subarray(0, Math.floor(b.byteLength / 2)));
  } else {
    damaged = (await someSegment(repo, "vol-a")).key;
    if (kind === "missing-segment") await repo.store.delete(damaged);
    else {
      await corruptObject(repo, damaged, (b) => {
        b[10]! ^= 0x01; // inside the first stored block
        return b;
      });
    }
  }
  const report = await verifyGeneration(repo, { readData: 1 });
  expect(report.ok).toBe(false);
  expect(report.problems.some((p) => p.key === damaged)).toBe(true);
  const structural = await verifyGeneration(repo, { readData: 0 });
  if (kind !== "flip-segment-byte") expect(structural.problems.some((p) => p.key === damaged)).toBe(true);
  await withTmp(async (dir) => {
    const escaped = damaged.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    await expect(restoreVolume(repo, { volumeId: "vol-a", path: join(dir, "a.img") })).rejects.toThrow(
      new RegExp(escaped),
    );
  });
}
