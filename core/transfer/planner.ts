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
import { PlanTooLargeError, type RetryOptions, retrySource } from "./errors.ts";
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
  /** More shards than this fail the plan (PlanTooLargeError). @default 999,999 */
  readonly maxShards?: number;
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

/** The input, checked, with its defaults. */
interface PlanOptions {
  readonly base: string | null;
  readonly shardBlocks: number;
  readonly pageSize: number;
  readonly maxInline: number;
  readonly uploadConcurrency: number;
  readonly maxShards: number;
}

function checkInput(input: PlanVolumeInput): PlanOptions {
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
  const maxShards = input.maxShards ?? 999_999;
  assertInt("maxShards", maxShards, 1, 999_999);
  return { base, shardBlocks, pageSize, maxInline, uploadConcurrency, maxShards };
}

/**
 * Cuts the listed blocks into shard lists and uploads each (a few in flight while listing goes on);
 * the first upload error fails the next block added or `finish`.
 */
class ShardWriter {
  readonly descriptors: ShardDescriptor[];
  readonly #repo: Repo;
  readonly #input: PlanVolumeInput;
  readonly #options: PlanOptions;
  readonly #uploads = new Set<Promise<void>>();
  #uploadError: unknown;
  #builder: ShardListBuilder | undefined;
  changed: number;
  absent: number;
  /**
   * The state at the last shard boundary: every shard before it is cut (its upload started), and the
   * listing resumes at `startingBlockIndex` (the first block of the next shard).
   */
  boundary: { startingBlockIndex: number; shards: number; changed: number; absent: number };

  constructor(repo: Repo, input: PlanVolumeInput, options: PlanOptions, resume?: PlanVolumeCursor) {
    this.#repo = repo;
    this.#input = input;
    this.#options = options;
    this.descriptors = resume ? [...resume.descriptors] : [];
    this.changed = resume?.changedBlocks ?? 0;
    this.absent = resume?.absentBlocks ?? 0;
    this.boundary = {
      startingBlockIndex: resume?.startingBlockIndex ?? 0,
      shards: this.descriptors.length,
      changed: this.changed,
      absent: this.absent,
    };
  }

  /** Adds the next listed block (`absent`: the new snapshot does not hold it). */
  async add(index: number, absent: boolean): Promise<void> {
    if (this.#builder && this.#builder.count >= this.#options.shardBlocks) {
      await this.#flush(index);
      this.boundary = {
        startingBlockIndex: index,
        shards: this.descriptors.length,
        changed: this.changed,
        absent: this.absent,
      };
    }
    this.#builder ??= new ShardListBuilder(index);
    this.#builder.add(index, absent);
    this.changed++;
    if (absent) this.absent++;
  }

  /** Uploads the last shard (ending at `end`) and waits for every upload. */
  async finish(end: number): Promise<void> {
    await this.#flush(end);
    await this.settle();
  }

  /** Waits for every upload started (the shards before `boundary` are then durable). */
  async settle(): Promise<void> {
    await Promise.all(this.#uploads);
    if (this.#uploadError) throw this.#uploadError;
  }

  async #flush(end: number): Promise<void> {
    const b = this.#builder;
    if (!b || b.count === 0) return;
    this.#builder = undefined;
    const { runId, volumeId, snapshotId } = this.#input;
    const shard = this.descriptors.length;
    if (shard >= this.#options.maxShards) {
      throw new PlanTooLargeError(
        `the plan of ${this.#input.volumeId} needs more than ${this.#options.maxShards} shards of ${this.#options.shardBlocks} blocks` +
          " (the most a run passes on); raise transfer.shardBlocks in the group config",
      );
    }
    this.descriptors.push({
      volumeId,
      snapshotId,
      baseSnapshotId: this.#options.base,
      shard,
      first: b.first,
      end,
      blocks: b.count,
    });
    const bytes = b.encode(end);
    const uploads = this.#uploads;
    const p = this.#repo.store
      .put(planKeys.shardList(this.#repo, runId, volumeId, shard), bytes, {
        contentType: "application/octet-stream",
        metadata: { "cgmirror-kind": "shard-list" },
      })
      .then(
        () => {
          uploads.delete(p);
        },
        (error: unknown) => {
          uploads.delete(p);
          this.#uploadError ??= error;
        },
      );
    uploads.add(p);
    while (uploads.size >= this.#options.uploadConcurrency) await Promise.race(uploads);
    if (this.#uploadError) throw this.#uploadError;
  }
}

interface ListingStats {
  readonly pages: number;
  readonly emptyPages: number;
  readonly volumeSizeBytes: number;
}

/**
 * Lists the changed (or written) blocks page by page into `shards`; checks they ascend. Starts at
 * `resume`'s block index when given. Before each List request it asks `shouldStop`: when it says so,
 * the listing stops and the result says `stopped` (the caller keeps only what lies before the
 * writer's `boundary`).
 */
async function listInto(
  deps: PlanStepDeps,
  input: PlanVolumeInput,
  options: PlanOptions,
  shards: ShardWriter,
  resume: PlanVolumeCursor | undefined,
): Promise<ListingStats & { readonly stopped: boolean }> {
  const base = options.base;
  let pages = resume?.listPages ?? 0;
  let emptyPages = resume?.emptyPages ?? 0;
  let volumeSizeBytes = resume?.volumeSizeBytes ?? 0;
  let nextToken: string | undefined;
  let last = resume ? resume.startingBlockIndex - 1 : -1;
  const from = resume?.startingBlockIndex ?? 0;
  do {
    if (deps.shouldStop?.()) return { pages, emptyPages, volumeSizeBytes, stopped: true };
    const token = nextToken;
    const page = await retrySource(
      base ? "ListChangedBlocks" : "ListSnapshotBlocks",
      () =>
        deps.source.listBlocks({
          snapshotId: input.snapshotId,
          baseSnapshotId: base ?? undefined,
          maxResults: options.pageSize,
          ...(token ? { nextToken: token } : from > 0 ? { startingBlockIndex: from } : {}),
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
      await shards.add(b.index, b.token === undefined);
      last = b.index;
    }
    nextToken = page.nextToken;
  } while (nextToken);
  // An empty change set (or a resumed listing that found nothing more) cuts no shard.
  await shards.finish(last + 1);
  return { pages, emptyPages, volumeSizeBytes, stopped: false };
}

/** Writes the shard index and the plan manifest; returns the result. */
async function writePlan(
  repo: Repo,
  input: PlanVolumeInput,
  options: PlanOptions,
  shards: ShardWriter,
  listing: ListingStats,
): Promise<PlanVolumeResult> {
  const { descriptors, changed, absent } = shards;
  const readBlocks = changed - absent;
  const totals: PlanTotals = {
    changedBlocks: changed,
    absentBlocks: absent,
    readBlocks,
    readBytes: readBlocks * BLOCK_SIZE,
    shards: descriptors.length,
    listPages: listing.pages,
    emptyPages: listing.emptyPages,
  };
  const shardIndexKey = planKeys.shardIndex(repo, input.runId, input.volumeId);
  const manifestKey = planKeys.manifest(repo, input.runId, input.volumeId);
  const json = JSON.stringify(descriptors);
  await repo.store.put(shardIndexKey, new TextEncoder().encode(json), { contentType: "application/json" });
  const result: PlanVolumeResult = {
    volumeId: input.volumeId,
    snapshotId: input.snapshotId,
    baseSnapshotId: options.base,
    volumeSizeBytes: listing.volumeSizeBytes,
    totals,
    shards: json.length <= options.maxInline ? descriptors : null,
    shardIndexKey,
    manifestKey,
  };
  const manifest = {
    format: "cgmirror.plan",
    version: "1.0",
    runId: input.runId,
    shardBlocks: options.shardBlocks,
    createdAt: new Date().toISOString(),
    ...result,
    shards: descriptors,
  };
  await repo.store.put(manifestKey, new TextEncoder().encode(`${JSON.stringify(manifest)}\n`), {
    contentType: "application/json",
  });
  return result;
}

/**
 * Where a volume's planning stopped (a shard boundary): every shard before it is written, and the
 * listing goes on from `startingBlockIndex`, the first block of the next shard. Plain JSON: the run's
 * plan cursor carries it (core/transfer/plan-run.ts).
 */
export interface PlanVolumeCursor {
  /** The shard size the volume is cut into (decided once, before its first shard). */
  readonly shardBlocks: number;
  readonly startingBlockIndex: number;
  /** The shards written so far, in order. */
  readonly descriptors: readonly ShardDescriptor[];
  readonly changedBlocks: number;
  readonly absentBlocks: number;
  readonly listPages: number;
  readonly emptyPages: number;
  readonly volumeSizeBytes: number;
}

export interface PlanStepDeps extends PlanDeps {
  /** Asked before each List request: true stops the listing at the last shard boundary. */
  readonly shouldStop?: () => boolean;
}

/** One invocation's part of a volume's plan: the whole plan, or where to go on from. */
export type PlanVolumeStep =
  | { readonly done: true; readonly result: PlanVolumeResult }
  | { readonly done: false; readonly cursor: PlanVolumeCursor };

/**
 * Plans one volume, or as much of it as `deps.shouldStop` allows: stopped, it waits for the shard
 * lists it cut and returns the cursor at its last shard boundary (the blocks listed after it are
 * listed again by the next step). A step resumed from a cursor writes exactly the shards an
 * uninterrupted plan writes after that boundary: shards are cut by count from the boundary on, and
 * the listing of two completed snapshots does not change. Idempotent like `planVolume`.
 */
export async function planVolumeStep(
  deps: PlanStepDeps,
  input: PlanVolumeInput,
  resume?: PlanVolumeCursor,
): Promise<PlanVolumeStep> {
  const options = checkInput(input);
  if (resume && resume.shardBlocks !== options.shardBlocks) {
    throw new InvalidArgumentError(
      `the plan cursor of ${input.volumeId} cuts shards of ${resume.shardBlocks} blocks, the input ${options.shardBlocks}`,
    );
  }
  const shards = new ShardWriter(deps.repo, input, options, resume);
  const listing = await listInto(deps, input, options, shards, resume);
  if (!listing.stopped)
    return { done: true, result: await writePlan(deps.repo, input, options, shards, listing) };
  await shards.settle();
  const b = shards.boundary;
  return {
    done: false,
    cursor: {
      shardBlocks: options.shardBlocks,
      startingBlockIndex: b.startingBlockIndex,
      descriptors: shards.descriptors.slice(0, b.shards),
      changedBlocks: b.changed,
      absentBlocks: b.absent,
      listPages: listing.pages,
      emptyPages: listing.emptyPages,
      volumeSizeBytes: listing.volumeSizeBytes,
    },
  };
}

/** Plans one volume. Idempotent: re-planning the same run overwrites the same keys with the same bytes. */
export async function planVolume(deps: PlanDeps, input: PlanVolumeInput): Promise<PlanVolumeResult> {
  const step = await planVolumeStep(deps, input);
  if (!step.done) throw new Error("unreachable: a plan without shouldStop always finishes");
  return step.result;
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
