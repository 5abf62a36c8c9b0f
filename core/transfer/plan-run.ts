/**
 * A run's plan, resumable (docs/transfer.md, "Resumable planning"): the volumes are planned one after
 * the other, each by `planVolumeStep`; an invocation that nears its deadline stops at a shard
 * boundary, writes a plan cursor and answers `done: false`, and the next invocation goes on from it.
 *
 * The cursor is a sealed metadata object (`cgmirror.plan-cursor`) under
 * `runs/<runId>/plan/cursors/<sequence:4>-<sha256:16>.json`: its key carries its own digest, so two
 * invocations of the same step (a retry beside a zombie) never overwrite each other's cursor with other
 * bytes, and the state machine carries only `{key, sha256}`. It holds the decisions the first
 * invocation made (each volume's base snapshot, the shard size), the finished volumes' results and the
 * current volume's position. The shard lists themselves are deterministic (cut by count from a
 * boundary, from a listing of two completed snapshots), so a duplicate invocation writes the same
 * bytes under the same keys.
 */
import { z } from "zod";
import { InvalidArgumentError } from "../errors.ts";
import { keys, type Repo } from "../format/layout.ts";
import { openMetadata, Sha256Hex, sealMetadata } from "../format/metadata.ts";
import type { BlockSource } from "../ports/block-source.ts";
import { countBlocksUpTo, shardBlocksFor } from "./concurrency.ts";
import { PlanStalledError, PlanTooLargeError, type RetryOptions } from "./errors.ts";
import { type PlanVolumeResult, planVolumeStep } from "./planner.ts";

/** A volume to plan, its base decided (null: a full copy). */
export interface PlanRunVolume {
  readonly volumeId: string;
  readonly snapshotId: string;
  readonly baseSnapshotId: string | null;
}

export interface PlanRunInput {
  readonly runId: string;
  readonly volumes: readonly PlanRunVolume[];
  /** The configured shard size (a small change set is cut finer, `shardBlocksFor`). */
  readonly shardBlocks: number;
  /** Shards per volume the quotas feed (`targetShardsPerVolume`). */
  readonly targetShards: number;
  /** More shards than this over all volumes fail the plan (PlanTooLargeError). */
  readonly maxShards: number;
  /** List page size. @default 10,000 */
  readonly pageSize?: number;
}

export interface PlanRunDeps {
  readonly repo: Repo;
  readonly source: BlockSource;
  readonly retry?: RetryOptions;
  /** Milliseconds this invocation has left; absent: never stop early. */
  readonly remainingMs?: () => number;
  /** Stop (at a shard boundary) once less than this is left. @default 120,000 */
  readonly stopBeforeDeadlineMs?: number;
}

/** A plan cursor as the state machine carries it. */
export interface PlanCursorRef {
  readonly key: string;
  readonly sha256: string;
}

export type PlanRunStep =
  | { readonly done: true; readonly volumes: readonly PlanVolumeResult[] }
  | {
      readonly done: false;
      readonly cursor: PlanCursorRef;
      /** Shards written so far, over all volumes. */
      readonly shards: number;
      /** Volumes planned completely so far. */
      readonly volumesDone: number;
      readonly sequence: number;
    };

const Descriptor = z.strictObject({
  volumeId: z.string(),
  snapshotId: z.string(),
  baseSnapshotId: z.string().nullable(),
  shard: z.number().int().nonnegative(),
  first: z.number().int().nonnegative(),
  end: z.number().int().positive(),
  blocks: z.number().int().positive(),
});
const count = z.number().int().nonnegative();
const Totals = z.strictObject({
  changedBlocks: count,
  absentBlocks: count,
  readBlocks: count,
  readBytes: count,
  shards: count,
  listPages: count,
  emptyPages: count,
});
const CursorSchema = z.object({
  runId: z.string(),
  sequence: z.number().int().positive(),
  volumes: z.array(
    z.strictObject({ volumeId: z.string(), snapshotId: z.string(), baseSnapshotId: z.string().nullable() }),
  ),
  shardBlocks: z.number().int().positive(),
  targetShards: z.number().int().positive(),
  maxShards: z.number().int().positive(),
  pageSize: z.number().int().positive().optional(),
  /** The volumes planned completely, in order (their descriptors are in their shard index). */
  results: z.array(
    z.strictObject({
      volumeId: z.string(),
      snapshotId: z.string(),
      baseSnapshotId: z.string().nullable(),
      volumeSizeBytes: count,
      totals: Totals,
      shards: z.null(),
      shardIndexKey: z.string(),
      manifestKey: z.string(),
    }),
  ),
  /** The volume being planned (the next after `results`), null before its shard size is decided. */
  current: z
    .strictObject({
      volumeId: z.string(),
      shardBlocks: z.number().int().positive(),
      startingBlockIndex: count,
      descriptors: z.array(Descriptor),
      changedBlocks: count,
      absentBlocks: count,
      listPages: count,
      emptyPages: count,
      volumeSizeBytes: count,
    })
    .nullable(),
});
type Cursor = z.infer<typeof CursorSchema>;

/** Where a run's plan cursors live. */
export function planCursorsPrefix(repo: Repo, runId: string): string {
  return `${keys.runPrefix(repo, runId)}plan/cursors/`;
}

function planCursorKey(repo: Repo, runId: string, sequence: number, sha256: string): string {
  return `${planCursorsPrefix(repo, runId)}${String(sequence).padStart(4, "0")}-${sha256.slice(0, 16)}.json`;
}

/** Opens the cursor the state machine handed over: this run's, pinned by its SHA-256. */
export async function readPlanCursor(repo: Repo, runId: string, ref: PlanCursorRef): Promise<Cursor> {
  const prefix = planCursorsPrefix(repo, runId);
  if (typeof ref?.key !== "string" || !ref.key.startsWith(prefix)) {
    throw new InvalidArgumentError(
      `expected a plan cursor key under ${prefix}, got ${JSON.stringify(ref?.key)}; pass the cursor the previous Plan of this run returned`,
    );
  }
  if (!Sha256Hex.safeParse(ref.sha256).success) {
    throw new InvalidArgumentError(
      `expected the plan cursor's sha256 as 64 hex digits, got ${JSON.stringify(ref.sha256)}`,
    );
  }
  const got = await repo.store.get(ref.key);
  const cursor = openMetadata(
    got.body,
    "cgmirror.plan-cursor",
    CursorSchema,
    ref.key,
    got.versionId,
    ref.sha256,
  ).value;
  if (cursor.runId !== runId) {
    throw new InvalidArgumentError(`the plan cursor ${ref.key} belongs to run ${cursor.runId}, not ${runId}`);
  }
  return cursor;
}

async function writePlanCursor(repo: Repo, cursor: Cursor): Promise<PlanCursorRef> {
  const sealed = sealMetadata("cgmirror.plan-cursor", cursor);
  const key = planCursorKey(repo, cursor.runId, cursor.sequence, sealed.sha256);
  await repo.store.put(key, sealed.bytes, { contentType: "application/json" });
  return { key, sha256: sealed.sha256 };
}

function shardsOf(c: Pick<Cursor, "results" | "current">): number {
  return c.results.reduce((n, r) => n + r.totals.shards, 0) + (c.current?.descriptors.length ?? 0);
}

/**
 * One invocation's part of a run's plan: from the start (`input`) or from a cursor (`resume`), until
 * every volume is planned or less than `stopBeforeDeadlineMs` is left. Stopped, it writes a cursor at
 * the last shard boundary and returns its ref; an invocation that got nowhere (no shard, no shard size
 * decided) fails with PlanStalledError instead of looping for ever.
 */
export async function planRunStep(
  deps: PlanRunDeps,
  start: { readonly input: PlanRunInput } | { readonly runId: string; readonly resume: PlanCursorRef },
): Promise<PlanRunStep> {
  const reserve = deps.stopBeforeDeadlineMs ?? 120_000;
  if (!(Number.isFinite(reserve) && reserve >= 0)) {
    throw new InvalidArgumentError(`expected stopBeforeDeadlineMs >= 0, got ${reserve}`);
  }
  const remaining = deps.remainingMs;
  const shouldStop = remaining ? () => remaining() < reserve : undefined;
  const from: Cursor =
    "resume" in start
      ? await readPlanCursor(deps.repo, start.runId, start.resume)
      : {
          runId: start.input.runId,
          sequence: 1,
          volumes: start.input.volumes.map((v) => ({ ...v })),
          shardBlocks: start.input.shardBlocks,
          targetShards: start.input.targetShards,
          maxShards: start.input.maxShards,
          ...(start.input.pageSize !== undefined ? { pageSize: start.input.pageSize } : {}),
          results: [],
          current: null,
        };
  const results = [...from.results];
  let current = from.current;
  let stopped = false;
  for (let i = results.length; i < from.volumes.length; i++) {
    const v = from.volumes[i]!;
    if (current !== null && current.volumeId !== v.volumeId) {
      throw new InvalidArgumentError(
        `the plan cursor is at ${current.volumeId}, the next volume is ${v.volumeId}`,
      );
    }
    if (current === null) {
      if (shouldStop?.()) {
        stopped = true;
        break;
      }
      const budget = from.targetShards * from.shardBlocks;
      const counted = await countBlocksUpTo(deps.source, v, budget, deps.retry);
      current = {
        volumeId: v.volumeId,
        shardBlocks: shardBlocksFor(counted, from.shardBlocks, from.targetShards),
        startingBlockIndex: 0,
        descriptors: [],
        changedBlocks: 0,
        absentBlocks: 0,
        listPages: 0,
        emptyPages: 0,
        volumeSizeBytes: 0,
      };
    }
    const before = results.reduce((n, r) => n + r.totals.shards, 0);
    if (before >= from.maxShards) {
      throw new PlanTooLargeError(
        `the plan needs more than ${from.maxShards} shards of ${from.shardBlocks} blocks (the most a run passes on); ` +
          "raise transfer.shardBlocks in the group config",
      );
    }
    const step = await planVolumeStep(
      {
        repo: deps.repo,
        source: deps.source,
        ...(deps.retry ? { retry: deps.retry } : {}),
        ...(shouldStop ? { shouldStop } : {}),
      },
      {
        runId: from.runId,
        volumeId: v.volumeId,
        snapshotId: v.snapshotId,
        baseSnapshotId: v.baseSnapshotId,
        shardBlocks: current.shardBlocks,
        maxShards: from.maxShards - before,
        ...(from.pageSize !== undefined ? { pageSize: from.pageSize } : {}),
      },
      current,
    );
    if (!step.done) {
      current = { volumeId: v.volumeId, ...step.cursor, descriptors: [...step.cursor.descriptors] };
      stopped = true;
      break;
    }
    results.push({ ...step.result, shards: null });
    current = null;
  }
  if (!stopped) return { done: true, volumes: results };
  const next: Cursor = { ...from, sequence: from.sequence + 1, results, current };
  const progressed =
    "input" in start ||
    results.length > from.results.length ||
    (from.current === null) !== (current === null) ||
    shardsOf(next) > shardsOf(from);
  if (!progressed) {
    throw new PlanStalledError(
      `the plan of run ${from.runId} made no progress in one invocation: listing one shard of ` +
        `${current?.shardBlocks ?? from.shardBlocks} blocks of ${current?.volumeId ?? "the next volume"} takes longer ` +
        "than an invocation; lower transfer.shardBlocks in the group config or check the EBS List throttling",
    );
  }
  const cursor = await writePlanCursor(deps.repo, next);
  return {
    done: false,
    cursor,
    shards: shardsOf(next),
    volumesDone: results.length,
    sequence: next.sequence,
  };
}
