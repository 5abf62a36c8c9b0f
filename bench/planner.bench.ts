/**
 * `npm run bench:planner` — the planner (core/transfer/planner.ts) at scale. Prints ONE JSON line.
 *
 * A synthetic 16 TiB volume (33,554,432 blocks; the EBS emulator serves synthetic snapshots without
 * storing their data, @cgmirror/ebs-emulator's SyntheticBlocks), half written in the base snapshot, 10 % of
 * its blocks rewritten in the new one (≈ 3.36 M changed blocks). `planVolume` lists
 * ListChangedBlocks(base, new) page by page (10,000 entries a page) into shard lists of 30,000 blocks
 * uploaded to the local S3 server — the real adapters over HTTP, the emulator and the S3 server in
 * their own processes (their CPU is not the planner's).
 *
 * Figures: list_calls (List requests the planner made; the emulator's own count alongside),
 * changed_blocks, shards, seconds, planner_cpu_s, emulator_cpu_s, shard_list_bytes (all shard lists),
 * peak_heap_growth_mb (largest heapUsed minus heapUsed before planning, sampled every 50 ms and after
 * every page) and peak_heap_growth_at_half_mb (the same when half the pages were listed: equal if
 * nothing accumulates, half if every entry were kept), peak_rss_mb (process maxRSS) and rss_before_mb, bytes_per_changed_block_heap
 * (peak heap growth / changed blocks: an in-memory list of every entry would be ≥ 8 bytes a block
 * as a typed array, ≥ 50 as objects).
 * Environment: CGM_BENCH_VOLUME_GIB (16384), CGM_BENCH_CHANGED_FRACTION (0.1), CGM_BENCH_LATENCY_MS
 * (20: the emulator's added latency per request), CGM_BENCH_FIRST_GENERATION=1 to plan a first
 * generation instead (ListSnapshotBlocks of a volume with CHANGED_FRACTION written).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { createInterface } from "node:readline";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { ebsAdmin } from "@cgmirror/ebs-emulator";
import { createEbsClient, EbsBlockSource } from "#adapters/ebs-source.ts";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { createRepo } from "#core/format/layout.ts";
import type {
  BlockSource,
  GetBlockRequest,
  ListBlocksPage,
  ListBlocksRequest,
} from "#core/ports/block-source.ts";
import type { ObjectStore } from "#core/ports/object-store.ts";
import { planVolume } from "#core/transfer/planner.ts";
import { startS3Server } from "#local/s3-server/server.ts";

const MiB = 1024 ** 2;
const volumeGiB = Number(process.env.CGM_BENCH_VOLUME_GIB ?? 16 * 1024);
const changedFraction = Number(process.env.CGM_BENCH_CHANGED_FRACTION ?? 0.1);
const latencyMs = Number(process.env.CGM_BENCH_LATENCY_MS ?? 20);
const firstGeneration = process.env.CGM_BENCH_FIRST_GENERATION === "1";
const log = (m: string) => process.stderr.write(`[bench:planner] ${m}\n`);

async function startEmulator(): Promise<{ endpoint: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ["node_modules/.bin/ebs-emulator"], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, CGM_EBS_PORT: "0", CGM_EBS_LATENCY_MS: String(latencyMs) },
  });
  const rl = createInterface({ input: child.stdout! });
  const line = await new Promise<string>((resolve, reject) => {
    rl.once("line", resolve);
    child.once("exit", (code) =>
      reject(new Error(`the EBS emulator exited with ${code} before it listened`)),
    );
  });
  rl.close();
  return { endpoint: (JSON.parse(line) as { endpoint: string }).endpoint, child };
}

/** CPU seconds (user + system) of another process, from /proc (Linux); 0 elsewhere. */
function procCpuSeconds(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

async function main(): Promise<void> {
  const loadStart = loadavg()[0]!;
  const s3server = await startS3Server({ log });
  const emulator = await startEmulator();
  const admin = ebsAdmin(emulator.endpoint);
  const s3 = new S3Client({
    endpoint: s3server.endpoint,
    region: s3server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3server.accessKeyId, secretAccessKey: s3server.secretAccessKey },
  });
  const ebs = createEbsClient({
    endpoint: emulator.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "AKIDBENCH", secretAccessKey: "x" },
  });
  try {
    const bucket = "cgm-bench-planner";
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const base = firstGeneration
      ? undefined
      : await admin.createSyntheticSnapshot({
          volumeSizeGiB: volumeGiB,
          seed: "bench-planner",
          writtenFraction: 0.5,
        });
    const snap = base
      ? await admin.createSyntheticSnapshot({ parentSnapshotId: base.snapshotId, changedFraction })
      : await admin.createSyntheticSnapshot({
          volumeSizeGiB: volumeGiB,
          seed: "bench-planner",
          writtenFraction: changedFraction,
        });

    // Shard-list bytes written, counted on the way to S3.
    const inner = new S3ObjectStore({ client: s3, bucket });
    let shardListBytes = 0;
    const store: ObjectStore = Object.assign(Object.create(inner) as ObjectStore, {
      put: (k: string, b: Uint8Array, o?: Parameters<ObjectStore["put"]>[2]) => {
        if (k.endsWith(".blocks")) shardListBytes += b.byteLength;
        return inner.put(k, b, o);
      },
    });
    const repo = createRepo({ store, prefix: "bench", group: "bench" });

    // Heap sampled on a timer and after every listing page.
    global.gc?.();
    const heapBefore = process.memoryUsage().heapUsed;
    const rssBefore = process.memoryUsage().rss;
    let peakHeap = heapBefore;
    const sample = () => {
      const h = process.memoryUsage().heapUsed;
      if (h > peakHeap) peakHeap = h;
    };
    const timer = setInterval(sample, 50);
    const ebsSource = new EbsBlockSource(ebs);
    let pages = 0;
    /** Peak heap growth after each page: flat once the pipeline is full, if nothing accumulates. */
    const peakByPage: number[] = [];
    const source: BlockSource = {
      async listBlocks(r: ListBlocksRequest): Promise<ListBlocksPage> {
        const page = await ebsSource.listBlocks(r);
        pages++;
        sample();
        peakByPage.push(peakHeap - heapBefore);
        if (pages % 50 === 0)
          log(`${pages} pages, heap ${((peakHeap - heapBefore) / MiB).toFixed(1)} MiB peak growth`);
        return page;
      },
      getBlock: (r: GetBlockRequest) => ebsSource.getBlock(r),
    };
    const stats0 = await admin.stats();
    const emu0 = procCpuSeconds(emulator.child.pid);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const plan = await planVolume(
      { repo, source },
      {
        runId: "bench-plan",
        volumeId: "vol-16t",
        snapshotId: snap.snapshotId,
        baseSnapshotId: base?.snapshotId ?? null,
      },
    );
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    clearInterval(timer);
    sample();
    const stats1 = await admin.stats();
    const listOp = base ? "ListChangedBlocks" : "ListSnapshotBlocks";
    const round = (v: number, d = 2) => Number(v.toFixed(d));
    const growthMb = (peakHeap - heapBefore) / MiB;
    const out = {
      bench: "planner",
      volume_gib: volumeGiB,
      volume_blocks: volumeGiB * 2048,
      first_generation: firstGeneration,
      changed_fraction: changedFraction,
      latency_ms: latencyMs,
      changed_blocks: plan.totals.changedBlocks,
      absent_blocks: plan.totals.absentBlocks,
      shards: plan.totals.shards,
      list_calls: plan.totals.listPages,
      empty_pages: plan.totals.emptyPages,
      emulator_list_calls: stats1.requests[listOp] - stats0.requests[listOp],
      seconds: round(seconds, 1),
      ms_per_list_call: round((seconds * 1000) / plan.totals.listPages, 1),
      planner_cpu_s: round((cpu.user + cpu.system) / 1e6, 2),
      emulator_cpu_s: round(procCpuSeconds(emulator.child.pid) - emu0, 2),
      shard_list_bytes: shardListBytes,
      shard_index_inline: plan.shards !== null,
      peak_heap_growth_mb: round(growthMb, 1),
      peak_heap_growth_at_half_mb: round((peakByPage[Math.floor(peakByPage.length / 2)] ?? 0) / MiB, 1),
      bytes_per_changed_block_heap: round(
        (peakHeap - heapBefore) / Math.max(1, plan.totals.changedBlocks),
        2,
      ),
      rss_before_mb: Math.round(rssBefore / MiB),
      peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
      load_avg_start: round(loadStart),
      load_avg_end: round(loadavg()[0]!),
      node: process.version,
    };
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    ebs.destroy();
    s3.destroy();
    emulator.child.kill("SIGTERM");
    await s3server.stop();
  }
}

await main();
