/**
 * `npm run bench:restore` — restore throughput to raw image files and into EBS snapshots, each against
 * a raw loop at the same concurrency. Prints ONE JSON line.
 *
 * Set-up: the local S3 server (Versity, own process), the EBS emulator (own process, 20 ms latency per
 * request, the AWS default quota of 1,000 PutSnapshotBlock/s per snapshot), and a committed generation
 * of one volume of CGM_BENCH_GIB GiB (default 1) of incompressible blocks, stored raw (so that the raw
 * loops move exactly the bytes restore moves), written by a child process (its buffers are not in this
 * process's resident set). Phases, in CGM_BENCH_ROUNDS rounds (default 4) of
 * alternating order; within a round each restore runs right next to its raw loop, and the ratios are
 * the medians of the per-round ratios (both sides see the same machine load):
 *   files          restoreVolume: index + footers checked, every block's SHA-256 checked, pwrite into a
 *                  temporary image, fsync, rename                               → files_mib_s
 *   files_raw      the same coalesced ranged GETs (8 in flight, ≤ 8 MiB, gaps ≤ 256 KiB) into the
 *                  same reused buffers as restore's, pwrite, no checks          → files_raw_mib_s, files_ratio
 *   snapshots      restoreVolumeToSnapshot: index + footers checked, PutSnapshotBlock with the backup's
 *                  SHA-256 as checksum (EBS's check of each block), paced by the AIMD limiter (≤ 64 in
 *                  flight), CompleteSnapshot                                   → snapshots_mib_s
 *   snapshots_raw  the same GETs, then PutSnapshotBlock of every block with its known checksum, 64 in
 *                  flight, throttled requests retried, CompleteSnapshot        → snapshots_raw_mib_s, snapshots_ratio
 * `*_cpu_s_per_gib`: CPU seconds (user + system) of this process per GiB restored, median over the rounds
 * (the S3 server and the EBS emulator run in their own processes and are not counted).
 * `peak_rss_mb`: the largest resident set of this process sampled (every 50 ms) during a restore phase
 * (the whole process: the S3 and EBS clients, the index entries, the range buffers, the bodies in flight).
 * `bounds`: per phase (medians over the rounds), what could have bounded it: `event_loop` is the
 * main thread's event-loop utilization (1: the thread that parses responses and issues writes was never
 * idle), `s3_server_cpu_s_per_gib` and `emulator_cpu_s_per_gib` the CPU of those processes per GiB,
 * `machine_idle` the share of the machine's CPU time no one used (Linux /proc; null elsewhere).
 * Environment: CGM_BENCH_GIB (1), CGM_BENCH_LATENCY_MS (20), CGM_BENCH_QUOTA_RPS (1000),
 * CGM_BENCH_PHASES (`files,snapshots`: which restores to run, each with its raw loop),
 * CGM_BENCH_PROFILE_DIR (unset: write a V8 CPU profile of each phase's main thread there).
 */

import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { Agent as HttpAgent } from "node:http";
import { Session } from "node:inspector/promises";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { CreateBucketCommand, PutBucketVersioningCommand, S3Client } from "@aws-sdk/client-s3";
import { ebsAdmin } from "@cgmirror/ebs-emulator";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import { createEbsClient } from "#adapters/ebs-source.ts";
import { EbsSnapshotWriter } from "#adapters/ebs-writer.ts";
import { usePrecomputedPayloadHash } from "#adapters/s3-payload-hash.ts";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import type { IndexEntry } from "#core/format/block-ref.ts";
import { BLOCK_SIZE, sha256 } from "#core/format/bytes.ts";
import { readCommittedManifest } from "#core/format/generation.ts";
import { createRepo, keys, type Repo } from "#core/format/layout.ts";
import { openVolumeIndex } from "#core/format/volume-index.ts";
import { isBlockSourceError } from "#core/ports/block-source.ts";
import { writeGeneration } from "#core/protocol/write-generation.ts";
import { restoreVolume } from "#core/restore/restore.ts";
import { restoreVolumeToSnapshot } from "#core/restore/restore-snapshots.ts";
import { sharedSha256Pool } from "#core/util/hash-pool.ts";
import { TaskPool } from "#core/util/pool.ts";
import { startS3Server } from "#local/s3-server/server.ts";
import { emulatorSnapshotCatalog } from "#local/snapshot-catalog.ts";

const MiB = 1024 ** 2;
const gib = Number(process.env.CGM_BENCH_GIB ?? 1);
const latencyMs = Number(process.env.CGM_BENCH_LATENCY_MS ?? 20);
const quotaRps = Number(process.env.CGM_BENCH_QUOTA_RPS ?? 1000);
const ROUNDS = Number(process.env.CGM_BENCH_ROUNDS ?? 4);
const PHASES = (process.env.CGM_BENCH_PHASES ?? "files,snapshots").split(",").map((p) => p.trim());
for (const p of PHASES) {
  if (p !== "files" && p !== "snapshots") {
    process.stderr.write(`CGM_BENCH_PHASES: unknown phase "${p}"; use files, snapshots or both\n`);
    process.exit(2);
  }
}
const PROFILE_DIR = process.env.CGM_BENCH_PROFILE_DIR;
const READ_CONCURRENCY = 8;
const PUT_CONCURRENCY = 64;
const log = (m: string) => process.stderr.write(`[bench:restore] ${m}\n`);

async function startEmulator(): Promise<{ endpoint: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ["node_modules/.bin/ebs-emulator"], {
    stdio: ["ignore", "pipe", "inherit"],
    env: {
      ...process.env,
      CGM_EBS_PORT: "0",
      CGM_EBS_LATENCY_MS: String(latencyMs),
      CGM_EBS_DATA_RPS_PER_SNAPSHOT: String(quotaRps),
    },
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

/** CPU seconds (user + system) a process has used so far, from /proc; NaN where there is none. */
async function processCpuSeconds(pid: number | undefined): Promise<number> {
  if (pid === undefined || pid < 0) return Number.NaN;
  try {
    const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in USER_HZ (100) ticks
  } catch {
    return Number.NaN;
  }
}

/** The machine's [idle, total] CPU seconds so far (all CPUs), from /proc/stat; NaN where there is none. */
async function machineCpuSeconds(): Promise<[number, number]> {
  try {
    const f = (await readFile("/proc/stat", "utf8")).split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    return [(f[3]! + f[4]!) / 100, f.reduce((a, b) => a + b, 0) / 100]; // idle + iowait, all
  } catch {
    return [Number.NaN, Number.NaN];
  }
}

/** The coalesced ranges restore reads (same rule as fetchBlocks' defaults). */
function ranges(
  entries: readonly IndexEntry[],
): Array<{ segment: string; start: number; end: number; blocks: IndexEntry[] }> {
  const stored = [...entries].sort((a, b) =>
    a.ref.segment === b.ref.segment ? a.ref.offset - b.ref.offset : a.ref.segment! < b.ref.segment! ? -1 : 1,
  );
  const out: Array<{ segment: string; start: number; end: number; blocks: IndexEntry[] }> = [];
  for (const e of stored) {
    const last = out.at(-1);
    const r = e.ref;
    if (
      last &&
      last.segment === r.segment &&
      r.offset <= last.end + 256 * 1024 &&
      Math.max(last.end, r.offset + r.length) - last.start <= 8 * MiB
    ) {
      last.end = Math.max(last.end, r.offset + r.length);
      last.blocks.push(e);
    } else out.push({ segment: r.segment!, start: r.offset, end: r.offset + r.length, blocks: [e] });
  }
  return out;
}

interface S3Endpoint {
  readonly endpoint: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

function s3Client(server: S3Endpoint, agent: HttpAgent): S3Client {
  return new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    requestHandler: new NodeHttpHandler({
      httpAgent: agent,
      connectionTimeout: 5000,
      requestTimeout: 120_000,
    }),
  });
}

const BUCKET = "cgm-bench-restore";
const VOLUME = "vol-bench";
const benchRepo = (s3: S3Client): Repo =>
  createRepo({
    store: new S3ObjectStore({ client: usePrecomputedPayloadHash(s3), bucket: BUCKET }),
    prefix: "bench/restore",
    group: "bench",
  });

/**
 * Commits one volume of `gib` GiB of random blocks, in generations of 256 MiB; HEAD's index names
 * every block. Run in a child process (CGM_BENCH_RESTORE_FILL) so that the GiB of buffers it makes
 * does not stay in the resident set the restore phases are measured by.
 */
async function fill(server: S3Endpoint): Promise<void> {
  const s3 = s3Client(server, new HttpAgent({ keepAlive: true, maxSockets: 64 }));
  const repo = benchRepo(s3);
  const blocks = gib * 2048;
  const perGeneration = 512;
  for (let first = 0; first < blocks; first += perGeneration) {
    const n = Math.min(perGeneration, blocks - first);
    const writes = Array.from({ length: n }, (_, i) => ({ block: first + i, data: randomBytes(BLOCK_SIZE) }));
    await writeGeneration(repo, {
      runId: `fill-${first}`,
      volumes: [{ volumeId: VOLUME, sizeBytes: blocks * BLOCK_SIZE, blocks: writes }],
      segments: { compression: "none" },
    });
  }
  s3.destroy();
  log(`wrote ${gib} GiB in ${Math.ceil(blocks / perGeneration)} generations`);
}

async function main(): Promise<void> {
  const s3server = await startS3Server({ log });
  const emulator = await startEmulator();
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 256 });
  const s3 = s3Client(s3server, agent);
  const ebs = createEbsClient({
    endpoint: emulator.endpoint,
    region: "us-east-1",
    maxSockets: 256,
    credentials: { accessKeyId: "AKIDBENCH", secretAccessKey: "x" },
  });
  const writer = new EbsSnapshotWriter({
    client: ebs,
    catalog: emulatorSnapshotCatalog(ebsAdmin(emulator.endpoint)),
  });
  const dir = await mkdtemp(join(tmpdir(), "cgm-bench-restore-"));
  try {
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    await s3.send(
      new PutBucketVersioningCommand({ Bucket: BUCKET, VersioningConfiguration: { Status: "Enabled" } }),
    );
    const repo = benchRepo(s3);
    const store = repo.store;
    const blocks = gib * 2048;
    const volumeId = VOLUME;
    const filler = spawn(process.execPath, [...process.execArgv, process.argv[1]!], {
      stdio: ["ignore", "inherit", "inherit"],
      env: { ...process.env, CGM_BENCH_RESTORE_FILL: JSON.stringify(s3server satisfies S3Endpoint) },
    });
    const code = await new Promise<number | null>((resolve) => filler.once("exit", resolve));
    if (code !== 0) throw new Error(`filling the repository failed (exit ${code})`);
    const manifest = (await readCommittedManifest(repo))!;
    const index = await openVolumeIndex(repo, volumeId, manifest.volumes[0]!.index);
    const entries: IndexEntry[] = [];
    await index.scan((batch) => {
      entries.push(...batch);
    });
    const bytes = entries.length * BLOCK_SIZE;

    // The raw loops read into the same reused buffers as restore (the hash pool's, which lends them
    // whether or not restore hashes them): on this VM a fresh page costs a host fault, and a loop that
    // allocated a new buffer per GET would lose to restore on that alone, not on what it skips. Sharing
    // the pool also keeps one set of buffers in the process, not one per loop.
    const rawBuffers = sharedSha256Pool();
    const phases = {
      files: async () => {
        await restoreVolume(repo, { volumeId, manifest, path: join(dir, "files.img") });
      },
      files_raw: async () => {
        const file = await open(join(dir, "raw.img"), "wx");
        try {
          await file.truncate(blocks * BLOCK_SIZE);
          const pool = new TaskPool(READ_CONCURRENCY);
          for (const r of ranges(entries)) {
            await pool.run(async () => {
              const got = await store.get(keys.segment(repo, r.segment), {
                range: { start: r.start, end: r.end },
                into: (n) => rawBuffers.borrow(n),
              });
              for (const e of r.blocks) {
                const at = e.ref.offset - r.start;
                await file.write(got.body, at, e.ref.length, e.block * BLOCK_SIZE);
              }
              rawBuffers.giveBack(got.body);
            });
          }
          await pool.drain();
          await file.sync();
        } finally {
          await file.close();
        }
      },
      snapshots: async () => {
        const r = await restoreVolumeToSnapshot(repo, writer, {
          manifest,
          volumeId,
          restoreId: `bench-${Date.now()}-${Math.random()}`,
        });
        if (r.status !== "completed" || r.dataBlocks !== entries.length)
          throw new Error(`restore: ${JSON.stringify(r)}`);
      },
      snapshots_raw: async () => {
        const { snapshotId } = await writer.startSnapshot({
          volumeSizeGiB: gib,
          description: "bench raw loop",
          tags: {},
          clientToken: `raw-${Date.now()}-${Math.random()}`.slice(0, 64),
        });
        const puts = new TaskPool(PUT_CONCURRENCY);
        const reads = new TaskPool(READ_CONCURRENCY);
        for (const r of ranges(entries)) {
          await reads.run(async () => {
            const got = await store.get(keys.segment(repo, r.segment), {
              range: { start: r.start, end: r.end },
              into: (n) => rawBuffers.borrow(n),
            });
            const sent: Promise<void>[] = [];
            for (const e of r.blocks) {
              const data = got.body.subarray(e.ref.offset - r.start, e.ref.offset - r.start + e.ref.length);
              const checksum = Buffer.from(e.ref.sha256).toString("base64");
              await puts.run(() => {
                const put = (async () => {
                  for (let attempt = 0; ; attempt++) {
                    try {
                      await writer.putBlock({ snapshotId, blockIndex: e.block, data, checksum });
                      return;
                    } catch (error) {
                      if (!isBlockSourceError(error) || error.kind === "fatal" || attempt > 50) throw error;
                      await new Promise((res) => setTimeout(res, 5 + Math.random() * 20));
                    }
                  }
                })();
                sent.push(put);
                return put;
              });
            }
            void Promise.allSettled(sent).then(() => rawBuffers.giveBack(got.body));
          });
        }
        await reads.drain();
        await puts.drain();
        await writer.completeSnapshot(snapshotId, entries.length);
      },
    };
    // Warm-up (connections, JIT), then ROUNDS rounds in alternating order; each round runs restore and
    // its raw loop back to back, so a ratio compares two runs under the same machine load. The ratios
    // reported are the medians over the rounds.
    await phases.files_raw();
    const seconds: Record<string, number[]> = { files: [], files_raw: [], snapshots: [], snapshots_raw: [] };
    const cpu: Record<string, number[]> = { files: [], files_raw: [], snapshots: [], snapshots_raw: [] };
    const perPhase = () =>
      ({ files: [], files_raw: [], snapshots: [], snapshots_raw: [] }) as Record<string, number[]>;
    const eventLoop = perPhase();
    const rss: Record<string, number> = {};
    const serverCpu = perPhase();
    const emulatorCpu = perPhase();
    const idle = perPhase();
    const time = async (name: keyof typeof phases) => {
      // Both file phases start from the same state: no image on disk. Without this the raw loop's
      // O_TRUNC of its own previous image freed 1 GiB of page cache right as it started writing and
      // wrote into those warm pages again, while restore (a new temporary file, the old image kept
      // until the rename) had to take 1 GiB of fresh pages; on this VM (virtio-balloon free page
      // reporting) a fresh page costs a host fault, ≈ 3.7 CPU-s of kernel time per GiB.
      await rm(join(dir, "files.img"), { force: true });
      await rm(join(dir, "raw.img"), { force: true });
      const profiler = PROFILE_DIR ? new Session() : undefined;
      if (profiler) {
        profiler.connect();
        await profiler.post("Profiler.enable");
        await profiler.post("Profiler.start");
      }
      const s0 = await processCpuSeconds(s3server.pid);
      const m0 = await processCpuSeconds(emulator.child.pid);
      const [idle0, all0] = await machineCpuSeconds();
      const e0 = performance.eventLoopUtilization();
      let peak = process.memoryUsage.rss();
      const sampler = setInterval(() => {
        peak = Math.max(peak, process.memoryUsage.rss());
      }, 50);
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      await phases[name]();
      seconds[name]!.push((performance.now() - t0) / 1000);
      clearInterval(sampler);
      rss[name] = Math.max(rss[name] ?? 0, peak, process.memoryUsage.rss());
      const c = process.cpuUsage(c0);
      cpu[name]!.push((c.user + c.system) / 1e6);
      eventLoop[name]!.push(performance.eventLoopUtilization(e0).utilization);
      serverCpu[name]!.push((await processCpuSeconds(s3server.pid)) - s0);
      emulatorCpu[name]!.push((await processCpuSeconds(emulator.child.pid)) - m0);
      const [idle1, all1] = await machineCpuSeconds();
      idle[name]!.push((idle1 - idle0) / (all1 - all0));
      if (profiler) {
        const { profile } = await profiler.post("Profiler.stop");
        const file = join(PROFILE_DIR!, `${name}-${seconds[name]!.length}.cpuprofile`);
        await writeFile(file, JSON.stringify(profile));
        profiler.disconnect();
      }
      log(`${name}: ${(bytes / MiB / seconds[name]!.at(-1)!).toFixed(1)} MiB/s`);
    };
    for (let r = 0; r < ROUNDS; r++) {
      const order: (keyof typeof phases)[] =
        r % 2 === 0
          ? ["files", "files_raw", "snapshots", "snapshots_raw"]
          : ["snapshots_raw", "snapshots", "files_raw", "files"];
      for (const name of order) if (PHASES.includes(name.replace(/_raw$/, ""))) await time(name);
    }
    const median = (xs: number[]) => {
      const s = [...xs].sort((a, b) => a - b);
      if (s.length === 0) return Number.NaN; // a phase CGM_BENCH_PHASES left out (printed as null)
      return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
    };
    const round = (x: number, d = 1) => Number(x.toFixed(d));
    const gibs = bytes / 1024 ** 3;
    const figure = (x: number, d: number) => (Number.isFinite(x) ? round(x, d) : null);
    const bounds = Object.fromEntries(
      Object.keys(seconds)
        .filter((k) => seconds[k]!.length > 0)
        .map((k) => [
          k,
          {
            event_loop: figure(median(eventLoop[k]!), 2),
            s3_server_cpu_s_per_gib: figure(median(serverCpu[k]!) / gibs, 2),
            emulator_cpu_s_per_gib: figure(median(emulatorCpu[k]!) / gibs, 2),
            machine_idle: figure(median(idle[k]!), 2),
            peak_rss_mb: Math.round(rss[k]! / MiB),
          },
        ]),
    );
    const mibs = (name: string) => bytes / MiB / median(seconds[name]!);
    const ratio = (a: string, b: string) => median(seconds[a]!.map((t, i) => seconds[b]![i]! / t));
    const stats = await ebsAdmin(emulator.endpoint).stats();
    process.stdout.write(
      `${JSON.stringify({
        gib,
        blocks: entries.length,
        emulator_latency_ms: latencyMs,
        put_quota_rps: quotaRps,
        files_mib_s: round(mibs("files")),
        files_raw_mib_s: round(mibs("files_raw")),
        files_ratio: round(ratio("files", "files_raw"), 3),
        snapshots_mib_s: round(mibs("snapshots")),
        snapshots_raw_mib_s: round(mibs("snapshots_raw")),
        snapshots_ratio: round(ratio("snapshots", "snapshots_raw"), 3),
        files_cpu_s_per_gib: round(median(cpu.files!) / (bytes / 1024 ** 3), 2),
        files_raw_cpu_s_per_gib: round(median(cpu.files_raw!) / (bytes / 1024 ** 3), 2),
        snapshots_cpu_s_per_gib: round(median(cpu.snapshots!) / (bytes / 1024 ** 3), 2),
        snapshots_raw_cpu_s_per_gib: round(median(cpu.snapshots_raw!) / (bytes / 1024 ** 3), 2),
        rounds: ROUNDS,
        peak_rss_mb: Math.round(Math.max(rss.files ?? 0, rss.snapshots ?? 0) / MiB),
        bounds,
        snapshots_put_rps: round(mibs("snapshots") * 2),
        throttled: stats.throttled,
        read_concurrency: READ_CONCURRENCY,
        put_concurrency: PUT_CONCURRENCY,
        load_average_1m: round(loadavg()[0]!, 2),
        cpus: availableParallelism(),
        node: process.version,
        checksum_of_a_block_us: round(
          (() => {
            const b = Buffer.alloc(BLOCK_SIZE, 1);
            const t = performance.now();
            for (let i = 0; i < 20; i++) sha256(b);
            return ((performance.now() - t) / 20) * 1000;
          })(),
          0,
        ),
      })}\n`,
    );
  } finally {
    ebs.destroy();
    s3.destroy();
    emulator.child.kill("SIGTERM");
    await s3server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

const fillFor = process.env.CGM_BENCH_RESTORE_FILL;
if (fillFor) await fill(JSON.parse(fillFor) as S3Endpoint);
else await main();
