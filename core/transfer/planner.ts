/**
 * Plan: the changed blocks of one volume between its base snapshot and the new one, split into
 * shards that one Lambda run can transfer (docs/transfer.md, "Planner").
 *
 * Streams listing pages straight into shard lists: memory is one shard list (~1–2 bytes a block)
 * plus a few uploads in flight, whatever the volume size. Each shard list goes to S3
 * (`planKeys.shardList`); the function returns small descriptors, or — when they would not fit a
 * Step Functions payload — only totals and the key of a JSON array of them (`planKeys.shardIndex`).
 */

import { InvalidArgumentError } from "../errors.ts";
import { BLOCK_SIZE } from "../format/bytes.ts";
import { assertName, assertRunId, type Repo } from "../format/layout.ts";
import type { BlockSource } from "../ports/block-source.ts";
import { type RetryOptions, retrySource } from "./errors.ts";
import { planKeys, ShardListBuilder } from "./shard-list.ts";

/** Blocks in one shard by default: 5 minutes at 50 MiB/s = 15,000 MiB = 30,000 blocks of 512 KiB. */
export const DEFAULT_SHARD_BLOCKS = 30_000;
/** Largest page the EBS List APIs give. */
export const MAX_LIST_RESULTS = 10_000;
/** Inline descriptors up to this many JSON bytes per volume; above, only the shard index key. */
export const DEFAULT_MAX_INLINE_BYTES = 64 * 1024;

/** One Map item: everything the transfer worker needs besides the run id and the repository. */
export interface ShardDescriptor {
  readonly volumeId: string;
  readonly snapshotId: string;
  /** null for the first generation (ListSnapshotBlocks). */
  readonly baseSnapshotId: string | null;
  readonly shard: number;
  /** Block range [first, end) the shard covers. */
  readonly first: number;
  readonly end: number;
  /** Entries in the shard list (blocks to read + absent ones). */
  readonly blocks: number;
}

export interface PlanVolumeInput {
  readonly runId: string;
  readonly volumeId: string;
  readonly snapshotId: string;
  /** The previous generation's snapshot of this volume; null/absent for the first generation. */
  readonly baseSnapshotId?: string | null;
  /** @default DEFAULT_SHARD_BLOCKS (30,000) */
  readonly shardBlocks?: number;
  /** List page size, 100..10000. @default 10000 */
  readonly pageSize?: number;
  /** @default DEFAULT_MAX_INLINE_BYTES (64 KiB) */
  readonly maxInlineBytes?: number;
  /** Shard list uploads in flight while listing continues. @default 4 */
  readonly uploadConcurrency?: number;
}

export interface PlanTotals {
  /** Changed (or, first generation, written) blocks listed. */
  readonly changedBlocks: number;
  /** Of those, blocks the new snapshot does not hold (restored as zeros, not read). */
  readonly absentBlocks: number;
  /** Blocks the workers read: changedBlocks - absentBlocks. */
  readonly readBlocks: number;
  readonly readBytes: number;
  readonly shards: number;
  readonly listPages: number;
  readonly emptyPages: number;
}

export interface PlanVolumeResult {
  readonly volumeId: string;
  readonly snapshotId: string;
  readonly baseSnapshotId: string | null;
  readonly volumeSizeBytes: number;
  readonly totals: PlanTotals;
  /** Inline descriptors, or null when they exceed maxInlineBytes: read `shardIndexKey` instead. */
  readonly shards: ShardDescriptor[] | null;
  /** JSON array of every descriptor (always written). */
  readonly shardIndexKey: string;
  /** The plan manifest (JSON): this result with the descriptors. */
  readonly manifestKey: string;
}

export interface PlanDeps {
  readonly repo: Repo;
  readonly source: BlockSource;
  readonly retry?: RetryOptions;
}

const SNAPSHOT = /^snap-[0-9a-zA-Z]{1,64}$/;

function assertSnapshotId(what: string, value: unknown): void {
  if (typeof value !== "string" || !SNAPSHOT.test(value)) {
    throw new InvalidArgumentError(
      `expected ${what} like snap-0123456789abcdef0, got ${JSON.stringify(value)}`,
    );
  }
}

function assertInt(what: string, value: number, lo: number, hi: number): void {
  if (!Number.isInteger(value) || value < lo || value > hi) {
    throw new InvalidArgumentError(`expected ${what} as an integer in ${lo}..${hi}, got ${value}`);
  }
}

/** Plans one volume. Idempotent: re-planning the same run overwrites the same keys with the same bytes. */
export async function planVolume(deps: PlanDeps, input: PlanVolumeInput): Promise<PlanVolumeResult> {
  const { repo, source } = deps;
  assertRunId(input.runId);
  assertName("volume id", input.volumeId);
  assertSnapshotId("snapshotId", input.snapshotId);
  const base = input.baseSnapshotId ?? null;
  if (base !== null) assertSnapshotId("baseSnapshotId", base);
  const shardBlocks = input.shardBlocks ?? DEFAULT_SHARD_BLOCKS;
  assertInt("shardBlocks", shardBlocks, 1, 10_000_000);
  const pageSize = input.pageSize ?? MAX_LIST_RESULTS;
  assertInt("pageSize", pageSize, 100, MAX_LIST_RESULTS);
  const maxInline = input.maxInlineBytes ?? DEFAULT_MAX_INLINE_BYTES;
  const uploadConcurrency = input.uploadConcurrency ?? 4;
  assertInt("uploadConcurrency", uploadConcurrency, 1, 64);

  const descriptors: ShardDescriptor[] = [];
  const uploads = new Set<Promise<void>>();
  let uploadError: unknown;
  let builder: ShardListBuilder | undefined;
  let changed = 0;
  let absent = 0;
  let pages = 0;
  let emptyPages = 0;
  let volumeSizeBytes = 0;

  const flush = async (end: number): Promise<void> => {
    const b = builder;
    if (!b || b.count === 0) return;
    builder = undefined;
    const shard = descriptors.length;
    descriptors.push({
      volumeId: input.volumeId,
      snapshotId: input.snapshotId,
      baseSnapshotId: base,
      shard,
      first: b.first,
      end,
      blocks: b.count,
    });
    const bytes = b.encode(end);
    const p = repo.store
      .put(planKeys.shardList(repo, input.runId, input.volumeId, shard), bytes, {
        contentType: "application/octet-stream",
        metadata: { "cgmirror-kind": "shard-list" },
      })
      .then(
        () => {
          uploads.delete(p);
        },
        (error: unknown) => {
          uploads.delete(p);
          uploadError ??= error;
        },
      );
    uploads.add(p);
    while (uploads.size >= uploadConcurrency) await Promise.race(uploads);
    if (uploadError) throw uploadError;
  };

  let nextToken: string | undefined;
  let last = -1;
  do {
    const token = nextToken;
    const page = await retrySource(
      base ? "ListChangedBlocks" : "ListSnapshotBlocks",
      () =>
        source.listBlocks({
          snapshotId: input.snapshotId,
          baseSnapshotId: base ?? undefined,
          maxResults: pageSize,
          ...(token ? { nextToken: token } : {}),
        }),
      deps.retry,
    );
    pages++;
    if (page.volumeSizeBytes > 0) volumeSizeBytes = page.volumeSizeBytes;
    if (page.blocks.length === 0) emptyPages++;
    for (const b of page.blocks) {
      if (b.index <= last) {
        throw new InvalidArgumentError(
          `the listing of ${input.snapshotId} went back from block ${last} to ${b.index}; it must ascend`,
        );
      }
      if (builder && builder.count >= shardBlocks) await flush(b.index);
      builder ??= new ShardListBuilder(b.index);
      builder.add(b.index, b.token === undefined);
      changed++;
      if (b.token === undefined) absent++;
      last = b.index;
    }
    nextToken = page.nextToken;
  } while (nextToken);
  await flush(last + 1);
  await Promise.all(uploads);
  if (uploadError) throw uploadError;

  const readBlocks = changed - absent;
  const totals: PlanTotals = {
    changedBlocks: changed,
    absentBlocks: absent,
    readBlocks,
    readBytes: readBlocks * BLOCK_SIZE,
    shards: descriptors.length,
    listPages: pages,
    emptyPages,
  };
  const shardIndexKey = planKeys.shardIndex(repo, input.runId, input.volumeId);
  const manifestKey = planKeys.manifest(repo, input.runId, input.volumeId);
  const json = JSON.stringify(descriptors);
  await repo.store.put(shardIndexKey, new TextEncoder().encode(json), { contentType: "application/json" });
  const result: PlanVolumeResult = {
    volumeId: input.volumeId,
    snapshotId: input.snapshotId,
    baseSnapshotId: base,
    volumeSizeBytes,
    totals,
    shards: json.length <= maxInline ? descriptors : null,
    shardIndexKey,
    manifestKey,
  };
  const manifest = {
    format: "cgmirror.plan",
    version: "1.0",
    runId: input.runId,
    shardBlocks,
    createdAt: new Date().toISOString(),
    ...result,
    shards: descriptors,
  };
  await repo.store.put(manifestKey, new TextEncoder().encode(`${JSON.stringify(manifest)}\n`), {
    contentType: "application/json",
  });
  return result;
}

/** Reads every descriptor of a planned volume (when `planVolume` returned `shards: null`). */
export async function readShardIndex(
  repo: Repo,
  runId: string,
  volumeId: string,
): Promise<ShardDescriptor[]> {
  const got = await repo.store.get(planKeys.shardIndex(repo, runId, volumeId));
  return JSON.parse(new TextDecoder().decode(got.body)) as ShardDescriptor[];
}
