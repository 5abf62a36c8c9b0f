/**
 * `npm run bench:transfer` — the transfer worker at the EBS direct API quota. Prints ONE JSON line.
 *
 * Set-up in one run: the local S3 server (Versity, own process), the EBS emulator (own process, so
 * its CPU is not counted as the worker's) with 20 ms latency per request, a synthetic changed set of
 * 8 GiB (ListChangedBlocks between two synthetic snapshots). Phases, each on the whole changed set:
 *   default    worker at default settings (zstd)            → mib_s_compressed, cpu_s_per_gib_compressed, peak_rss_mb
 *   raw        worker without compression                   → mib_s, cpu_s_per_gib, s3_puts_per_gib, ebs_requests_per_gib
 *   baseline   GetSnapshotBlock then PutObject of the raw block, at the worker's peak concurrency → baseline_mib_s
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
import { type ShardResultSummary, type TransferOptions, transferShard } from "#core/transfer-worker.ts";
import { type EbsAdminClient, type EbsStats, ebsAdmin } from "#local/ebs-emulator/index.ts";
import { TokenBucket } from "#local/ebs-emulator/token-bucket.ts";
import { startS3Server } from "#local/s3-server/server.ts";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const gib = Number(process.env.CGM_BENCH_GIB ?? 8);
const latencyMs = Number(process.env.CGM_BENCH_LATENCY_MS ?? 20);
const quotaRps = Number(process.env.CGM_BENCH_QUOTA_RPS ?? 200);
const lowQuotaRps = Number(process.env.CGM_BENCH_LOW_QUOTA_RPS ?? 50);
const phases = new Set(
  (process.env.CGM_BENCH_PHASES ?? "default,raw,baseline,quota,lowquota,sim4").split(","),
);
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
      list: (p) => store.list(p),
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

interface PhaseResult {
  readonly seconds: number;
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

    const runWorker = async (
      name: string,
      options: TransferOptions,
      shardBlocks?: number,
      parallel = false,
      pair: { base: string; snap: string } = { base: root.snapshotId, snap: child.snapshotId },
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
      const cpu0 = cpuSeconds();
      const user0 = process.cpuUsage().user / 1e6;
      const emu0 = procCpuSeconds(emulator.child.pid);
      const s30 = procCpuSeconds(s3server.pid);
      const t0 = performance.now();
      const one = async (shard: ShardDescriptor): Promise<ShardResultSummary | undefined> => {
        const source = new EbsBlockSource(ebs);
        try {
          return await transferShard({ repo, source }, { runId: name, shard, options });
        } catch (error) {
          log(`${name}: shard ${shard.shard} failed: ${(error as Error).name}: ${(error as Error).message}`);
          return undefined;
        }
      };
      const results: (ShardResultSummary | undefined)[] = [];
      if (parallel) results.push(...(await Promise.all(shards.map(one))));
      else for (const s of shards) results.push(await one(s));
      const seconds = (performance.now() - t0) / 1000;
      const cpu = cpuSeconds() - cpu0;
      const after = await admin.stats();
      const ok = results.filter((r): r is ShardResultSummary => r !== undefined);
      const blocks = ok.reduce((a, r) => a + r.stats.blocks - r.stats.absentBlocks, 0);
      const r: PhaseResult = {
        seconds,
        cpu,
        emulatorCpu: procCpuSeconds(emulator.child.pid) - emu0,
        s3Cpu: procCpuSeconds(s3server.pid) - s30,
        userCpu: process.cpuUsage().user / 1e6 - user0,
        bytes: blocks * BLOCK_SIZE,
        blocks,
        puts: c.puts(),
        ebs: ebsRequests(after) - ebsRequests(before),
        throttled: after.throttled - statsAfterPlan.throttled,
        gets: after.requests.GetSnapshotBlock - statsAfterPlan.requests.GetSnapshotBlock,
        failedShards: results.length - ok.length,
        maxInFlight: Math.max(0, ...ok.map((x) => x.stats.maxInFlight)),
        storedBytes: ok.reduce((a, x) => a + x.stats.storedBytes, 0),
      };
      log(
        `${name}: ${JSON.stringify({ ...r, mib_s: r.bytes / MiB / seconds, rss_mb: process.memoryUsage().rss / MiB })}`,
      );
      return r;
    };

    const runBaseline = async (concurrency: number): Promise<PhaseResult> => {
      // Tokens first (not timed), like the worker's listing; then N loops of Get + PutObject.
      const tokens: { index: number; token: string }[] = [];
      let next: string | undefined;
      do {
        const page = await ebs.send(
          new ListChangedBlocksCommand({
            FirstSnapshotId: root.snapshotId,
            SecondSnapshotId: child.snapshotId,
            MaxResults: 10_000,
            NextToken: next,
          }),
        );
        for (const b of page.ChangedBlocks ?? []) {
          if (b.SecondBlockToken) tokens.push({ index: b.BlockIndex!, token: b.SecondBlockToken });
        }
        next = page.NextToken;
      } while (next);
      const cpu0 = cpuSeconds();
      const user0 = process.cpuUsage().user / 1e6;
      const emu0 = procCpuSeconds(emulator.child.pid);
      const s30 = procCpuSeconds(s3server.pid);
      const t0 = performance.now();
      let at = 0;
      let puts = 0;
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
              puts++;
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
      await Promise.all(Array.from({ length: concurrency }, loop));
      const seconds = (performance.now() - t0) / 1000;
      const r: PhaseResult = {
        seconds,
        cpu: cpuSeconds() - cpu0,
        emulatorCpu: procCpuSeconds(emulator.child.pid) - emu0,
        s3Cpu: procCpuSeconds(s3server.pid) - s30,
        userCpu: process.cpuUsage().user / 1e6 - user0,
        bytes: tokens.length * BLOCK_SIZE,
        blocks: tokens.length,
        puts,
        ebs: tokens.length,
        throttled: 0,
        gets: tokens.length,
        failedShards: 0,
        maxInFlight: concurrency,
        storedBytes: tokens.length * BLOCK_SIZE,
      };
      log(`baseline: ${JSON.stringify({ ...r, mib_s: r.bytes / MiB / seconds })}`);
      return r;
    };

    let def: PhaseResult | undefined;
    let peakRssMb: number | undefined;
    if (phases.has("default")) {
      def = await runWorker("default", {});
      peakRssMb = Math.round(process.resourceUsage().maxRSS / 1024);
    }
    const raw = phases.has("raw") ? await runWorker("raw", { compression: "none" }) : undefined;
    const concurrency = raw?.maxInFlight || def?.maxInFlight || 64;
    const base = phases.has("baseline") ? await runBaseline(concurrency) : undefined;
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
      quota_utilization: quota ? round(quota.blocks / quota.seconds / quotaRps, 3) : null,
      throttled_fraction: quota ? round(quota.throttled / Math.max(1, quota.gets), 4) : null,
      failed_shards: [def, raw, quota, low].reduce((a, r) => a + (r?.failedShards ?? 0), 0),
      low_quota_rps: low ? lowQuotaRps : null,
      low_quota_utilization: low ? round(low.blocks / low.seconds / lowQuotaRps, 3) : null,
      low_throttled_fraction: low ? round(low.throttled / Math.max(1, low.gets), 4) : null,
      sim4_quota_utilization: sim ? round(sim.utilization, 3) : null,
      sim4_throttled_fraction: sim ? round(sim.throttledFraction, 4) : null,
      cpu_s_per_gib: raw ? round(perGib(raw.cpu, raw), 3) : null,
      cpu_s_per_gib_compressed: def ? round(perGib(def.cpu, def), 3) : null,
      baseline_cpu_s_per_gib: base ? round(perGib(base.cpu, base), 3) : null,
      compression_ratio: def ? round(def.bytes / Math.max(1, def.storedBytes), 3) : null,
      s3_puts_per_gib: raw ? round(perGib(raw.puts, raw), 2) : null,
      ebs_requests_per_gib: raw ? round(perGib(raw.ebs, raw), 1) : null,
      peak_rss_mb: peakRssMb ?? null,
      worker_user_cpu_s_per_gib: raw ? round(perGib(raw.userCpu, raw), 3) : null,
      emulator_cpu_s_per_gib: raw ? round(perGib(raw.emulatorCpu, raw), 3) : null,
      s3_server_cpu_s_per_gib: raw ? round(perGib(raw.s3Cpu, raw), 3) : null,
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
