/**
 * `npm run bench:transfer` — the transfer worker at the EBS direct API quota. Prints ONE JSON line.
 *
 * Set-up in one run: the local S3 server (Versity, own process), the EBS emulator (own process, so
 * its CPU is not counted as the worker's) with 20 ms latency per request, a synthetic changed set of
 * 8 GiB (ListChangedBlocks between two synthetic snapshots). Phases, each on the whole changed set:
 *   default    worker at default settings (zstd)            → mib_s_compressed, cpu_s_per_gib_compressed, peak_rss_mb
 *   (default also gives s3_puts_per_gib and ebs_requests_per_gib: what an operator gets)
 *   raw        worker without compression, in 4 shards     → mib_s, cpu_s_per_gib
 *   baseline   GetSnapshotBlock then PutObject of the raw block, 64 in flight (the worker's maximum
 *              concurrency), run on each raw shard's blocks right after that shard (interleaved, so
 *              both see the same machine load)         → baseline_mib_s, ratio
 *   quota      emulator enforcing 200 GetSnapshotBlock/s per snapshot; default planning (8 GiB is one
 *              shard of ≤ 30,000 blocks, so one worker) → quota_utilization, throttled_fraction, failed_shards
 *   lowquota   the same at 50 requests/s on a 1 GiB changed set: a quota this 2-core machine can
 *              certainly feed, so the controller is measured apart from the CPU bound
 *              → low_quota_utilization, low_throttled_fraction
 *   sim4       no I/O: 4 workers' AIMD limiters sharing one 200 requests/s token bucket (the emulator's
 *              TokenBucket, 20 ms simulated latency), as parallel shards of one snapshot do
 *              → sim4_quota_utilization, sim4_throttled_fraction
 * Environment: CGM_BENCH_GIB (default 8), CGM_BENCH_LATENCY_MS (20), CGM_BENCH_QUOTA_RPS (200),
 * CGM_BENCH_PHASES (comma list, default all).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { Agent as HttpAgent } from "node:http";
import { createInterface } from "node:readline";
import { GetSnapshotBlockCommand, ListChangedBlocksCommand } from "@aws-sdk/client-ebs";
import {
  CreateBucketCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import { createEbsClient, EbsBlockSource } from "#adapters/ebs-source.ts";
import { usePrecomputedPayloadHash } from "#adapters/s3-payload-hash.ts";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { AimdLimiter, backoffMs } from "#core/aimd.ts";
import { BLOCK_SIZE } from "#core/bytes.ts";
import { createRepo, type Repo } from "#core/layout.ts";
import { planVolume, type ShardDescriptor } from "#core/planner.ts";
import type { ObjectStore } from "#core/ports/object-store.ts";
import {
  type ShardResultSummary,
  type TransferOptions,
  type TransferProgress,
  transferShard,
} from "#core/transfer-worker.ts";
import { type EbsAdminClient, type EbsStats, ebsAdmin } from "#local/ebs-emulator/index.ts";
import { TokenBucket } from "#local/ebs-emulator/token-bucket.ts";
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
const latencyMs = Number(process.env.CGM_BENCH_LATENCY_MS ?? 20);
const quotaRps = Number(process.env.CGM_BENCH_QUOTA_RPS ?? 200);
const lowQuotaRps = Number(process.env.CGM_BENCH_LOW_QUOTA_RPS ?? 50);
const phases = new Set(
  (process.env.CGM_BENCH_PHASES ?? "default,raw,baseline,quota,lowquota,sim4").split(","),
);
/** The worker's default maxConcurrency; the baseline loop runs this many requests in flight. */
const BASELINE_CONCURRENCY = 64;
const log = (m: string) => process.stderr.write(`[bench:transfer] ${m}\n`);

async function startEmulator(): Promise<{ endpoint: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ["local/ebs-emulator/main.ts"], {
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

function ebsRequests(s: EbsStats): number {
  return Object.values(s.requests).reduce((a, b) => a + b, 0);
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

async function main(): Promise<void> {
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
  const ebs = createEbsClient({
    endpoint: emulator.endpoint,
    region: "us-east-1",
    maxSockets: 256,
    credentials: { accessKeyId: "AKIDBENCH", secretAccessKey: "x" },
  });
  const bucket = "cgm-bench-transfer";
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await s3.send(
      new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: "Enabled" } }),
    );
    // The changed set: every block of a `gib` GiB volume rewritten in the child snapshot.
    const root = await admin.createSyntheticSnapshot({
      volumeSizeGiB: gib,
      seed: "bench-transfer",
      writtenFraction: 0.5,
    });
    const child = await admin.createSyntheticSnapshot({
      parentSnapshotId: root.snapshotId,
      changedFraction: 1,
      compressibleFraction: 0.3,
    });
    const s3store = new S3ObjectStore({ client: usePrecomputedPayloadHash(s3), bucket });

    const pids = { emulator: emulator.child.pid, s3: s3server.pid };

    const runWorker = async (
      name: string,
      options: TransferOptions,
      shardBlocks?: number,
      parallel = false,
      pair: { base: string; snap: string } = { base: root.snapshotId, snap: child.snapshotId },
      afterShard?: (shard: ShardDescriptor) => Promise<void>,
    ): Promise<PhaseResult> => {
      const c = counting(s3store);
      const repo: Repo = createRepo({ store: c.store, prefix: `bench/${name}`, group: "bench" });
      const before = await admin.stats();
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
      const shards = plan.shards!;
      const statsAfterPlan = await admin.stats();
      const meter = new Meter(pids);
      let gets = 0;
      let throttled = 0;
      let readSeconds = 0;
      let readFirst: number | undefined;
      let readLast = 0;
      const one = async (shard: ShardDescriptor): Promise<ShardResultSummary | undefined> => {
        const source = new EbsBlockSource(ebs);
        const onProgress = (p: TransferProgress) => {
          if (p.state !== "running") return;
          const now = performance.now();
          readFirst ??= now;
          readLast = now;
        };
        try {
          return await transferShard({ repo, source, onProgress }, { runId: name, shard, options });
        } catch (error) {
          log(`${name}: shard ${shard.shard} failed: ${(error as Error).name}: ${(error as Error).message}`);
          return undefined;
        }
      };
      const results: (ShardResultSummary | undefined)[] = [];
      if (parallel) {
        meter.start();
        results.push(...(await Promise.all(shards.map(one))));
        meter.stop();
        if (readFirst !== undefined) readSeconds = (readLast - readFirst) / 1000;
        const after = await admin.stats();
        gets = after.requests.GetSnapshotBlock - statsAfterPlan.requests.GetSnapshotBlock;
        throttled = after.throttled - statsAfterPlan.throttled;
      } else {
        for (const s of shards) {
          const s0 = await admin.stats();
          meter.start();
          readFirst = undefined;
          results.push(await one(s));
          meter.stop();
          if (readFirst !== undefined) readSeconds += (readLast - readFirst) / 1000;
          const s1 = await admin.stats();
          gets += s1.requests.GetSnapshotBlock - s0.requests.GetSnapshotBlock;
          throttled += s1.throttled - s0.throttled;
          if (afterShard) await afterShard(s);
        }
      }
      const ok = results.filter((r): r is ShardResultSummary => r !== undefined);
      const blocks = ok.reduce((a, r) => a + r.stats.blocks - r.stats.absentBlocks, 0);
      const ebsCount =
        ok.reduce((a, r) => a + r.stats.getRequests + r.stats.listRequests, 0) + plan.totals.listPages;
      const r: PhaseResult = {
        seconds: meter.seconds,
        readSeconds,
        cpu: meter.cpu,
        emulatorCpu: meter.emulatorCpu,
        s3Cpu: meter.s3Cpu,
        userCpu: meter.user,
        bytes: blocks * BLOCK_SIZE,
        blocks,
        puts: c.puts(),
        ebs: afterShard ? ebsCount : ebsRequests(await admin.stats()) - ebsRequests(before),
        throttled,
        gets,
        failedShards: results.length - ok.length,
        maxInFlight: Math.max(0, ...ok.map((x) => x.stats.maxInFlight)),
        storedBytes: ok.reduce((a, x) => a + x.stats.storedBytes, 0),
      };
      log(
        `${name}: ${JSON.stringify({ ...r, mib_s: r.bytes / MiB / r.seconds, rss_mb: process.memoryUsage().rss / MiB })}`,
      );
      return r;
    };

    /** GetSnapshotBlock then PutObject of the raw block for the changed blocks in [first, end). */
    const baselineMeter = new Meter(pids);
    let baselineBlocks = 0;
    const runBaseline = async (concurrency: number, first: number, end: number): Promise<void> => {
      // Tokens first (not timed), like the worker's listing; then N loops of Get + PutObject.
      const tokens: { index: number; token: string }[] = [];
      let next: string | undefined;
      let done = false;
      do {
        const page = await ebs.send(
          new ListChangedBlocksCommand({
            FirstSnapshotId: root.snapshotId,
            SecondSnapshotId: child.snapshotId,
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
      let at = 0;
      const loop = async () => {
        for (;;) {
          const item = tokens[at++];
          if (!item) return;
          for (let attempt = 1; ; attempt++) {
            try {
              const got = await ebs.send(
                new GetSnapshotBlockCommand({
                  SnapshotId: child.snapshotId,
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
              break;
            } catch (error) {
              if (attempt >= 5) throw error;
            }
          }
        }
      };
      baselineMeter.start();
      await Promise.all(Array.from({ length: concurrency }, loop));
      baselineMeter.stop();
      baselineBlocks += tokens.length;
    };
    const baselineResult = (): PhaseResult => ({
      seconds: baselineMeter.seconds,
      cpu: baselineMeter.cpu,
      emulatorCpu: baselineMeter.emulatorCpu,
      s3Cpu: baselineMeter.s3Cpu,
      userCpu: baselineMeter.user,
      bytes: baselineBlocks * BLOCK_SIZE,
      blocks: baselineBlocks,
      puts: baselineBlocks,
      ebs: baselineBlocks,
      throttled: 0,
      gets: baselineBlocks,
      failedShards: 0,
      maxInFlight: BASELINE_CONCURRENCY,
      storedBytes: baselineBlocks * BLOCK_SIZE,
    });

    let def: PhaseResult | undefined;
    let peakRssMb: number | undefined;
    if (phases.has("default")) {
      def = await runWorker("default", {});
      peakRssMb = Math.round(process.resourceUsage().maxRSS / 1024);
      const m = process.memoryUsage();
      log(
        `memory after default: ${JSON.stringify({ rss: m.rss / MiB, heapUsed: m.heapUsed / MiB, external: m.external / MiB, arrayBuffers: m.arrayBuffers / MiB, maxRSS: peakRssMb })}`,
      );
    }
    // raw and baseline interleave shard by shard (2 GiB each at 8 GiB), so that both see the same
    // load on a shared machine; the baseline runs at the worker's maximum concurrency.
    const raw = phases.has("raw")
      ? await runWorker(
          "raw",
          { compression: "none" },
          Math.ceil((gib * 2048) / 4),
          false,
          undefined,
          phases.has("baseline")
            ? (shard) => runBaseline(BASELINE_CONCURRENCY, shard.first, shard.end)
            : undefined,
        )
      : undefined;
    const base = phases.has("baseline") && baselineBlocks > 0 ? baselineResult() : undefined;
    if (base) log(`baseline: ${JSON.stringify({ ...base, mib_s: base.bytes / MiB / base.seconds })}`);
    const concurrency = BASELINE_CONCURRENCY;
    let quota: PhaseResult | undefined;
    if (phases.has("quota")) {
      await admin.setFaults({ dataPlaneRpsPerSnapshot: quotaRps });
      try {
        quota = await runWorker("quota", { compression: "none" });
      } finally {
        await admin.setFaults({ dataPlaneRpsPerSnapshot: 0 });
      }
    }

    let low: PhaseResult | undefined;
    if (phases.has("lowquota")) {
      const lowRoot = await admin.createSyntheticSnapshot({
        volumeSizeGiB: 1,
        seed: "bench-low",
        writtenFraction: 0.5,
      });
      const lowChild = await admin.createSyntheticSnapshot({
        parentSnapshotId: lowRoot.snapshotId,
        changedFraction: 1,
      });
      await admin.setFaults({ dataPlaneRpsPerSnapshot: lowQuotaRps });
      try {
        low = await runWorker("lowquota", { compression: "none" }, undefined, false, {
          base: lowRoot.snapshotId,
          snap: lowChild.snapshotId,
        });
      } finally {
        await admin.setFaults({ dataPlaneRpsPerSnapshot: 0 });
      }
    }

    const sim = phases.has("sim4") ? await simulateSharedQuota(quotaRps, 4, 2000, latencyMs) : undefined;
    if (sim) log(`sim4: ${JSON.stringify(sim)}`);

    const mibs = (r?: PhaseResult) => (r ? r.bytes / MiB / r.seconds : null);
    const perGib = (v: number, r: PhaseResult) => v / (r.bytes / GiB);
    const round = (v: number | null | undefined, d = 2) =>
      v === null || v === undefined ? null : Number(v.toFixed(d));
    const out = {
      bench: "transfer",
      changed_gib: gib,
      latency_ms: latencyMs,
      concurrency,
      mib_s: round(mibs(raw), 1),
      baseline_mib_s: round(mibs(base), 1),
      ratio: raw && base ? round(mibs(raw)! / mibs(base)!, 3) : null,
      mib_s_compressed: round(mibs(def), 1),
      quota_rps: quotaRps,
      quota_utilization: quota
        ? round(quota.blocks / (quota.readSeconds || quota.seconds) / quotaRps, 3)
        : null,
      throttled_fraction: quota ? round(quota.throttled / Math.max(1, quota.gets), 4) : null,
      failed_shards: [def, raw, quota, low].reduce((a, r) => a + (r?.failedShards ?? 0), 0),
      low_quota_rps: low ? lowQuotaRps : null,
      low_quota_utilization: low
        ? round(low.blocks / (low.readSeconds || low.seconds) / lowQuotaRps, 3)
        : null,
      low_throttled_fraction: low ? round(low.throttled / Math.max(1, low.gets), 4) : null,
      sim4_quota_utilization: sim ? round(sim.utilization, 3) : null,
      sim4_throttled_fraction: sim ? round(sim.throttledFraction, 4) : null,
      cpu_s_per_gib: raw ? round(perGib(raw.cpu, raw), 3) : null,
      cpu_s_per_gib_compressed: def ? round(perGib(def.cpu, def), 3) : null,
      baseline_cpu_s_per_gib: base ? round(perGib(base.cpu, base), 3) : null,
      compression_ratio: def ? round(def.bytes / Math.max(1, def.storedBytes), 3) : null,
      s3_puts_per_gib: def ? round(perGib(def.puts, def), 2) : raw ? round(perGib(raw.puts, raw), 2) : null,
      ebs_requests_per_gib: def
        ? round(perGib(def.ebs, def), 1)
        : raw
          ? round(perGib(raw.ebs, raw), 1)
          : null,
      peak_rss_mb: peakRssMb ?? null,
      worker_user_cpu_s_per_gib: raw ? round(perGib(raw.userCpu, raw), 3) : null,
      emulator_cpu_s_per_gib: raw ? round(perGib(raw.emulatorCpu, raw), 3) : null,
      s3_server_cpu_s_per_gib: raw ? round(perGib(raw.s3Cpu, raw), 3) : null,
      malloc_mmap_threshold: process.env.MALLOC_MMAP_THRESHOLD_ ?? null,
      cpus: (await import("node:os")).availableParallelism(),
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
