/**
 * Volume index benchmark (npm run bench:index): a synthetic 16 TiB volume with 10 % of its blocks
 * written, then 20 generations that each change 0.1 % of the written blocks at uniformly random places.
 * Runs the real core (transfer shard runs → prepareVolume with compaction → commitGeneration) against
 * the in-memory ObjectStore, which counts bytes; block data is not stored (refs point at fake segments).
 * Prints one JSON line.
 */
import { randomFillSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { Codec } from "#core/format/codec.ts";
import { readCommittedManifest } from "#core/format/generation.ts";
import { IndexRunWriter, mergeRuns } from "#core/format/index-run.ts";
import { createRepo, keys } from "#core/format/layout.ts";
import { DEFAULT_COMPACTION, openVolumeIndex, prepareVolume } from "#core/format/volume-index.ts";
import type { MultipartUpload, ObjectStore } from "#core/ports/object-store.ts";
import { cleanupRun, commitGeneration, fenceHead } from "#core/protocol/commit.ts";

const started = performance.now();
const VOLUME_TIB = Number(process.env.CGM_BENCH_TIB ?? 16);
const GENERATIONS = Number(process.env.CGM_BENCH_GENERATIONS ?? 20);
const WRITTEN_FRACTION = 0.1;
const CHANGE_FRACTION = 0.001;
const BLOCKS = (VOLUME_TIB * 2 ** 40) / BLOCK_SIZE;
const BLOCKS_PER_SEGMENT = 64; // 32 MiB segments of raw blocks

let seed = 0x9e3779b9;
function rand(): number {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed / 0x1_0000_0000;
}

let segmentCounter = 0;
function segmentId(n: number): string {
  return n.toString(16).padStart(32, "0");
}

// Objects of 1 MiB and more live in temporary files (as S3 would hold them), so peak RSS is the
// working set of the index code, not the stored index.
const spillDir = mkdtempSync(join(tmpdir(), "cgm-bench-index-"));
process.on("exit", () => rmSync(spillDir, { recursive: true, force: true }));
const store = new MemoryObjectStore({ spillDir });
const repo = createRepo({ store, prefix: "bench", group: "bench" });
const volumeId = "vol-bench";
const hash = new Uint8Array(32 * 4096);
let hashAt = hash.length;
function nextHash(): Uint8Array {
  if (hashAt >= hash.length) {
    randomFillSync(hash);
    hashAt = 0;
  }
  hashAt += 32;
  return hash.subarray(hashAt - 32, hashAt);
}

/** Writes a shard run for `blocks` (ascending) with fresh fake refs, as a transfer shard would. */
async function writeShard(runId: string, blocks: Uint32Array) {
  const w = new IndexRunWriter(store, keys.shardResult(repo, runId, volumeId, 0));
  for (let i = 0; i < blocks.length; i++) {
    if (i % BLOCKS_PER_SEGMENT === 0) segmentCounter++;
    const p = w.appendRaw(
      blocks[i]!,
      segmentId(segmentCounter),
      (i % BLOCKS_PER_SEGMENT) * BLOCK_SIZE,
      BLOCK_SIZE,
      Codec.raw,
      nextHash(),
    );
    if (p) await p;
  }
  return w.finish();
}

// Generation 1: 10 % of the blocks, chosen uniformly.
const chosen: number[] = [];
for (let b = 0; b < BLOCKS; b++) if (rand() < WRITTEN_FRACTION) chosen.push(b);
const written = Uint32Array.from(chosen);
chosen.length = 0;
let previous: { versionId: string | null; sha256: string } | null = null;

let lastDeltaBytes = 0;
async function generation(g: number, changed: Uint32Array): Promise<number> {
  const runId = `run-${g}`;
  store.resetStats();
  const shard = await writeShard(runId, changed);
  lastDeltaBytes = shard.bytes;
  const lease = { runId, fencing: g };
  await fenceHead(repo, lease);
  const p = await prepareVolume(repo, {
    volumeId,
    runId,
    fencing: g,
    generation: g,
    sizeBytes: BLOCKS * BLOCK_SIZE,
    changes: [shard],
    previous,
  });
  previous = { versionId: p.versionId ?? null, sha256: p.sha256 };
  await commitGeneration(repo, {
    ...lease,
    generation: g,
    pointInTime: new Date(),
    volumes: [{ volumeId, sizeBytes: BLOCKS * BLOCK_SIZE, sourceSnapshotId: `snap-${g}`, index: previous }],
  });
  const bytes = store.stats.bytesWritten;
  await cleanupRun(repo, runId);
  return bytes;
}

await generation(1, written);
const perGeneration: number[] = [];
const changeCount = Math.round(written.length * CHANGE_FRACTION);
for (let g = 2; g <= GENERATIONS + 1; g++) {
  const pick = new Set<number>();
  while (pick.size < changeCount) pick.add(written[Math.floor(rand() * written.length)]!);
  perGeneration.push(await generation(g, Uint32Array.from([...pick].sort((a, b) => a - b))));
}

// Restore metadata: HEAD → manifest → index root → every run, all pages.
store.resetStats();
const manifest = (await readCommittedManifest(repo))!;
const index = await openVolumeIndex(repo, volumeId, manifest.volumes[0]!.index);
let live = 0;
await index.scan((batch) => {
  live += batch.length;
});
const restoreRead = store.stats.bytesRead;

// Full index size: merge every run into one (the writer reports its size; the sink keeps nothing).
const sink: ObjectStore = {
  ...store,
  get: (k, o) => store.get(k, o),
  head: (k, o) => store.head(k, o),
  list: (p, o) => store.list(p, o),
  listVersions: (p) => store.listVersions(p),
  delete: async () => {},
  deleteVersions: async () => {},
  put: async () => ({ etag: "sink" }),
  createMultipartUpload: async (key): Promise<MultipartUpload> => ({
    key,
    uploadPart: async () => {},
    complete: async () => ({ etag: "sink" }),
    abort: async () => {},
  }),
};
const full = new IndexRunWriter(sink, "scratch/full.run");
await mergeRuns(index.readers, (page, i) => full.appendFrom(page, i));
const fullInfo = await full.finish();

const dedup = index.root.dedup;
const dedupBytes = (dedup ? [dedup.base, ...dedup.deltas] : []).reduce(
  (s, d) => s + (d ? d.bytes + d.bloomBytes : 0),
  0,
);
const mean = perGeneration.reduce((s, x) => s + x, 0) / perGeneration.length;
// A full merge (rewrite of the base) happens when the deltas reach maxDeltaRatio of the base, i.e.
// after about that many generations' worth of delta runs; 20 generations do not reach it, so report
// its amortized share too.
const gensPerFullMerge = (DEFAULT_COMPACTION.maxDeltaRatio * fullInfo.bytes) / lastDeltaBytes;
const amortizedFull = (fullInfo.bytes + dedupBytes) / gensPerFullMerge; // block index + dedup base rewrite
console.log(
  JSON.stringify({
    volume_tib: VOLUME_TIB,
    blocks_written: written.length,
    blocks_changed_per_generation: changeCount,
    full_index_bytes: fullInfo.bytes,
    metadata_bytes_written_per_generation: Math.round(mean),
    restore_metadata_bytes_read: restoreRead,
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    seconds: Number(((performance.now() - started) / 1000).toFixed(1)),
    written_per_generation_pct_of_full: Number(((100 * mean) / fullInfo.bytes).toFixed(3)),
    restore_read_x_full: Number((restoreRead / fullInfo.bytes).toFixed(3)),
    amortized_full_merge_bytes_per_generation: Math.round(amortizedFull),
    amortized_written_per_generation_pct_of_full: Number(
      ((100 * (mean + amortizedFull)) / fullInfo.bytes).toFixed(3),
    ),
    runs_at_end: index.readers.length,
    live_entries: live,
    dedup_index_bytes: dedupBytes,
    object_store: "adapters/memory-store.ts (counts bytes; objects >= 1 MiB spilled to temp files)",
  }),
);
