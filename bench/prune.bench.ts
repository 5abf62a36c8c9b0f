/**
 * Prune benchmark (npm run bench:prune): the index bench's shape (bench/index.bench.ts) — a synthetic
 * 16 TiB volume with 10 % of its blocks written, then 20 generations that each change 0.1 % of the
 * written blocks at random places — then forget half of the generations (keepLast 10) and prune,
 * holding the group like a run does. Runs the real core against the in-memory ObjectStore, which
 * counts bytes and requests; segments are stubs that exist only in listings (their size, no data):
 * a prune that read segment data would fail here, so `segment_data_bytes_read` must stay 0.
 * Prints one JSON line: metadata bytes read and written, requests, seconds, peak RSS, and the reads
 * relative to the full index of the retained generations (target ≤ 2).
 */
import { randomFillSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { Codec } from "#core/format/codec.ts";
import { listGenerations, readGeneration } from "#core/format/generation.ts";
import { IndexRunWriter, mergeRuns } from "#core/format/index-run.ts";
import { createRepo, keys } from "#core/format/layout.ts";
import { openVolumeIndex, prepareVolume, readVolumeIndexRoot } from "#core/format/volume-index.ts";
import { applyForget, planForget } from "#core/lifecycle/forget.ts";
import { withGroupHeld } from "#core/lifecycle/maintenance.ts";
import { pruneRepository } from "#core/lifecycle/prune.ts";
import type {
  GetOptions,
  ListOptions,
  MultipartUpload,
  ObjectStore,
  ObjectVersionRef,
  ObjectVersionSummary,
  PutOptions,
} from "#core/ports/object-store.ts";
import { cleanupRun, commitGeneration, fenceHead } from "#core/protocol/commit.ts";

const VOLUME_TIB = Number(process.env.CGM_BENCH_TIB ?? 16);
const GENERATIONS = Number(process.env.CGM_BENCH_GENERATIONS ?? 20);
const KEEP = Number(process.env.CGM_BENCH_KEEP ?? Math.floor((GENERATIONS + 1) / 2));
const WRITTEN_FRACTION = 0.1;
const CHANGE_FRACTION = 0.001;
const BLOCKS = (VOLUME_TIB * 2 ** 40) / BLOCK_SIZE;
const BLOCKS_PER_SEGMENT = 64; // 32 MiB segments of raw blocks
const log = (m: string) => process.stderr.write(`[bench:prune] ${m}\n`);

let seed = 0x9e3779b9;
function rand(): number {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed / 0x1_0000_0000;
}

const spillDir = mkdtempSync(join(tmpdir(), "cgm-bench-prune-"));
process.on("exit", () => rmSync(spillDir, { recursive: true, force: true }));
const inner = new MemoryObjectStore({ spillDir });

/**
 * The in-memory store with stub segments (listed with their size, never read) and request counters.
 * Everything else is the memory store.
 */
class BenchStore implements ObjectStore {
  readonly stubs = new Map<string, number>();
  readonly counts = { get: 0, put: 0, list: 0, delete: 0, segmentDataBytesRead: 0 };
  readonly segmentsPrefix: string;
  constructor(segmentsPrefix: string) {
    this.segmentsPrefix = segmentsPrefix;
  }
  get(key: string, options?: GetOptions) {
    this.counts.get++;
    if (this.stubs.has(key)) {
      this.counts.segmentDataBytesRead += this.stubs.get(key)!;
      throw new Error(`bench: prune read segment ${key}`);
    }
    return inner.get(key, options);
  }
  put(key: string, body: Uint8Array, options?: PutOptions) {
    this.counts.put++;
    return inner.put(key, body, options);
  }
  delete(key: string, options?: { readonly versionId?: string }) {
    this.counts.delete++;
    return inner.delete(key, options);
  }
  head(key: string, options?: { readonly versionId?: string }) {
    this.counts.get++;
    return inner.head(key, options);
  }
  async *list(prefix: string, options?: ListOptions) {
    this.counts.list++;
    let n = 0;
    for await (const o of inner.list(prefix, options)) {
      if (++n % 1000 === 0) this.counts.list++;
      yield o;
    }
  }
  async *listVersions(prefix: string): AsyncIterable<ObjectVersionSummary> {
    this.counts.list++;
    if (prefix.startsWith(this.segmentsPrefix)) {
      let n = 0;
      for (const [key, size] of [...this.stubs].filter(([k]) => k.startsWith(prefix)).sort()) {
        if (++n % 1000 === 0) this.counts.list++;
        yield { key, versionId: "stub", isLatest: true, isDeleteMarker: false, size };
      }
      return;
    }
    let n = 0;
    for await (const v of inner.listVersions(prefix)) {
      if (++n % 1000 === 0) this.counts.list++;
      yield v;
    }
  }
  createMultipartUpload(
    key: string,
    options?: Parameters<ObjectStore["createMultipartUpload"]>[1],
  ): Promise<MultipartUpload> {
    this.counts.put++;
    return inner.createMultipartUpload(key, options);
  }
  async deleteVersions(objects: readonly ObjectVersionRef[]) {
    if (objects.length === 0) return;
    this.counts.delete += Math.ceil(objects.length / 1000);
    for (const o of objects) this.stubs.delete(o.key);
    await inner.deleteVersions(objects.filter((o) => o.versionId !== "stub"));
  }
}

const store = new BenchStore("bench/segments/");
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
let segmentCounter = 0;
const segmentId = (n: number) => n.toString(16).padStart(32, "0");

async function writeShard(runId: string, blocks: Uint32Array) {
  const w = new IndexRunWriter(store, keys.shardResult(repo, runId, volumeId, 0));
  for (let i = 0; i < blocks.length; i++) {
    if (i % BLOCKS_PER_SEGMENT === 0) {
      segmentCounter++;
      // Data + footer (20 + 41 per block) + trailer (56), as a real segment of these blocks.
      const n = Math.min(BLOCKS_PER_SEGMENT, blocks.length - i);
      store.stubs.set(keys.segment(repo, segmentId(segmentCounter)), n * BLOCK_SIZE + 20 + 41 * n + 56);
    }
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

let previous: { versionId: string | null; sha256: string } | null = null;
async function generation(g: number, changed: Uint32Array): Promise<void> {
  const runId = `run-${g}`;
  const shard = await writeShard(runId, changed);
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
    pointInTime: new Date(Date.UTC(2026, 0, 1) + g * 3_600_000),
    volumes: [{ volumeId, sizeBytes: BLOCKS * BLOCK_SIZE, sourceSnapshotId: `snap-${g}`, index: previous }],
  });
  await cleanupRun(repo, runId);
}

const buildStarted = performance.now();
const chosen: number[] = [];
for (let b = 0; b < BLOCKS; b++) if (rand() < WRITTEN_FRACTION) chosen.push(b);
const written = Uint32Array.from(chosen);
chosen.length = 0;
await generation(1, written);
const changeCount = Math.round(written.length * CHANGE_FRACTION);
for (let g = 2; g <= GENERATIONS + 1; g++) {
  const pick = new Set<number>();
  while (pick.size < changeCount) pick.add(written[Math.floor(rand() * written.length)]!);
  await generation(g, Uint32Array.from([...pick].sort((a, b) => a - b)));
}
log(`built ${GENERATIONS + 1} generations in ${((performance.now() - buildStarted) / 1000).toFixed(1)} s`);

// The full index of the retained generations: the distinct block runs their roots name, and the
// size of HEAD's index merged into one run (bench:index's full_index_bytes).
async function retainedIndex(generations: readonly number[]) {
  const runs = new Map<string, number>();
  let dedup = 0;
  const seen = new Set<string>();
  for (const n of generations) {
    const m = await readGeneration(repo, n);
    for (const v of m.volumes) {
      const { root } = await readVolumeIndexRoot(repo, v.volumeId, v.index);
      for (const r of [...(root.base ? [root.base] : []), ...root.deltas]) runs.set(r.key, r.bytes);
      for (const d of root.dedup
        ? [...(root.dedup.base ? [root.dedup.base] : []), ...root.dedup.deltas]
        : []) {
        if (seen.has(d.key)) continue;
        seen.add(d.key);
        dedup += d.bytes + d.bloomBytes;
      }
    }
  }
  return { blockRunBytes: [...runs.values()].reduce((a, b) => a + b, 0), dedupBytes: dedup };
}

const head = await readGeneration(repo, GENERATIONS + 1);
const index = await openVolumeIndex(repo, volumeId, head.volumes[0]!.index);
const sinkStore: ObjectStore = {
  get: (k, o) => inner.get(k, o),
  head: (k, o) => inner.head(k, o),
  list: (p, o) => inner.list(p, o),
  listVersions: (p) => inner.listVersions(p),
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
const sink = new IndexRunWriter(sinkStore, "scratch/full.run");
await mergeRuns(index.readers, (page, i) => sink.appendFrom(page, i));
const fullIndexBytes = (await sink.finish()).bytes;

// Forget half, then prune (one maintenance run: lock, fence, forget, prune, release).
inner.resetStats();
for (const k of Object.keys(store.counts) as (keyof typeof store.counts)[]) store.counts[k] = 0;
const rss0 = process.resourceUsage().maxRSS;
const started = performance.now();
const result = await withGroupHeld(repo, { runId: "bench-prune" }, async ({ lease }) => {
  const plan = await planForget(repo, { keepLast: KEEP });
  const forgotten = await applyForget(repo, lease, plan);
  const report = await pruneRepository(repo, { lease });
  return { plan, forgotten, report };
});
const seconds = (performance.now() - started) / 1000;
const retained = await listGenerations(repo);
const full = await retainedIndex(retained);
const r = result.report;
console.log(
  JSON.stringify({
    volume_tib: VOLUME_TIB,
    generations: GENERATIONS + 1,
    forgotten: result.forgotten.forgotten.length,
    retained: retained.length,
    blocks_written: written.length,
    blocks_changed_per_generation: changeCount,
    full_index_bytes: fullIndexBytes,
    retained_block_run_bytes: full.blockRunBytes,
    retained_dedup_run_bytes: full.dedupBytes,
    metadata_bytes_read: inner.stats.bytesRead,
    metadata_bytes_written: inner.stats.bytesWritten,
    read_x_full_index: Number((inner.stats.bytesRead / fullIndexBytes).toFixed(3)),
    read_x_retained_runs: Number((inner.stats.bytesRead / full.blockRunBytes).toFixed(3)),
    requests: { ...store.counts, segmentDataBytesRead: undefined },
    segment_data_bytes_read: store.counts.segmentDataBytesRead,
    objects_deleted: r.objectsDeleted,
    bytes_reclaimed: r.bytesReclaimed,
    deleted: Object.fromEntries(Object.entries(r.deleted).map(([k, v]) => [k, v.count])),
    segments_live: r.segments.live,
    segments_total: r.segments.total,
    repack_candidates: r.repack.candidates,
    seconds: Number(seconds.toFixed(1)),
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    peak_rss_mb_before_prune: Math.round(rss0 / 1024),
    object_store:
      "adapters/memory-store.ts (counts bytes; segments are listed stubs: no segment data exists)",
  }),
);
