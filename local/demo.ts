/**
 * The demo: one consistency group across three volumes of two instances, backed up while a write-ahead
 * workload writes across them, on the embedded local stack. Three backups (full, incremental, and an
 * incremental whose slave fails and must revert), then every committed generation is restored and
 * compared byte-for-byte with the volumes' point-in-time images and checked against the workload's
 * cross-volume invariant; then the last generation is restored into EBS snapshots (and generation 1
 * incrementally on a snapshot cgmirror knows), read back through GetSnapshotBlock and compared.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ebsAdmin } from "@cgmirror/ebs-emulator/admin-client";
import { createEbsClient } from "#adapters/ebs-source.ts";
import { EbsSnapshotWriter } from "#adapters/ebs-writer.ts";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { type GroupConfig, parseGroupConfig } from "#core/config/group-config.ts";
import { listGenerations, readGeneration, readHead } from "#core/format/generation.ts";
import { createRepo } from "#core/format/layout.ts";
import { restoreGroup } from "#core/restore/restore.ts";
import { restoreGroupToSnapshots } from "#core/restore/restore-snapshots.ts";
import { verifyGeneration } from "#core/restore/verify.ts";
import { causeMessage } from "#workflows/errors.ts";
import { localClients } from "./clients.ts";
import { firstDifference } from "./compare.ts";
import { createLocalDeps, type LocalRunResult, runLocalBackup } from "./runner.ts";
import { emulatorSnapshotCatalog } from "./snapshot-catalog.ts";
import { snapshotToImage } from "./snapshot-image.ts";
import { startLocalStack } from "./stack.ts";
import { BLOCK_SIZE } from "./volumes/simulator.ts";
import { checkInvariant, WalWorkload } from "./workload.ts";

export const DEMO_VOLUMES = [
  { id: "vol-a", instanceId: "i-a", mountPoint: "/data", role: "data" },
  { id: "vol-b", instanceId: "i-a", mountPoint: "/wal", role: "log" },
  { id: "vol-c", instanceId: "i-b", mountPoint: "/data", role: "data" },
] as const;

export interface DemoBackupRow {
  readonly step: string;
  readonly outcome: LocalRunResult["outcome"];
  readonly generation?: number;
  readonly cause?: string;
  readonly changedBlocks?: number;
  readonly storedBytes?: number;
  readonly coordinationMs?: number;
  readonly durationMs: number;
  readonly recordsWritten: number;
}

export interface DemoRestoreRow {
  readonly generation: number;
  readonly volumesIdentical: number;
  readonly volumes: number;
  readonly mismatches: readonly string[];
  readonly invariantOk: boolean;
  readonly logRecords: number;
  readonly dataRecords: number;
  readonly invariantProblems: readonly string[];
  readonly verifyOk: boolean;
}

/** A generation restored into EBS snapshots (one per volume), read back and compared. */
export interface DemoSnapshotRestoreRow {
  readonly generation: number;
  readonly volumes: number;
  readonly volumesIdentical: number;
  /** Blocks written with PutSnapshotBlock (an incremental restore writes only what differs). */
  readonly blocksWritten: number;
  /** Parent snapshots used (incremental), by volume. */
  readonly parents: Readonly<Record<string, string>>;
  readonly snapshots: readonly string[];
  readonly mismatches: readonly string[];
}

export interface DemoReport {
  readonly ok: boolean;
  readonly backups: readonly DemoBackupRow[];
  readonly restores: readonly DemoRestoreRow[];
  readonly snapshotRestores: readonly DemoSnapshotRestoreRow[];
  readonly headAfterFailure: number | undefined;
  readonly problems: readonly string[];
  readonly stateDir: string;
  /** The HTML report written (cgmirror report), when asked for. */
  readonly reportPath?: string;
}

export async function runDemo(
  options: { stateDir?: string; keep?: boolean; log?: (line: string) => void; reportPath?: string } = {},
): Promise<DemoReport> {
  const log = options.log ?? (() => {});
  const base = options.stateDir ?? (await mkdtemp(join(tmpdir(), "cgmirror-demo-")));
  const stack = await startLocalStack({ stateDir: join(base, "state"), log });
  const clients = localClients(stack);
  const { s3, simulator } = clients;
  const deps = createLocalDeps({ endpoints: stack, simulator });
  const problems: string[] = [];
  try {
    log(`local stack: S3 ${stack.s3Endpoint}, EBS ${stack.ebsEndpoint}, state in ${stack.stateDir}`);
    for (const v of DEMO_VOLUMES) {
      await simulator.create({ id: v.id, sizeGiB: 1, instanceId: v.instanceId });
      log(`volume ${v.id} (${v.role}) on instance ${v.instanceId}`);
    }
    const config: GroupConfig = parseGroupConfig({
      group: "demo",
      description:
        "write-ahead log on vol-b names data on vol-a (same instance) and vol-c (another instance)",
      volumes: DEMO_VOLUMES.map(({ id, instanceId, mountPoint }) => ({ id, instanceId, mountPoint })),
      target: { bucket: stack.bucket, prefix: "groups/demo" },
      schedule: { expression: "rate(1 hour)" },
      freeze: { enabled: true, maxCoordinationSeconds: 10 },
      prepare: { policy: "failFast" },
      transfer: { shardBlocks: 64, maxConcurrency: 4 },
      snapshots: { keep: 2, completionTimeoutMinutes: 5 },
    });
    const repo = createRepo({
      store: new S3ObjectStore({ client: s3, bucket: stack.bucket }),
      prefix: config.target.prefix,
      group: config.group,
    });
    const workload = new WalWorkload(simulator, {
      logVolume: "vol-b",
      dataVolumes: ["vol-a", "vol-c"],
      dataBlocks: 64,
    });
    for (let i = 0; i < 50; i++) await workload.writeRecord();
    // Some bulk data besides the workload's records, so the first backup has something to move.
    await simulator.write("vol-a", 200 * BLOCK_SIZE, Buffer.alloc(4 * BLOCK_SIZE, 0x5a));
    workload.start(2);

    const backups: DemoBackupRow[] = [];
    const steps = [
      { step: "full", inject: undefined },
      { step: "incremental", inject: undefined },
      { step: "incremental, slave fails", inject: { task: "Transfer" as const, volumeId: "vol-c" } },
    ];
    for (const s of steps) {
      const before = workload.records;
      log(`backup (${s.step}) while the workload writes…`);
      const run = await runLocalBackup({ config, deps, ...(s.inject ? { injectFailure: s.inject } : {}) });
      const row: DemoBackupRow = {
        step: s.step,
        outcome: run.outcome,
        ...(run.generation !== undefined ? { generation: run.generation } : {}),
        ...(run.cause ? { cause: `${run.error}: ${causeMessage(run.cause)}` } : {}),
        durationMs: run.durationMs,
        recordsWritten: workload.records - before,
      };
      if (run.outcome === "committed" && run.generation !== undefined) {
        const m = await readGeneration(repo, run.generation);
        Object.assign(row, {
          changedBlocks: m.volumes.reduce((a, v) => a + (v.stats.changedBlocks ?? 0), 0),
          storedBytes: m.volumes.reduce((a, v) => a + (v.stats.storedBytes ?? 0), 0),
          coordinationMs: m.stats.coordinationMs,
        });
      }
      backups.push(row);
      log(
        `  → ${run.outcome}${run.generation ? ` generation ${run.generation}` : ""}${run.cause ? ` (${run.error}: ${causeMessage(run.cause)})` : ""}`,
      );
      const expected = s.inject ? "reverted" : "committed";
      if (run.outcome !== expected)
        problems.push(`backup "${s.step}" ended ${run.outcome}, expected ${expected}`);
    }
    await workload.stop();
    const head = (await readHead(repo))?.head.generation;
    if (head !== 2) problems.push(`after the failed run HEAD is generation ${head}, expected 2`);

    const restores: DemoRestoreRow[] = [];
    for (const gen of await listGenerations(repo)) {
      const dir = join(base, `restore-gen-${gen}`);
      log(`restore generation ${gen} and compare…`);
      await restoreGroup(repo, { directory: dir, generation: gen });
      const m = await readGeneration(repo, gen);
      const mismatches: string[] = [];
      for (const v of m.volumes) {
        const at = await firstDifference(
          join(dir, `${v.volumeId}.img`),
          simulator.snapshotImagePath(v.sourceSnapshotId!),
        );
        if (at >= 0) mismatches.push(`${v.volumeId} differs at byte ${at}`);
      }
      const inv = await checkInvariant(
        join(dir, "vol-b.img"),
        [join(dir, "vol-a.img"), join(dir, "vol-c.img")],
        64,
      );
      const verify = await verifyGeneration(repo, { generation: gen, readData: 1 });
      restores.push({
        generation: gen,
        volumes: m.volumes.length,
        volumesIdentical: m.volumes.length - mismatches.length,
        mismatches,
        invariantOk: inv.ok,
        logRecords: inv.logRecords,
        dataRecords: inv.dataRecords,
        invariantProblems: inv.problems.slice(0, 5),
        verifyOk: verify.ok,
      });
      if (mismatches.length) problems.push(`generation ${gen}: ${mismatches.join(", ")}`);
      if (!inv.ok) problems.push(`generation ${gen}: the write-ahead invariant fails: ${inv.problems[0]}`);
      if (!verify.ok) problems.push(`generation ${gen}: verify found ${verify.problems.length} problems`);
      await rm(dir, { recursive: true, force: true });
    }
    if (restores.length !== 2) problems.push(`expected 2 committed generations, found ${restores.length}`);

    // Restore into EBS: HEAD into new snapshots (every block written), then generation 1 incrementally
    // (on a snapshot cgmirror knows holds an earlier generation: only the differing blocks are written).
    const writerClient = createEbsClient({
      endpoint: stack.ebsEndpoint,
      region: stack.region,
      credentials: { accessKeyId: stack.accessKeyId, secretAccessKey: stack.secretAccessKey },
    });
    const writer = new EbsSnapshotWriter({
      client: writerClient,
      catalog: emulatorSnapshotCatalog(ebsAdmin(stack.ebsEndpoint)),
    });
    const snapshotRestores: DemoSnapshotRestoreRow[] = [];
    try {
      for (const step of [
        { generation: head ?? 0, autoParent: false },
        { generation: 1, autoParent: true },
      ]) {
        log(
          `restore generation ${step.generation} into EBS snapshots${step.autoParent ? " (incremental)" : ""} and compare…`,
        );
        const r = await restoreGroupToSnapshots(repo, writer, step);
        const m = await readGeneration(repo, step.generation);
        const mismatches: string[] = [];
        for (const v of r.volumes) {
          const size = m.volumes.find((x) => x.volumeId === v.volumeId)!.sizeBytes;
          const path = join(base, `snapshot-${v.snapshotId}.img`);
          await snapshotToImage(clients.ebs, v.snapshotId, path, size);
          const source = m.volumes.find((x) => x.volumeId === v.volumeId)!.sourceSnapshotId!;
          const at = await firstDifference(path, simulator.snapshotImagePath(source));
          if (at >= 0) mismatches.push(`${v.volumeId} (${v.snapshotId}) differs at byte ${at}`);
          await rm(path, { force: true });
        }
        snapshotRestores.push({
          generation: step.generation,
          volumes: r.volumes.length,
          volumesIdentical: r.volumes.length - mismatches.length,
          blocksWritten: r.volumes.reduce((a, v) => a + v.blocksWritten, 0),
          parents: Object.fromEntries(
            r.volumes.flatMap((v) => (v.parentSnapshotId ? [[v.volumeId, v.parentSnapshotId]] : [])),
          ),
          snapshots: r.volumes.map((v) => v.snapshotId),
          mismatches,
        });
        if (mismatches.length)
          problems.push(`snapshots of generation ${step.generation}: ${mismatches.join(", ")}`);
      }
    } finally {
      writerClient.destroy();
    }
    let reportPath: string | undefined;
    if (options.reportPath) {
      const { mkdir } = await import("node:fs/promises");
      const { dirname } = await import("node:path");
      const { writeReport } = await import("../cli/commands/report-run.ts");
      await mkdir(dirname(options.reportPath), { recursive: true });
      reportPath = (
        await writeReport(repo, options.reportPath, { rpoTargetMinutes: config.alarms.rpoMinutes })
      ).path;
      log(`report: ${reportPath}`);
    }
    return {
      ok: problems.length === 0,
      backups,
      restores,
      snapshotRestores,
      headAfterFailure: head,
      problems,
      stateDir: base,
      ...(reportPath ? { reportPath } : {}),
    };
  } finally {
    deps.close();
    clients.destroy();
    await stack.stop();
    if (!options.keep && !options.stateDir) await rm(base, { recursive: true, force: true });
  }
}
