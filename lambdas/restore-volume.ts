/**
 * RestoreVolume (the restore workflow, workflows/restore.ts): restore a generation into one new EBS
 * snapshot per volume (core/restore/restore-snapshots.ts), in four steps chosen by `op`:
 *
 * - `prepare`: resolves the generation (HEAD's when not given) and the volumes, chooses each
 *   volume's parent snapshot (given, or found among the snapshots cgmirror knows), and takes the
 *   restore's read lease on the generations it reads (core/protocol/read-lease.ts: forget and prune
 *   keep them while it lives).
 * - `volume`: renews the lease, then writes the blocks of one volume from its cursor on, until the
 *   work is done or its time is nearly up (`done: false` with the cursor: the workflow invokes it
 *   again; StartSnapshot's client token gives the same snapshot back). Manifests are read as the lease
 *   pins them.
 * - `finalize`: every snapshot exists and none is in state `error` (else the restore fails); releases
 *   the lease.
 * - `cleanup`: after any failure, releases the lease and deletes every snapshot tagged with the restore
 *   id (all or nothing).
 */
import { InvalidArgumentError } from "#core/errors.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { readCommittedManifest, readGeneration } from "#core/format/generation.ts";
import type { SnapshotWriter } from "#core/ports/snapshot-writer.ts";
import {
  readPinnedGeneration,
  releaseReadLease,
  renewReadLease,
  takeReadLease,
} from "#core/protocol/read-lease.ts";
import {
  chooseParents,
  deleteRestoreSnapshots,
  describeCleanup,
  restoreVolumeToSnapshot,
} from "#core/restore/restore-snapshots.ts";
import { LIFECYCLE_TASKS, RESTORE_STOP_MARGIN_SECONDS } from "#workflows/lifecycle-tasks.ts";
import { awsDeps } from "./aws-deps.ts";
import {
  type RestoreFinalizeOutputT,
  type RestoreStepOutputT,
  RestoreVolumeInput,
  type RestoreVolumeInputT,
  RestoreVolumeOutput,
} from "./contracts.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { repoOf } from "./shared.ts";

/** Metric names (with the Group dimension). */
export const RESTORE_METRICS = { bytesWritten: "RestoreBytesWritten" } as const;

function writerOf(deps: TaskDeps): SnapshotWriter {
  if (!deps.snapshotWriter) throw new Error("these task dependencies have no snapshot writer");
  return deps.snapshotWriter();
}

type Op<K extends RestoreVolumeInputT["op"]> = Extract<RestoreVolumeInputT, { op: K }>;

async function prepare(input: Op<"prepare">, deps: TaskDeps) {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  const manifest =
    input.generation !== null
      ? await readGeneration(repo, input.generation)
      : await readCommittedManifest(repo);
  if (!manifest) throw new InvalidArgumentError(`group ${config.group} has no committed generation`);
  const all = manifest.volumes.map((v) => v.volumeId);
  const volumeIds = input.volumes ?? all;
  for (const id of volumeIds) {
    if (!all.includes(id)) {
      throw new InvalidArgumentError(
        `generation ${manifest.generation} has no volume ${id}; it has ${all.join(", ")}`,
      );
    }
  }
  const parents = await chooseParents(
    repo,
    writerOf(deps),
    manifest,
    volumeIds,
    input.parents ?? {},
    input.autoParent,
  );
  // From here on forget and prune keep what these generations reach (docs/format.md §10.2).
  await takeReadLease(repo, {
    restoreId: input.restoreId,
    generations: [manifest.generation, ...[...parents.values()].map((p) => p.generation)],
    now: deps.clock.now(),
  });
  return {
    restoreId: input.restoreId,
    generation: manifest.generation,
    pointInTime: manifest.pointInTime,
    items: volumeIds.map((volumeId) => {
      const p = parents.get(volumeId);
      return {
        volumeId,
        parent: p ? { snapshotId: p.snapshotId, generation: p.generation } : null,
        resume: null,
      };
    }),
  };
}

async function step(input: Op<"volume">, deps: TaskDeps): Promise<RestoreStepOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  const started = deps.clock.now();
  const budgetMs =
    deps.restoreOptions?.budgetMs ??
    (LIFECYCLE_TASKS.RestoreVolume.timeoutSeconds - RESTORE_STOP_MARGIN_SECONDS) * 1000;
  // The lease keeps the data; the manifests are read as the lease pins them (a forget may have
  // removed the commit records since).
  const lease = await renewReadLease(repo, input.restoreId, deps.clock.now());
  const readManifest = (n: number) => {
    const pin = lease.generations.find((p) => p.generation === n);
    if (!pin) throw new Error(`the read lease of restore ${input.restoreId} does not pin generation ${n}`);
    return readPinnedGeneration(repo, pin, input.restoreId);
  };
  const manifest = await readManifest(input.generation);
  const r = await restoreVolumeToSnapshot(repo, writerOf(deps), {
    manifest,
    readManifest,
    volumeId: input.volumeId,
    restoreId: input.restoreId,
    parent: input.parent ? { ...input.parent, source: "given" } : undefined,
    resume: input.resume ?? undefined,
    shouldStop: () => deps.clock.now() - started >= budgetMs,
    ...(deps.restoreOptions?.batchBlocks ? { batchBlocks: deps.restoreOptions.batchBlocks } : {}),
  });
  if (r.done && r.status === "error") {
    throw new Error(`snapshot ${r.snapshotId} of ${r.volumeId} ended in state error`);
  }
  deps.metrics.add(
    config.group,
    RESTORE_METRICS.bytesWritten,
    "Bytes",
    r.bytesWritten - (input.resume?.bytesWritten ?? 0),
  );
  deps.log.info(r.done ? "volume restored" : "volume restore continues", {
    volumeId: r.volumeId,
    snapshotId: r.snapshotId,
    cursor: r.cursor,
    blocksWritten: r.blocksWritten,
  });
  return {
    done: r.done,
    volumeId: r.volumeId,
    state: {
      snapshotId: r.snapshotId,
      cursor: r.cursor,
      blocksWritten: r.blocksWritten,
      bytesWritten: r.bytesWritten,
    },
    status: r.status,
    parentSnapshotId: r.parentSnapshotId,
    parentGeneration: r.parentGeneration,
  };
}

async function finalize(input: Op<"finalize">, deps: TaskDeps): Promise<RestoreFinalizeOutputT> {
  const writer = writerOf(deps);
  const snapshots: RestoreFinalizeOutputT["snapshots"] = [];
  for (const v of input.volumes) {
    const d = await writer.describeSnapshot(v.state.snapshotId);
    if (!v.done || !d || d.status === "error") {
      throw new Error(
        `snapshot ${v.state.snapshotId} of ${v.volumeId} is ${!v.done ? "not complete" : (d?.status ?? "missing")}`,
      );
    }
    snapshots.push({
      volumeId: v.volumeId,
      snapshotId: v.state.snapshotId,
      status: d.status,
      blocksWritten: v.state.blocksWritten,
      // bytesWritten counts data blocks only: the rest were zeros.
      zeroBlocks: v.state.blocksWritten - Math.round(v.state.bytesWritten / BLOCK_SIZE),
      parentSnapshotId: v.parentSnapshotId,
      parentGeneration: v.parentGeneration,
    });
  }
  // The restore is done: its lease goes (else it expires; a failure here must not fail the restore).
  await releaseReadLease(repoOf(groupConfig(input.config), deps), input.restoreId).catch((error: unknown) =>
    deps.log.warn("the restore's read lease could not be released; it expires", {
      error: String(error),
    }),
  );
  return { restoreId: input.restoreId, generation: input.generation, snapshots };
}

async function cleanup(input: Op<"cleanup">, deps: TaskDeps) {
  await releaseReadLease(repoOf(groupConfig(input.config), deps), input.restoreId).catch((error: unknown) =>
    deps.log.warn("the restore's read lease could not be released; it expires", {
      error: String(error),
    }),
  );
  const { deleted, left } = await deleteRestoreSnapshots(writerOf(deps), input.restoreId);
  const why = cause(input.error);
  const message = `restore ${input.restoreId} failed (${why}); ${describeCleanup(input.restoreId, deleted, left)}`;
  deps.log.warn("restore failed; its snapshots were deleted", { deleted, left, error: input.error.Error });
  // A Fail state's cause is at most 32,768 characters; keep it far below.
  return { deleted, left, message: message.length > 4000 ? `${message.slice(0, 4000)}…` : message };
}

/** The readable part of a Catch's error: the Lambda error object's message, else the raw cause. */
function cause(error: { Error: string; Cause?: string | undefined }): string {
  try {
    const c = JSON.parse(error.Cause ?? "") as { errorType?: string; errorMessage?: string };
    if (c.errorMessage) return `${c.errorType ?? error.Error}: ${c.errorMessage}`;
  } catch {
    // not JSON: the cause as it is
  }
  return error.Cause ? `${error.Error}: ${error.Cause}` : error.Error;
}

export async function restoreVolumeTask(input: RestoreVolumeInputT, deps: TaskDeps) {
  switch (input.op) {
    case "prepare":
      return prepare(input, deps);
    case "volume":
      return step(input, deps);
    case "finalize":
      return finalize(input, deps);
    case "cleanup":
      return cleanup(input, deps);
  }
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("RestoreVolume", RestoreVolumeInput, RestoreVolumeOutput, restoreVolumeTask, deps);
export const handler = makeHandler(awsDeps);
