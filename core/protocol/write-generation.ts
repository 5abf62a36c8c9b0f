import { InvalidArgumentError, LockHeldError } from "../errors.ts";
import type { BlockRef, IndexEntry } from "../format/block-ref.ts";
import { ZERO_REF } from "../format/block-ref.ts";
import { BLOCK_SIZE, equalBytes } from "../format/bytes.ts";
import { GroupDedup } from "../format/dedup-index.ts";
import type { GenerationManifest } from "../format/generation.ts";
import { type IndexRunWriterOptions, type RunInfo, writeRun } from "../format/index-run.ts";
import { keys, type Repo } from "../format/layout.ts";
import {
  type DedupLookup,
  SegmentWriter,
  type SegmentWriterOptions,
  type SegmentWriterStats,
} from "../format/segment.ts";
import {
  type CompactionPolicy,
  openVolumeIndex,
  type PreparedVolume,
  prepareVolume,
  type VolumeIndex,
} from "../format/volume-index.ts";
import {
  assertFenced,
  type CommitResult,
  type CommitVolume,
  cleanupRun,
  commitGeneration,
  fenceHead,
  type Lease,
  recoverRun,
} from "./commit.ts";
import { acquireLock, releaseLock } from "./lock.ts";

/** One changed block: its new content, or null when it became zero / was trimmed. */
export interface BlockWrite {
  readonly block: number;
  readonly data: Uint8Array | null;
  /** Checksum the source reported (GetSnapshotBlock); verified when given. */
  readonly sha256?: Uint8Array;
}

export interface TransferShardOptions {
  readonly runId: string;
  readonly volumeId: string;
  readonly shard: number;
  /** Blocks of this volume (any order; a later write of the same block wins). */
  readonly blocks: Iterable<BlockWrite> | AsyncIterable<BlockWrite>;
  /** Volume size; blocks beyond it are refused. */
  readonly sizeBytes: number;
  readonly segments?: Omit<SegmentWriterOptions, "repo" | "dedup">;
  /** Group-level dedup by hash. @default none (still dedups within the shard) */
  readonly dedup?: DedupLookup;
  /** The committed index of the volume: a block whose content did not change is not recorded again. */
  readonly previous?: VolumeIndex;
  readonly runOptions?: IndexRunWriterOptions;
}

export interface ShardResult {
  readonly volumeId: string;
  readonly shard: number;
  /** The shard's (block → ref) run under `runs/<runId>/shards/`, input to `prepareVolume`. */
  readonly run: RunInfo;
  readonly stats: SegmentWriterStats & { unchangedBlocks: number };
}

/**
 * Transfer (one shard of one volume): packs blocks into segments, uploads them, then writes the
 * shard's sorted (block → ref) run. Safe to re-run: a re-run writes new segments and overwrites the
 * shard result; the old segments become unreferenced garbage.
 */
export async function transferShard(repo: Repo, options: TransferShardOptions): Promise<ShardResult> {
  const blockCount = options.sizeBytes / BLOCK_SIZE;
  const writer = new SegmentWriter({
    ...options.segments,
    repo,
    ...(options.dedup ? { dedup: options.dedup } : {}),
  });
  const refs = new Map<number, BlockRef>();
  let unchanged = 0;
  for await (const w of options.blocks) {
    if (!Number.isInteger(w.block) || w.block < 0 || w.block >= blockCount) {
      throw new InvalidArgumentError(
        `block ${w.block} is outside volume ${options.volumeId} of ${blockCount} blocks`,
      );
    }
    const ref = w.data === null ? ZERO_REF : await writer.add(w.data, w.sha256);
    if (options.previous && w.data !== null) {
      const before = await options.previous.lookup(w.block);
      if (before && equalBytes(before.sha256, ref.sha256)) {
        unchanged++;
        refs.delete(w.block);
        continue;
      }
    }
    refs.set(w.block, ref);
  }
  await writer.close();
  const entries: IndexEntry[] = [...refs.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([block, ref]) => ({ block, ref }));
  const run = await writeRun(
    repo.store,
    keys.shardResult(repo, options.runId, options.volumeId, options.shard),
    entries,
    {
      ...options.runOptions,
      metadata: { "cgmirror-run-id": options.runId },
    },
  );
  return {
    volumeId: options.volumeId,
    shard: options.shard,
    run,
    stats: { ...writer.stats, unchangedBlocks: unchanged },
  };
}

export interface VolumeWrites {
  readonly volumeId: string;
  readonly sizeBytes: number;
  readonly sourceSnapshotId?: string | null;
  readonly blocks: Iterable<BlockWrite> | AsyncIterable<BlockWrite>;
}

export interface WriteGenerationOptions {
  readonly runId: string;
  readonly volumes: readonly VolumeWrites[];
  /** @default now */
  readonly pointInTime?: Date;
  readonly segments?: Omit<SegmentWriterOptions, "repo" | "dedup">;
  readonly policy?: CompactionPolicy;
  readonly runOptions?: IndexRunWriterOptions;
  /** A lease this caller already holds (and fenced). @default acquire the lock, recover, release after */
  readonly lease?: Lease;
  /** Stop after Prepare (leave the run revertible; the lock stays held). @default true */
  readonly commit?: boolean;
  /** Lock lease when this call acquires the lock. @default 1 hour */
  readonly lockTtlMs?: number;
  /** The clock reading the lease starts from (tests: a lease that expired already). @default now */
  readonly lockNow?: Date;
}

export interface WriteGenerationResult {
  readonly generation: number;
  readonly fencing: number;
  readonly dedup: GroupDedup["stats"];
  readonly prepared: readonly PreparedVolume[];
  readonly shards: readonly ShardResult[];
  readonly commit: CommitResult | undefined;
}

/**
 * Backs up one generation in one process, through the same protocol the workflow runs as separate
 * tasks: AcquireLock → Recover (fence) → Transfer (one shard per volume) → Prepare every volume →
 * Commit → cleanup → ReleaseLock. Volumes of the committed generation not named in `volumes` are
 * carried over unchanged. Used by tests, benchmarks and small groups.
 * @throws LockHeldError when another live run holds the group's lock
 */
export async function writeGeneration(
  repo: Repo,
  options: WriteGenerationOptions,
): Promise<WriteGenerationResult> {
  let lease = options.lease;
  if (!lease) {
    const got = await acquireLock(repo, {
      runId: options.runId,
      ttlMs: options.lockTtlMs ?? 3_600_000,
      ...(options.lockNow ? { now: options.lockNow } : {}),
    });
    if (!got.acquired) throw new LockHeldError(keys.lock(repo), got.holderRunId, got.expiresAt);
    lease = { runId: options.runId, fencing: got.lease.fencing };
    await recoverRun(repo, {
      ...lease,
      ...(got.takenOverFrom ? { deadRunId: got.takenOverFrom } : {}),
      volumeIds: options.volumes.map((v) => v.volumeId),
    });
  }
  const { committed: manifest } = await fenceHead(repo, lease);
  const committed: GenerationManifest | undefined = manifest;
  const generation = (committed?.generation ?? 0) + 1;
  // Group-wide dedup: every block the committed generation stores, plus what this attempt uploaded.
  const dedup = await GroupDedup.open(repo, committed);
  const session = dedup.session();
  const prepared: PreparedVolume[] = [];
  const shards: ShardResult[] = [];
  const commitVolumes: CommitVolume[] = [];
  for (const v of options.volumes) {
    const prev = committed?.volumes.find((x) => x.volumeId === v.volumeId);
    const previous = prev ? await openVolumeIndex(repo, v.volumeId, prev.index) : undefined;
    const shard = await transferShard(repo, {
      runId: options.runId,
      volumeId: v.volumeId,
      shard: 0,
      blocks: v.blocks,
      sizeBytes: v.sizeBytes,
      dedup: session,
      ...(options.segments ? { segments: options.segments } : {}),
      ...(previous ? { previous } : {}),
      ...(options.runOptions ? { runOptions: options.runOptions } : {}),
    });
    shards.push(shard);
    await assertFenced(repo, lease);
    const p = await prepareVolume(repo, {
      volumeId: v.volumeId,
      runId: options.runId,
      fencing: lease.fencing,
      generation,
      sizeBytes: v.sizeBytes,
      changes: [shard.run],
      previous: prev?.index ?? null,
      ...(options.policy ? { policy: options.policy } : {}),
      ...(options.runOptions ? { runOptions: options.runOptions } : {}),
    });
    prepared.push(p);
    commitVolumes.push({
      volumeId: v.volumeId,
      sizeBytes: v.sizeBytes,
      sourceSnapshotId: v.sourceSnapshotId ?? null,
      index: { versionId: p.versionId ?? null, sha256: p.sha256 },
      stats: {
        changedBlocks: shard.stats.blocks,
        storedBlocks: shard.stats.storedBlocks,
        zeroBlocks: shard.stats.zeroBlocks,
        dedupedBlocks: shard.stats.dedupedBlocks,
        storedBytes: shard.stats.storedBytes,
        indexBytesWritten: p.reused ? 0 : p.root.writtenBytes,
      },
    });
  }
  for (const v of committed?.volumes ?? []) {
    if (options.volumes.some((x) => x.volumeId === v.volumeId)) continue;
    commitVolumes.push({ ...v, stats: {} });
  }
  const base = { generation, fencing: lease.fencing, dedup: dedup.stats, prepared, shards };
  if (options.commit === false) return { ...base, commit: undefined };
  const commit = await commitGeneration(repo, {
    ...lease,
    generation,
    pointInTime: options.pointInTime ?? new Date(),
    volumes: commitVolumes,
  });
  await cleanupRun(repo, options.runId);
  if (!options.lease) await releaseLock(repo, lease);
  return { ...base, commit };
}
