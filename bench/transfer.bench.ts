/**
 * `npm run bench:transfer` — the transfer worker against what the machine can feed. Prints ONE JSON line.
 *
 * Set-up in one run: the local S3 server (Versity, own process), the EBS emulator (own process, so
 * its CPU is not counted as the worker's) with 20 ms latency per request, a synthetic changed set of
 * 8 GiB (ListChangedBlocks between two synthetic snapshots, 30 % of blocks compressible ≈ 4:1).
 * Phases:
 *   default    worker at default settings (zstd), the whole set as one shard, as an operator runs it
 *              → default_mib_s, default_cpu_s_per_gib, peak_rss_mb (process maxRSS after this phase;
 *                rss_before_mb: the process before any transfer),
 *                s3_puts_per_gib, ebs_requests_per_gib, compression_ratio
 *   compare    five loops interleaved quarter by quarter (2 GiB each at 8 GiB), so that all see the
 *              same machine load; every loop keeps 64 requests in flight (the worker's maximum):
 *                raw       the worker without compression           → mib_s, cpu_s_per_gib
 *                zstd      the worker at default settings           → mib_s_compressed, cpu_s_per_gib_compressed
 *                baseline  GetSnapshotBlock (SDK) then PutObject of the raw block, nothing else
 *                                                                     → baseline_mib_s, ratio = raw / baseline
 *                floor     a bare keep-alive GET of each block into one buffer + one SHA-256: what
 *                          receiving and identifying a block costs here → floor_cpu_s_per_gib,
 *                          cpu_vs_floor = raw / floor, cpu_vs_floor_compressed = zstd / floor
 *                floor_lean the same GET + SHA-256 over the worker's own HTTP client (adapters/http1-get.ts,
 *                          no allocation per socket read) → floor_lean_cpu_s_per_gib, cpu_vs_floor_lean,
 *                          cpu_vs_floor_lean_compressed
 *   quota      the emulator enforces a per-snapshot GetSnapshotBlock quota of CGM_BENCH_QUOTA_FRACTION
 *              (0.5) × the baseline's block rate measured above, on a 2 GiB set: a quota this machine can
 *              feed even when loaded → quota_rps, quota_utilization, throttled_fraction
 *   fixedquota the same at a fixed 200 requests/s (what the machine may not feed when loaded)
 *              → fixed_quota_utilization, fixed_throttled_fraction
 *   lowquota   the same at 50 requests/s on a 1 GiB set → low_quota_utilization, low_throttled_fraction
 *   shared4    four workers (four shards of one snapshot, each its own client and AIMD controller)
 *              sharing the `quota` rate over real HTTP → shared4_quota_utilization, shared4_throttled_fraction
 *   sim4       no I/O: four workers' AIMD limiters sharing one 200 requests/s token bucket (the emulator's
 *              TokenBucket, 20 ms simulated latency) → sim4_quota_utilization, sim4_throttled_fraction
 * CPU is process CPU (user + system) per GiB moved; the emulator's and the S3 server's CPU are read
 * from /proc and reported separately. load_avg_start / load_avg_end: the 1-minute load average.
 * Environment: CGM_BENCH_GIB (default 8), CGM_BENCH_QUOTA_GIB (2), CGM_BENCH_LATENCY_MS (20),
 * CGM_BENCH_QUOTA_FRACTION (0.5), CGM_BENCH_QUOTA_RPS (overrides the measured quota),
 * CGM_BENCH_FIXED_QUOTA_RPS (200), CGM_BENCH_LOW_QUOTA_RPS (50),
 * CGM_BENCH_PHASES (comma list, default all), CGM_BENCH_COMPRESSION (the default phase's compression;
 * with CGM_BENCH_PHASES=default and `node --cpu-prof` it profiles the worker alone).
 * The bench re-executes itself with MALLOC_MMAP_THRESHOLD_=131072 (as the transfer Lambda runs)
 * unless that variable is set; set it yourself to keep node flags such as --cpu-prof.
 * Memory: during the default phase the bench samples process.memoryUsage() and V8's heap spaces every
 * 100 ms and logs (stderr) the sample at the highest RSS and each figure's maximum, and the block
 * buffers the pool allocated; with CGM_BENCH_GC_PROBE=1 and NODE_OPTIONS=--expose-gc it also forces a
 * full GC every 5 s and logs arrayBuffers before → after (garbage vs live external memory).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { Agent as HttpAgent, request as httpRequest } from "node:http";
import { availableParallelism, loadavg } from "node:os";
import { createInterface } from "node:readline";
import { getHeapSpaceStatistics } from "node:v8";
import { GetSnapshotBlockCommand, ListChangedBlocksCommand } from "@aws-sdk/client-ebs";
import {
  CreateBucketCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { type EbsAdminClient, ebsAdmin, TokenBucket } from "@cgmirror/ebs-emulator";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import { createEbsClient, EbsBlockSource } from "#adapters/ebs-source.ts";
import { Http1Pool } from "#adapters/http1-get.ts";
import { usePrecomputedPayloadHash } from "#adapters/s3-payload-hash.ts";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { createRepo, type Repo } from "#core/format/layout.ts";
import type { ObjectStore } from "#core/ports/object-store.ts";
import { AimdLimiter, backoffMs } from "#core/transfer/aimd.ts";
import { planVolume, type ShardDescriptor } from "#core/transfer/planner.ts";
import {
  type ShardResultSummary,
  type TransferOptions,
  type TransferProgress,
  transferShard,
} from "#core/transfer/worker.ts";
import { startS3Server } from "#local/s3-server/server.ts";

// Large block buffers come and go by the thousand; with glibc's dynamic mmap threshold they end up
// in heap arenas that never shrink, inflating RSS by ~100 MB. The transfer Lambda sets
// MALLOC_MMAP_THRESHOLD_=131072 (docs/transfer.md); the bench measures that configuration.
if (process.env.MALLOC_MMAP_THRESHOLD_ === undefined && process.platform === "linux") {
  const { spawnSync } = await import("node:child_process");
  const child = spawnSync(process.execPath, process.argv.slice(1), {
    stdio: "inherit",
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: "131072" },
  });
  process.exit(child.status ?? 1);
}

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const gib = Number(process.env.CGM_BENCH_GIB ?? 8);
const quotaGib = Number(process.env.CGM_BENCH_QUOTA_GIB ?? 2);
const latencyMs = Number(process.env.CGM_BENCH_LATENCY_MS ?? 20);
const quotaFraction = Number(process.env.CGM_BENCH_QUOTA_FRACTION ?? 0.5);
const fixedQuotaRps = Number(process.env.CGM_BENCH_FIXED_QUOTA_RPS ?? 200);
const lowQuotaRps = Number(process.env.CGM_BENCH_LOW_QUOTA_RPS ?? 50);
/** The default phase's worker options (profiling the worker alone: CGM_BENCH_COMPRESSION=none). */
const defaultOptions: TransferOptions = process.env.CGM_BENCH_COMPRESSION
  ? { compression: process.env.CGM_BENCH_COMPRESSION as TransferOptions["compression"] & string }
  : {};
const phases = new Set(
  (process.env.CGM_BENCH_PHASES ?? "default,compare,quota,fixedquota,lowquota,shared4,sim4").split(","),
);
/** The worker's default maxConcurrency; the baseline and floor loops run this many requests in flight. */
const CONCURRENCY = 64;
const log = (m: string) => process.stderr.write(`[bench:transfer] ${m}\n`);

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

/** Counts PUT-class requests (PUT, multipart create/part/complete) going through a store. */
function counting(store: ObjectStore): { store: ObjectStore; puts: () => number } {
  let puts = 0;
  return {
    puts: () => puts,
    store: {
      get: (k, o) => store.get(k, o),
      head: (k, o) => store.head(k, o),
      delete: (k, o) => store.delete(k, o),
      deleteVersions: (v) => store.deleteVersions(v),
      list: (p, o) => store.list(p, o),
      listVersions: (p) => store.listVersions(p),
      put: (k, b, o) => {
        puts++;
        return store.put(k, b, o);
      },
      createMultipartUpload: async (k, o) => {
        puts++;
        const u = await store.createMultipartUpload(k, o);
        return {
          key: u.key,
          uploadPart: (n, b) => {
            puts++;
            return u.uploadPart(n, b);
          },
          complete: () => {
            puts++;
            return u.complete();
          },
          abort: () => u.abort(),
        };
      },
    },
  };
}

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
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

/** Accumulates wall time and CPU (this process, the emulator, the S3 server) over start/stop spans. */
class Meter {
  seconds = 0;
  cpu = 0;
  user = 0;
  emulatorCpu = 0;
  s3Cpu = 0;
  #t = 0;
  #c = 0;
  #u = 0;
  #e = 0;
  #s = 0;
  readonly #pids: { emulator: number | undefined; s3: number };
  constructor(pids: { emulator: number | undefined; s3: number }) {
    this.#pids = pids;
  }
  start(): void {
    this.#t = performance.now();
    this.#c = cpuSeconds();
    this.#u = process.cpuUsage().user / 1e6;
    this.#e = procCpuSeconds(this.#pids.emulator);
    this.#s = procCpuSeconds(this.#pids.s3);
  }
  stop(): void {
    this.seconds += (performance.now() - this.#t) / 1000;
    this.cpu += cpuSeconds() - this.#c;
    this.user += process.cpuUsage().user / 1e6 - this.#u;
    this.emulatorCpu += procCpuSeconds(this.#pids.emulator) - this.#e;
    this.s3Cpu += procCpuSeconds(this.#pids.s3) - this.#s;
  }
}

interface PhaseResult {
  readonly seconds: number;
  /** From the first to the last block read (quota utilization is measured over this window). */
  readonly readSeconds?: number;
  readonly cpu: number;
  /** CPU seconds of the EBS emulator and of the S3 server during the phase. */
  readonly emulatorCpu: number;
  readonly s3Cpu: number;
  readonly userCpu: number;
  readonly bytes: number;
  readonly blocks: number;
  readonly puts: number;
  readonly ebs: number;
  readonly throttled: number;
  readonly gets: number;
  readonly failedShards: number;
  readonly maxInFlight: number;
  readonly storedBytes: number;
}

/**
 * Samples process.memoryUsage() and V8's heap spaces every 100 ms until `stop`, which returns the
 * sample with the highest RSS and the maximum of each figure (MiB): where the peak RSS is.
 */
function sampleMemory(): { stop(): Record<string, unknown> } {
  const mb = (v: number) => Math.round((v / MiB) * 10) / 10;
  const sample = () => {
    const m = process.memoryUsage();
    const spaces: Record<string, number> = {};
    for (const s of getHeapSpaceStatistics()) {
      if (s.space_size > 0) spaces[s.space_name] = mb(s.space_size);
    }
    return {
      rss: mb(m.rss),
      heapTotal: mb(m.heapTotal),
      heapUsed: mb(m.heapUsed),
      external: mb(m.external),
      arrayBuffers: mb(m.arrayBuffers),
      ...spaces,
    };
  };
  let atPeak = sample();
  const max: Record<string, number> = { ...atPeak };
  const probe = process.env.CGM_BENCH_GC_PROBE === "1" ? (globalThis as { gc?: () => void }).gc : undefined;
  let ticks = 0;
  const timer = setInterval(() => {
    if (probe && ++ticks % 50 === 0) {
      const before = process.memoryUsage();
      probe();
      const after = process.memoryUsage();
      log(
        `gc probe: arrayBuffers ${mb(before.arrayBuffers)} -> ${mb(after.arrayBuffers)}, heapUsed ${mb(before.heapUsed)} -> ${mb(after.heapUsed)}, rss ${mb(before.rss)}`,
      );
    }
    const s = sample();
    if (s.rss > atPeak.rss) atPeak = s;
    for (const [k, v] of Object.entries(s)) max[k] = Math.max(max[k] ?? 0, v as number);
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      return { atPeakRss: atPeak, max, maxRSS: mb(process.resourceUsage().maxRSS * 1024) };
    },
  };
}

/** N AIMD limiters sharing one token bucket of `rps` (burst 1 s), each sending `each` requests. */
async function simulateSharedQuota(rps: number, workers: number, each: number, latency: number) {
  const bucket = new TokenBucket(rps, rps, performance.now());
  let ok = 0;
  let throttled = 0;
  const t0 = performance.now();
  const worker = async () => {
    const limiter = new AimdLimiter({ initialRate: 100, maxRate: 1000, maxConcurrency: 64 });
    const tasks: Promise<void>[] = [];
    for (let i = 0; i < each; i++) {
      await limiter.acquire();
      tasks.push(
        (async () => {
          for (let attempt = 1; ; attempt++) {
            if (attempt > 1) await limiter.acquire();
            const started = performance.now();
            const granted = bucket.tryTake(started);
            await new Promise((r) => setTimeout(r, latency));
            if (granted) {
              ok++;
              limiter.release("ok", performance.now() - started);
              return;
            }
            throttled++;
            limiter.release("throttled", performance.now() - started);
            await new Promise((r) => setTimeout(r, backoffMs(attempt)));
          }
        })(),
      );
    }
    await Promise.all(tasks);
    limiter.close();
  };
  await Promise.all(Array.from({ length: workers }, worker));
  const seconds = (performance.now() - t0) / 1000;
  return { utilization: ok / seconds / rps, throttledFraction: throttled / (ok + throttled) };
}

/** Sums phase results (the compare loops run quarter by quarter). */
function addPhase(a: PhaseResult | undefined, b: PhaseResult): PhaseResult {
  if (!a) return b;
  return {
    seconds: a.seconds + b.seconds,
    readSeconds: (a.readSeconds ?? 0) + (b.readSeconds ?? 0),
    cpu: a.cpu + b.cpu,
    emulatorCpu: a.emulatorCpu + b.emulatorCpu,
    s3Cpu: a.s3Cpu + b.s3Cpu,
    userCpu: a.userCpu + b.userCpu,
    bytes: a.bytes + b.bytes,
    blocks: a.blocks + b.blocks,
    puts: a.puts + b.puts,
    ebs: a.ebs + b.ebs,
    throttled: a.throttled + b.throttled,
    gets: a.gets + b.gets,
    failedShards: a.failedShards + b.failedShards,
    maxInFlight: Math.max(a.maxInFlight, b.maxInFlight),
    storedBytes: a.storedBytes + b.storedBytes,
  };
}

interface SnapshotPair {
  readonly base: string;
  readonly snap: string;
}

interface BlockToken {
  readonly index: number;
  readonly token: string;
}

async function main(): Promise<void> {
  const loadStart = loadavg()[0]!;
  const s3server = await startS3Server({ log });
  const emulator = await startEmulator();
  const admin: EbsAdminClient = ebsAdmin(emulator.endpoint);
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 256 });
  const s3 = new S3Client({
    endpoint: s3server.endpoint,
    region: s3server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3server.accessKeyId, secretAccessKey: s3server.secretAccessKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    requestHandler: new NodeHttpHandler({
      httpAgent: agent,
      connectionTimeout: 5000,
      requestTimeout: 120_000,
    }),
  });
  const ebsOptions = {
    endpoint: emulator.endpoint,
    region: "us-east-1",
    maxSockets: 256,
    credentials: { accessKeyId: "AKIDBENCH", secretAccessKey: "x" },
  };
  const ebs = createEbsClient(ebsOptions);
  const extraClients: { destroy(): void }[] = [];
  /** The floor loop's own keep-alive agent: a bare HTTP client, nothing of the SDK. */
  const floorAgent = new HttpAgent({ keepAlive: true, maxSockets: CONCURRENCY, scheduling: "lifo" });
  /** The lean floor's connections (adapters/http1-get.ts), as many as the loops. */
  const emulatorUrl = new URL(emulator.endpoint);
  const leanFloorPool = new Http1Pool(
    { https: false, hostname: emulatorUrl.hostname, port: Number(emulatorUrl.port) },
    { maxSockets: CONCURRENCY, connectionTimeoutMs: 5000 },
  );
  const bucket = "cgm-bench-transfer";
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await s3.send(
      new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: "Enabled" } }),
    );
    /** A synthetic changed set: every block of a `size` GiB volume rewritten in the child snapshot. */
    const changedSet = async (
      size: number,
      seed: string,
      compressibleFraction = 0,
    ): Promise<SnapshotPair> => {
      const root = await admin.createSyntheticSnapshot({ volumeSizeGiB: size, seed, writtenFraction: 0.5 });
      const child = await admin.createSyntheticSnapshot({
        parentSnapshotId: root.snapshotId,
        changedFraction: 1,
        compressibleFraction,
      });
      return { base: root.snapshotId, snap: child.snapshotId };
    };
    const mainSet = await changedSet(gib, "bench-transfer", 0.3);
    const s3store = new S3ObjectStore({ client: usePrecomputedPayloadHash(s3), bucket });
    const pids = { emulator: emulator.child.pid, s3: s3server.pid };

    interface PlannedRun {
      readonly name: string;
      readonly repo: Repo;
      readonly puts: () => number;
      readonly shards: readonly ShardDescriptor[];
      readonly listPages: number;
    }
    const planRun = async (name: string, pair: SnapshotPair, shardBlocks?: number): Promise<PlannedRun> => {
      const c = counting(s3store);
      const repo: Repo = createRepo({ store: c.store, prefix: `bench/${name}`, group: "bench" });
      const plan = await planVolume(
        { repo, source: new EbsBlockSource(ebs) },
        {
          runId: name,
          volumeId: "vol-bench",
          snapshotId: pair.snap,
          baseSnapshotId: pair.base,
          ...(shardBlocks ? { shardBlocks } : {}),
        },
      );
      return { name, repo, puts: c.puts, shards: plan.shards!, listPages: plan.totals.listPages };
    };

    /**
     * Runs shards of a planned run (in parallel when several are given and `parallel`), each with its own
     * EBS client (as separate Lambda workers have), and measures them.
     */
    const poolStats: (() => number)[] = [];
    const runShards = async (
      run: PlannedRun,
      shards: readonly ShardDescriptor[],
      options: TransferOptions,
      parallel = false,
    ): Promise<PhaseResult> => {
      const meter = new Meter(pids);
      let readFirst: number | undefined;
      let readLast = 0;
      let readSeconds = 0;
      const one = async (shard: ShardDescriptor): Promise<ShardResultSummary | undefined> => {
        const client = createEbsClient(ebsOptions);
        extraClients.push(client);
        const source = new EbsBlockSource(client);
        poolStats.push(() => source.pool.allocated);
        const onProgress = (p: TransferProgress) => {
          if (p.state !== "running") return;
          const now = performance.now();
          readFirst ??= now;
          readLast = now;
        };
        try {
          return await transferShard(
            { repo: run.repo, source, onProgress },
            { runId: run.name, shard, options },
          );
        } catch (error) {
          log(
            `${run.name}: shard ${shard.shard} failed: ${(error as Error).name}: ${(error as Error).message}`,
          );
          return undefined;
        } finally {
          client.destroy();
        }
      };
      const s0 = await admin.stats();
      const puts0 = run.puts();
      const results: (ShardResultSummary | undefined)[] = [];
      meter.start();
      if (parallel) {
        results.push(...(await Promise.all(shards.map(one))));
        if (readFirst !== undefined) readSeconds = (readLast - readFirst) / 1000;
      } else {
        for (const shard of shards) {
          readFirst = undefined;
          results.push(await one(shard));
          if (readFirst !== undefined) readSeconds += (readLast - readFirst) / 1000;
        }
      }
      meter.stop();
      const s1 = await admin.stats();
      const ok = results.filter((r): r is ShardResultSummary => r !== undefined);
      const blocks = ok.reduce((a, r) => a + r.stats.blocks - r.stats.absentBlocks, 0);
      return {
        seconds: meter.seconds,
        readSeconds,
        cpu: meter.cpu,
        emulatorCpu: meter.emulatorCpu,
        s3Cpu: meter.s3Cpu,
        userCpu: meter.user,
        bytes: blocks * BLOCK_SIZE,
        blocks,
        puts: run.puts() - puts0,
        ebs: ok.reduce((a, r) => a + r.stats.getRequests + r.stats.listRequests, 0),
        throttled: s1.throttled - s0.throttled,
        gets: s1.requests.GetSnapshotBlock - s0.requests.GetSnapshotBlock,
        failedShards: results.length - ok.length,
        maxInFlight: Math.max(0, ...ok.map((x) => x.stats.maxInFlight)),
        storedBytes: ok.reduce((a, x) => a + x.stats.storedBytes, 0),
      };
    };
    const logPhase = (name: string, r: PhaseResult) =>
      log(
        `${name}: ${JSON.stringify({ ...r, mib_s: r.bytes / MiB / r.seconds, rss_mb: process.memoryUsage().rss / MiB })}`,
      );

    /** The tokens of the changed blocks in [first, end) (listed before a loop starts; not timed). */
    const listTokens = async (pair: SnapshotPair, first: number, end: number): Promise<BlockToken[]> => {
      const tokens: BlockToken[] = [];
      let next: string | undefined;
      let done = false;
      do {
        const page = await ebs.send(
          new ListChangedBlocksCommand({
            FirstSnapshotId: pair.base,
            SecondSnapshotId: pair.snap,
            MaxResults: 10_000,
            ...(next ? { NextToken: next } : { StartingBlockIndex: first }),
          }),
        );
        for (const b of page.ChangedBlocks ?? []) {
          if (b.BlockIndex! >= end) done = true;
          else if (b.SecondBlockToken) tokens.push({ index: b.BlockIndex!, token: b.SecondBlockToken });
        }
        next = page.NextToken;
      } while (next && !done);
      return tokens;
    };

    /** Runs `each` over the tokens with CONCURRENCY loops in flight and measures it. */
    const runLoops = async (
      tokens: readonly BlockToken[],
      each: (item: BlockToken, slot: number) => Promise<void>,
    ): Promise<PhaseResult> => {
      const meter = new Meter(pids);
      let at = 0;
      const loop = async (slot: number) => {
        for (;;) {
          const item = tokens[at++];
          if (!item) return;
          for (let attempt = 1; ; attempt++) {
            try {
              await each(item, slot);
              break;
            } catch (error) {
              if (attempt >= 5) throw error;
            }
          }
        }
      };
      meter.start();
      await Promise.all(Array.from({ length: CONCURRENCY }, (_, slot) => loop(slot)));
      meter.stop();
      const n = tokens.length;
      return {
        seconds: meter.seconds,
        cpu: meter.cpu,
        emulatorCpu: meter.emulatorCpu,
        s3Cpu: meter.s3Cpu,
        userCpu: meter.user,
        bytes: n * BLOCK_SIZE,
        blocks: n,
        puts: 0,
        ebs: n,
        throttled: 0,
        gets: n,
        failedShards: 0,
        maxInFlight: CONCURRENCY,
        storedBytes: n * BLOCK_SIZE,
      };
    };

    /** GetSnapshotBlock (SDK) then PutObject of the raw block: the minimal loop of a copy to S3. */
    const baselineLoop = (pair: SnapshotPair, tokens: readonly BlockToken[]) =>
      runLoops(tokens, async (item) => {
        const got = await ebs.send(
          new GetSnapshotBlockCommand({
            SnapshotId: pair.snap,
            BlockIndex: item.index,
            BlockToken: item.token,
          }),
        );
        const body = await got.BlockData!.transformToByteArray();
        await s3.send(
          new PutObjectCommand({
            Bucket: bucket,
            Key: `baseline/${item.index}`,
            Body: body,
            ContentLength: body.byteLength,
          }),
        );
      });

    /**
     * The floor: a bare keep-alive GET of each block (node:http, no SDK, no signing) into one buffer per
     * loop, then one SHA-256 of it — receiving and identifying a block, nothing else.
     */
    const endpointUrl = new URL(emulator.endpoint);
    const floorBuffers = Array.from({ length: CONCURRENCY }, () => Buffer.allocUnsafeSlow(BLOCK_SIZE));
    const floorLoop = (pair: SnapshotPair, tokens: readonly BlockToken[]) =>
      runLoops(
        tokens,
        (item, slot) =>
          new Promise<void>((resolve, reject) => {
            const out = floorBuffers[slot]!;
            const req = httpRequest(
              {
                hostname: endpointUrl.hostname,
                port: endpointUrl.port,
                path: `/snapshots/${pair.snap}/blocks/${item.index}?blockToken=${encodeURIComponent(item.token)}`,
                agent: floorAgent,
              },
              (res) => {
                let at = 0;
                res.on("data", (chunk: Buffer) => {
                  chunk.copy(out, at);
                  at += chunk.byteLength;
                });
                res.on("end", () => {
                  if (res.statusCode !== 200 || at !== BLOCK_SIZE) {
                    reject(new Error(`floor GET of block ${item.index}: ${res.statusCode}, ${at} bytes`));
                    return;
                  }
                  const sha = createHash("sha256").update(out).digest("base64");
                  if (sha !== res.headers["x-amz-checksum"])
                    reject(new Error(`floor: block ${item.index} checksum`));
                  else resolve();
                });
                res.on("error", reject);
              },
            );
            req.on("error", reject);
            req.end();
          }),
      );

    /**
     * The same floor over the worker's HTTP client (adapters/http1-get.ts: one reused read buffer per
     * connection, no allocation per socket read) instead of node:http: receiving and identifying a
     * block as cheaply as this process knows how.
     */
    const leanFloorLoop = (pair: SnapshotPair, tokens: readonly BlockToken[]) =>
      runLoops(tokens, async (item, slot) => {
        const out = floorBuffers[slot]!;
        let at = 0;
        let status = 0;
        let checksum: string | undefined;
        await leanFloorPool.get(
          `/snapshots/${pair.snap}/blocks/${item.index}?blockToken=${encodeURIComponent(item.token)}`,
          { host: endpointUrl.host },
          (head) => {
            status = head.status;
            checksum = head.headers["x-amz-checksum"];
            return {
              write: (view) => {
                if (at + view.byteLength > BLOCK_SIZE) return new Error("floor: body too long");
                view.copy(out, at);
                at += view.byteLength;
                return undefined;
              },
              end: () => undefined,
            };
          },
          { timeoutMs: 120_000, timeoutError: () => new Error("floor: timeout") },
        );
        if (status !== 200 || at !== BLOCK_SIZE) {
          throw new Error(`lean floor GET of block ${item.index}: ${status}, ${at} bytes`);
        }
        if (createHash("sha256").update(out).digest("base64") !== checksum) {
          throw new Error(`lean floor: block ${item.index} checksum`);
        }
      });

    let def: PhaseResult | undefined;
    let defListPages = 0;
    let peakRssMb: number | undefined;
    /** The process before any transfer: Node, the SDKs, the bench (the worker's memory is on top). */
    const rssBeforeMb = Math.round(process.memoryUsage().rss / MiB);
    {
      const m = process.memoryUsage();
      log(
        `memory before any transfer: ${JSON.stringify({ rss: m.rss / MiB, heapTotal: m.heapTotal / MiB, heapUsed: m.heapUsed / MiB, external: m.external / MiB, arrayBuffers: m.arrayBuffers / MiB })}`,
      );
    }
    if (phases.has("default")) {
      const run = await planRun("default", mainSet);
      defListPages = run.listPages;
      const sampler = sampleMemory();
      def = await runShards(run, run.shards, defaultOptions);
      log(`memory during default (sampled every 100 ms): ${JSON.stringify(sampler.stop())}`);
      log(`block buffers allocated by the pool: ${poolStats.map((f) => f()).join(", ")}`);
      logPhase("default", def);
      peakRssMb = Math.round(process.resourceUsage().maxRSS / 1024);
      const m = process.memoryUsage();
      log(
        `memory after default: ${JSON.stringify({ rss: m.rss / MiB, heapUsed: m.heapUsed / MiB, external: m.external / MiB, arrayBuffers: m.arrayBuffers / MiB, maxRSS: peakRssMb })}`,
      );
    }

    // compare: raw, zstd, baseline and floor quarter by quarter, so that all four see the same load.
    let raw: PhaseResult | undefined;
    let zstd: PhaseResult | undefined;
    let base: PhaseResult | undefined;
    let floor: PhaseResult | undefined;
    let leanFloor: PhaseResult | undefined;
    if (phases.has("compare")) {
      const quarter = Math.ceil((gib * 2048) / 4);
      const rawRun = await planRun("raw", mainSet, quarter);
      const zstdRun = await planRun("zstd", mainSet, quarter);
      for (let q = 0; q < rawRun.shards.length; q++) {
        const shard = rawRun.shards[q]!;
        const tokens = await listTokens(mainSet, shard.first, shard.end);
        raw = addPhase(raw, await runShards(rawRun, [shard], { compression: "none" }));
        zstd = addPhase(zstd, await runShards(zstdRun, [zstdRun.shards[q]!], {}));
        base = addPhase(base, await baselineLoop(mainSet, tokens));
        floor = addPhase(floor, await floorLoop(mainSet, tokens));
        leanFloor = addPhase(leanFloor, await leanFloorLoop(mainSet, tokens));
        log(`compare: quarter ${q + 1}/${rawRun.shards.length} done, load ${loadavg()[0]!.toFixed(2)}`);
      }
      for (const [n, r] of [
        ["raw", raw],
        ["zstd", zstd],
        ["baseline", base],
        ["floor", floor],
        ["floor_lean", leanFloor],
      ] as const)
        if (r) logPhase(n, r);
    }

    // quota: a per-snapshot quota of a fraction of the rate this machine fed the baseline loop.
    const baselineRps = base ? base.blocks / base.seconds : undefined;
    const quotaRps = process.env.CGM_BENCH_QUOTA_RPS
      ? Number(process.env.CGM_BENCH_QUOTA_RPS)
      : baselineRps
        ? Math.max(10, Math.round(quotaFraction * baselineRps))
        : fixedQuotaRps;
    const quotaPhase = async (name: string, rps: number, size: number, workers = 1) => {
      const pair = await changedSet(size, `bench-${name}`);
      const run = await planRun(name, pair, workers > 1 ? Math.ceil((size * 2048) / workers) : undefined);
      await admin.setFaults({ dataPlaneRpsPerSnapshot: rps });
      try {
        const r = await runShards(run, run.shards, { compression: "none" }, workers > 1);
        logPhase(name, r);
        return r;
      } finally {
        await admin.setFaults({ dataPlaneRpsPerSnapshot: 0 });
      }
    };
    const quota = phases.has("quota") ? await quotaPhase("quota", quotaRps, quotaGib) : undefined;
    const fixed = phases.has("fixedquota")
      ? await quotaPhase("fixedquota", fixedQuotaRps, quotaGib)
      : undefined;
    const low = phases.has("lowquota") ? await quotaPhase("lowquota", lowQuotaRps, 1) : undefined;
    const shared = phases.has("shared4") ? await quotaPhase("shared4", quotaRps, quotaGib, 4) : undefined;

    const sim = phases.has("sim4") ? await simulateSharedQuota(fixedQuotaRps, 4, 2000, latencyMs) : undefined;
    if (sim) log(`sim4: ${JSON.stringify(sim)}`);

    const mibs = (r?: PhaseResult) => (r ? r.bytes / MiB / r.seconds : null);
    const perGib = (v: number, r: PhaseResult) => v / (r.bytes / GiB);
    const round = (v: number | null | undefined, d = 2) =>
      v === null || v === undefined || !Number.isFinite(v) ? null : Number(v.toFixed(d));
    const utilization = (r: PhaseResult | undefined, rps: number) =>
      r ? round(r.blocks / (r.readSeconds || r.seconds) / rps, 3) : null;
    const throttledFraction = (r: PhaseResult | undefined) =>
      r ? round(r.throttled / Math.max(1, r.gets), 4) : null;
    const floorCpu = floor ? perGib(floor.cpu, floor) : undefined;
    const leanFloorCpu = leanFloor ? perGib(leanFloor.cpu, leanFloor) : undefined;
    const out = {
      bench: "transfer",
      changed_gib: gib,
      latency_ms: latencyMs,
      concurrency: CONCURRENCY,
      mib_s: round(mibs(raw), 1),
      baseline_mib_s: round(mibs(base), 1),
      ratio: raw && base ? round(mibs(raw)! / mibs(base)!, 3) : null,
      mib_s_compressed: round(mibs(zstd), 1),
      floor_mib_s: round(mibs(floor), 1),
      cpu_s_per_gib: raw ? round(perGib(raw.cpu, raw), 3) : null,
      cpu_s_per_gib_compressed: zstd ? round(perGib(zstd.cpu, zstd), 3) : null,
      baseline_cpu_s_per_gib: base ? round(perGib(base.cpu, base), 3) : null,
      floor_cpu_s_per_gib: floorCpu !== undefined ? round(floorCpu, 3) : null,
      cpu_vs_floor: raw && floorCpu ? round(perGib(raw.cpu, raw) / floorCpu, 3) : null,
      cpu_vs_floor_compressed: zstd && floorCpu ? round(perGib(zstd.cpu, zstd) / floorCpu, 3) : null,
      floor_lean_cpu_s_per_gib: leanFloorCpu !== undefined ? round(leanFloorCpu, 3) : null,
      cpu_vs_floor_lean: raw && leanFloorCpu ? round(perGib(raw.cpu, raw) / leanFloorCpu, 3) : null,
      cpu_vs_floor_lean_compressed:
        zstd && leanFloorCpu ? round(perGib(zstd.cpu, zstd) / leanFloorCpu, 3) : null,
      quota_rps: quota || shared ? quotaRps : null,
      quota_basis: process.env.CGM_BENCH_QUOTA_RPS
        ? "CGM_BENCH_QUOTA_RPS"
        : baselineRps
          ? `${quotaFraction} x baseline ${baselineRps.toFixed(1)} blocks/s`
          : "fixed (no baseline measured)",
      quota_utilization: utilization(quota, quotaRps),
      throttled_fraction: throttledFraction(quota),
      fixed_quota_rps: fixed ? fixedQuotaRps : null,
      fixed_quota_utilization: utilization(fixed, fixedQuotaRps),
      fixed_throttled_fraction: throttledFraction(fixed),
      low_quota_rps: low ? lowQuotaRps : null,
      low_quota_utilization: utilization(low, lowQuotaRps),
      low_throttled_fraction: throttledFraction(low),
      shared4_quota_utilization: utilization(shared, quotaRps),
      shared4_throttled_fraction: throttledFraction(shared),
      sim4_quota_utilization: sim ? round(sim.utilization, 3) : null,
      sim4_throttled_fraction: sim ? round(sim.throttledFraction, 4) : null,
      failed_shards: [def, raw, zstd, quota, fixed, low, shared].reduce(
        (a, r) => a + (r?.failedShards ?? 0),
        0,
      ),
      default_mib_s: round(mibs(def), 1),
      default_cpu_s_per_gib: def ? round(perGib(def.cpu, def), 3) : null,
      compression_ratio: def ? round(def.bytes / Math.max(1, def.storedBytes), 3) : null,
      s3_puts_per_gib: def ? round(perGib(def.puts, def), 2) : null,
      ebs_requests_per_gib: def ? round(perGib(def.ebs + defListPages, def), 1) : null,
      peak_rss_mb: peakRssMb ?? null,
      rss_before_mb: rssBeforeMb,
      worker_user_cpu_s_per_gib: raw ? round(perGib(raw.userCpu, raw), 3) : null,
      emulator_cpu_s_per_gib: raw ? round(perGib(raw.emulatorCpu, raw), 3) : null,
      s3_server_cpu_s_per_gib: raw ? round(perGib(raw.s3Cpu, raw), 3) : null,
      load_avg_start: round(loadStart, 2),
      load_avg_end: round(loadavg()[0], 2),
      malloc_mmap_threshold: process.env.MALLOC_MMAP_THRESHOLD_ ?? null,
      cpus: availableParallelism(),
      node: process.version,
    };
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    for (const c of extraClients) c.destroy();
    floorAgent.destroy();
    leanFloorPool.close();
    ebs.destroy();
    s3.destroy();
    emulator.child.kill("SIGTERM");
    await s3server.stop();
  }
}

await main();
