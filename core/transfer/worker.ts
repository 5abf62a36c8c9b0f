/**
 * Transfer (the Map item handler's core): reads one shard's blocks with GetSnapshotBlock, verifies
 * length and SHA-256, dedups, compresses, packs them into segments, and writes the shard's result
 * (an index run of block → ref) and, last, its summary (docs/transfer.md, "Transfer worker").
 *
 * Idempotence: the summary object (`planKeys.shardSummary`) is written last and names exactly the
 * result run (pinned by its checksum) and the segments it references. When it exists a re-run returns
 * it unchanged. When a crash happened before it, a re-run transfers the shard again into fresh
 * segments and a fresh result run (each attempt writes its own keys, so two deliveries running at once
 * never mix); what the other attempt wrote is referenced by nothing (GC removes it). An attempt dedups
 * only against committed blocks and blocks it uploaded itself.
 */

import { z } from "zod";
import { BlockIntegrityError, CorruptObjectError, InvalidArgumentError } from "../errors.ts";
import { type BlockRef, ZERO_REF } from "../format/block-ref.ts";
import { BLOCK_SIZE, equalBytes, randomId } from "../format/bytes.ts";
import { Codec, type CompressionChoice, type CompressionProbeOptions } from "../format/codec.ts";
import { IndexRunReader, IndexRunWriter, type RunInfo } from "../format/index-run.ts";
import { assertName, assertRunId, keys, type Repo } from "../format/layout.ts";
import { decodeMetadata, encodeMetadata, Sha256Hex, sealMetadata } from "../format/metadata.ts";
import {
  type DedupLookup,
  MiB,
  SEGMENT_RUN_ID_METADATA,
  type SegmentInfo,
  SegmentWriter,
} from "../format/segment.ts";
import { type BlockData, type BlockSource, isBlockSourceError } from "../ports/block-source.ts";
import { ObjectNotFoundError } from "../ports/object-store.ts";
import { AimdLimiter, type AimdOptions, backoffMs } from "./aimd.ts";
import {
  BlockChecksumMismatchError,
  sleep as defaultSleep,
  type RetryOptions,
  retrySource,
  ShardPlanMismatchError,
  SourceAccessError,
  TransferRetriesExhaustedError,
} from "./errors.ts";
import type { ShardDescriptor } from "./planner.ts";
import { decodeShardList, planKeys, type ShardList } from "./shard-list.ts";

export interface TransferOptions {
  /** @default "zstd" */
  readonly compression?: CompressionChoice;
  /** When runs of incompressible blocks stop being compressed (core/format/codec.ts `CompressionProbe`). */
  readonly compressionProbe?: CompressionProbeOptions;
  /** Segment size; one PUT per segment. @default 64 MiB */
  readonly segmentBytes?: number;
  /** Allow segments under 8 MiB (tests). @default false */
  readonly allowSmallSegments?: boolean;
  /** Requests/s to start at. @default 100 */
  readonly initialRate?: number;
  /** Never above this many GetSnapshotBlock requests/s (the per-snapshot quota). @default 1000 */
  readonly maxRate?: number;
  /** In-flight GetSnapshotBlock requests at most. @default 64 */
  readonly maxConcurrency?: number;
  /** Other AIMD knobs (see core/transfer/aimd.ts). */
  readonly aimd?: AimdOptions;
  /** Attempts per block on throttling / 5xx / network errors before the shard fails. @default 20 */
  readonly maxAttempts?: number;
  /** Back-off base and cap for those retries, ms. @default 100, 5000 */
  readonly backoffBaseMs?: number;
  readonly backoffCapMs?: number;
  /** Token refreshes (re-listings) per block before the shard fails. @default 3 */
  readonly maxTokenRefreshes?: number;
  /** Reads per block whose checksum/length fail before BlockChecksumMismatchError. @default 3 */
  readonly maxChecksumAttempts?: number;
  /** Progress object write interval (ms). @default 15000 */
  readonly progressIntervalMs?: number;
  /** Page size when re-listing the shard's range for tokens. @default 10000 */
  readonly listPageSize?: number;
  /** Retry of the listing calls. */
  readonly listRetry?: RetryOptions;
  /**
   * With `TransferDeps.remainingMs`: stop taking new blocks once less than this is left, finish the
   * blocks in flight, make the segments durable and write a checkpoint (docs/transfer.md,
   * "Resumption"). In the units of `remainingMs` (ms). @default 120000
   */
  readonly stopBeforeDeadlineMs?: number;
}

/** A checkpoint as the state machine carries it: its key and the SHA-256 its seal must have. */
export interface TransferCheckpointRef {
  readonly key: string;
  readonly sha256: string;
}

export interface TransferShardInput {
  readonly runId: string;
  readonly shard: ShardDescriptor;
  readonly options?: TransferOptions;
  /** Continue from this checkpoint (the one the previous invocation of this shard returned). */
  readonly resume?: TransferCheckpointRef;
}

export interface TransferProgress {
  readonly runId: string;
  readonly volumeId: string;
  readonly shard: number;
  readonly state: "running" | "done";
  readonly blocksDone: number;
  readonly blocksTotal: number;
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly updatedAt: string;
}

export interface TransferDeps {
  readonly repo: Repo;
  readonly source: BlockSource;
  /** Blocks the group already stores (e.g. `GroupDedup.open(repo)`); consulted before storing a block. */
  readonly dedup?: DedupLookup;
  /**
   * The volume's committed index (e.g. `openVolumeIndex(repo, volumeId, versionId)`). A changed block
   * whose returned checksum equals the committed block's SHA-256 is skipped: no upload and no entry
   * in the shard result (the committed entry stays valid). No extra hashing: the checksum is EBS's.
   */
  readonly previous?: { lookup(block: number): Promise<BlockRef | undefined> };
  readonly sleep?: (ms: number) => Promise<void>;
  readonly now?: () => number;
  /**
   * Epoch milliseconds, against which a block token's ExpiryTime is judged (default `Date.now`): a test
   * whose source expires tokens on its own clock passes that clock here.
   */
  readonly wallClock?: () => number;
  /**
   * Milliseconds left before the invocation's deadline (Lambda's `getRemainingTimeInMillis`, or the
   * local runner's clock). Absent: the shard runs to its end in one call.
   */
  readonly remainingMs?: () => number;
  /** Called on every progress update (in memory; the S3 object is throttled). */
  readonly onProgress?: (progress: TransferProgress) => void;
  /**
   * Called before each segment upload (SegmentWriter `beforeUpload`): rejects (e.g. LockLostError from
   * core/run-guard.ts) when the run no longer holds its group, which fails the shard with that error.
   */
  readonly beforeSegmentUpload?: () => Promise<void>;
}

export interface ShardStats {
  blocks: number;
  absentBlocks: number;
  zeroBlocks: number;
  dedupedBlocks: number;
  storedBlocks: number;
  rawBytes: number;
  storedBytes: number;
  segments: number;
  /** Stored blocks written raw without a compression attempt (a run of incompressible blocks). */
  compressionSkipped: number;
  getRequests: number;
  listRequests: number;
  throttled: number;
  transientErrors: number;
  tokenRefreshes: number;
  checksumRetries: number;
  /** Changed blocks whose content equals the committed one (skipped with `previous`). */
  unchangedBlocks: number;
  progressWrites: number;
  maxInFlight: number;
  finalRate: number;
}

/** What a shard's transfer produced; also stored as the summary object. */
export interface ShardResultSummary {
  readonly runId: string;
  readonly volumeId: string;
  readonly shard: number;
  readonly snapshotId: string;
  /** The shard's index run (block → ref), input of Prepare (`prepareVolume({changes})`). */
  readonly run: RunInfo;
  readonly summaryKey: string;
  /** Segment ids the run references that this shard wrote. */
  readonly segments: readonly string[];
  readonly stats: ShardStats;
  /** True when the shard was already done and this call only read its summary. */
  readonly reused: boolean;
}

function int(what: string, v: number, lo: number, hi: number): number {
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw new InvalidArgumentError(`expected ${what} as an integer in ${lo}..${hi}, got ${v}`);
  }
  return v;
}

function validate(input: TransferShardInput): void {
  assertRunId(input.runId);
  const d = input.shard as Partial<ShardDescriptor> | undefined;
  if (!d || typeof d !== "object")
    throw new InvalidArgumentError(`expected a shard descriptor, got ${JSON.stringify(d)}`);
  assertName("volume id", String(d.volumeId));
  if (typeof d.snapshotId !== "string" || !d.snapshotId.startsWith("snap-")) {
    throw new InvalidArgumentError(
      `expected shard.snapshotId like snap-…, got ${JSON.stringify(d.snapshotId)}`,
    );
  }
  int("shard.shard", d.shard ?? -1, 0, 999_999);
  int("shard.first", d.first ?? -1, 0, 0xffffffff);
  int("shard.end", d.end ?? -1, (d.first ?? 0) + 1, 0x100000000);
  int("shard.blocks", d.blocks ?? -1, 0, 0xffffffff);
}

/** Column-wise refs of the shard's blocks, in shard-list order. */
class RefTable {
  readonly seg: Int32Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  readonly codecs: Uint8Array;
  readonly hashes: Uint8Array;
  readonly set: Uint8Array;
  readonly segments: string[] = [];
  readonly #segIndex = new Map<string, number>();

  constructor(n: number) {
    this.seg = new Int32Array(n);
    this.offsets = new Uint32Array(n);
    this.lengths = new Uint32Array(n);
    this.codecs = new Uint8Array(n);
    this.hashes = new Uint8Array(n * 32);
    this.set = new Uint8Array(n);
  }

  /** The block is left out of the result (its committed entry stays valid). */
  skip(pos: number): void {
    this.set[pos] = 2;
  }

  put(pos: number, ref: BlockRef): void {
    let s = -1;
    if (ref.segment !== null) {
      s = this.#segIndex.get(ref.segment) ?? -1;
      if (s < 0) {
        s = this.segments.length;
        this.segments.push(ref.segment);
        this.#segIndex.set(ref.segment, s);
      }
    }
    this.seg[pos] = s;
    this.offsets[pos] = ref.offset;
    this.lengths[pos] = ref.length;
    this.codecs[pos] = ref.codec;
    this.hashes.set(ref.sha256, pos * 32);
    this.set[pos] = 1;
  }
}

/** A counting semaphore (bounds blocks read but not yet packed). */
class Slots {
  #free: number;
  readonly #waiters: (() => void)[] = [];
  constructor(n: number) {
    this.#free = n;
  }
  take(): Promise<void> | undefined {
    if (this.#free > 0) {
      this.#free--;
      return undefined;
    }
    return new Promise((r) => this.#waiters.push(r));
  }
  give(): void {
    const w = this.#waiters.shift();
    if (w) w();
    else this.#free++;
  }
}

/**
 * Block tokens of the shard's range, listed page by page ahead of the reads (ListChangedBlocks /
 * ListSnapshotBlocks from `first`), checked against the shard list, and refreshed by re-listing
 * from a block whose token expired.
 */
class ShardTokens {
  readonly #source: BlockSource;
  readonly #d: ShardDescriptor;
  readonly #list: ShardList;
  readonly #tokens: (string | undefined)[];
  /** When each token expires (ms since the epoch, the listing's ExpiryTime; Infinity if not given). */
  readonly #expires: Float64Array;
  readonly #done: Uint8Array;
  readonly #pageSize: number;
  readonly #retry: RetryOptions | undefined;
  readonly #stats: ShardStats;
  #listed = 0;
  #nextToken: string | undefined;
  #exhausted = false;
  #fetching: Promise<void> | undefined;
  #error: unknown;
  #refreshing: { from: number; promise: Promise<void> } | undefined;

  constructor(
    source: BlockSource,
    d: ShardDescriptor,
    list: ShardList,
    pageSize: number,
    stats: ShardStats,
    retry?: RetryOptions,
    from = 0,
  ) {
    this.#listed = from;
    this.#source = source;
    this.#d = d;
    this.#list = list;
    this.#tokens = new Array(list.blocks.length);
    this.#expires = new Float64Array(list.blocks.length).fill(Number.POSITIVE_INFINITY);
    this.#done = new Uint8Array(list.blocks.length);
    this.#pageSize = pageSize;
    this.#stats = stats;
    this.#retry = retry;
  }

  get(pos: number): string | undefined {
    return this.#tokens[pos];
  }

  /** When the token at `pos` expires, as its listing announced (ms since the epoch; Infinity if unknown). */
  expiresAt(pos: number): number {
    return this.#expires[pos]!;
  }

  release(pos: number): void {
    this.#tokens[pos] = undefined;
    this.#done[pos] = 1;
  }

  /** Resolves once position `pos` has its token; lists the next page ahead of time. */
  async ensure(pos: number): Promise<void> {
    for (;;) {
      if (this.#error) throw this.#error;
      if (pos < this.#listed) {
        const more = !this.#exhausted && this.#listed < this.#list.blocks.length;
        if (more && !this.#fetching && pos >= this.#listed - this.#pageSize / 2) this.#prefetch();
        return;
      }
      if (this.#exhausted) {
        throw new ShardPlanMismatchError(
          `block ${this.#list.blocks[this.#listed]} of shard ${this.#d.shard} (${this.#d.volumeId}) is not in the listing of ${this.#d.snapshotId}`,
        );
      }
      this.#prefetch();
      await this.#fetching;
    }
  }

  #prefetch(): void {
    if (this.#fetching) return;
    this.#fetching = this.#fetchPage().then(
      () => {
        this.#fetching = undefined;
      },
      (error: unknown) => {
        this.#fetching = undefined;
        this.#error ??= error;
      },
    );
  }

  #request(start: number | undefined, nextToken: string | undefined) {
    const d = this.#d;
    this.#stats.listRequests++;
    return retrySource(
      d.baseSnapshotId ? "ListChangedBlocks" : "ListSnapshotBlocks",
      () =>
        this.#source.listBlocks({
          snapshotId: d.snapshotId,
          baseSnapshotId: d.baseSnapshotId ?? undefined,
          maxResults: this.#pageSize,
          ...(nextToken ? { nextToken } : { startingBlockIndex: start }),
        }),
      this.#retry,
    );
  }

  async #fetchPage(): Promise<void> {
    const { blocks, absent } = this.#list;
    const start = this.#nextToken
      ? undefined
      : this.#listed < blocks.length
        ? blocks[this.#listed]!
        : this.#d.end;
    const page = await this.#request(start, this.#nextToken);
    for (const b of page.blocks) {
      if (b.index < this.#d.first || (this.#listed > 0 && b.index <= blocks[this.#listed - 1]!)) continue;
      if (b.index >= this.#d.end) {
        this.#exhausted = true;
        break;
      }
      const p = this.#listed;
      if (p >= blocks.length || blocks[p] !== b.index) {
        throw new ShardPlanMismatchError(
          p >= blocks.length || blocks[p]! > b.index
            ? `the listing has block ${b.index}, which shard ${this.#d.shard} does not plan`
            : `block ${blocks[p]} of shard ${this.#d.shard} is missing from the listing (next listed: ${b.index})`,
        );
      }
      if ((b.token === undefined) !== (absent[p] === 1)) {
        throw new ShardPlanMismatchError(
          `block ${b.index}: the plan and the listing disagree on whether it is present`,
        );
      }
      this.#tokens[p] = b.token;
      this.#expires[p] = expiry(page);
      this.#listed++;
    }
    this.#nextToken = page.nextToken;
    if (!page.nextToken) this.#exhausted = true;
  }

  /** Re-lists from position `pos` (its token expired) to the listed frontier, replacing tokens. */
  async refresh(pos: number): Promise<void> {
    const r = this.#refreshing;
    if (r && r.from <= pos) {
      await r.promise;
      return;
    }
    const promise = this.#relist(pos);
    this.#refreshing = { from: pos, promise };
    try {
      await promise;
    } finally {
      if (this.#refreshing?.promise === promise) this.#refreshing = undefined;
    }
  }

  async #relist(from: number): Promise<void> {
    const { blocks } = this.#list;
    const until = this.#listed;
    let p = from;
    let nextToken: string | undefined;
    this.#stats.tokenRefreshes++;
    while (p < until) {
      const page = await this.#request(nextToken ? undefined : blocks[p]!, nextToken);
      for (const b of page.blocks) {
        while (p < until && blocks[p]! < b.index) p++;
        if (p >= until || b.index >= this.#d.end) break;
        if (blocks[p] === b.index) {
          if (!this.#done[p]) {
            this.#tokens[p] = b.token;
            this.#expires[p] = expiry(page);
          }
          p++;
        }
      }
      nextToken = page.nextToken;
      if (!nextToken) break;
    }
  }
}

function expiry(page: { readonly expiresAt: Date | undefined }): number {
  const t = page.expiresAt?.getTime();
  return t !== undefined && Number.isFinite(t) ? t : Number.POSITIVE_INFINITY;
}

type ProgressBase = Omit<TransferProgress, "state" | "blocksDone" | "bytesDone" | "updatedAt">;

/** Writes the progress object at most every `intervalMs`, one write at a time, never blocking reads. */
class ProgressWriter {
  readonly #repo: Repo;
  readonly #key: string;
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #base: ProgressBase;
  readonly #stats: ShardStats;
  readonly #onProgress: ((p: TransferProgress) => void) | undefined;
  #last = Number.NEGATIVE_INFINITY;
  #writing: Promise<void> | undefined;
  blocksDone = 0;
  bytesDone = 0;

  constructor(
    repo: Repo,
    key: string,
    base: ProgressBase,
    intervalMs: number,
    now: () => number,
    stats: ShardStats,
    onProgress?: (p: TransferProgress) => void,
  ) {
    this.#repo = repo;
    this.#key = key;
    this.#base = base;
    this.#intervalMs = intervalMs;
    this.#now = now;
    this.#stats = stats;
    this.#onProgress = onProgress;
  }

  #snapshot(state: "running" | "done"): TransferProgress {
    return {
      ...this.#base,
      state,
      blocksDone: this.blocksDone,
      bytesDone: this.bytesDone,
      updatedAt: new Date().toISOString(),
    };
  }

  add(blocks: number, bytes: number): void {
    this.blocksDone += blocks;
    this.bytesDone += bytes;
    if (this.#onProgress) this.#onProgress(this.#snapshot("running"));
    const now = this.#now();
    if (this.#writing || now - this.#last < this.#intervalMs) return;
    this.#last = now;
    this.#writing = this.#write(this.#snapshot("running"))
      .catch(() => {})
      .finally(() => {
        this.#writing = undefined;
      });
  }

  async #write(p: TransferProgress): Promise<void> {
    this.#stats.progressWrites++;
    await this.#repo.store.put(this.#key, new TextEncoder().encode(JSON.stringify(p)), {
      contentType: "application/json",
    });
  }

  async finish(): Promise<void> {
    await this.#writing;
    const p = this.#snapshot("done");
    this.#onProgress?.(p);
    await this.#write(p).catch(() => {});
  }

  async stop(): Promise<void> {
    await this.#writing;
  }
}

function newStats(): ShardStats {
  return {
    blocks: 0,
    absentBlocks: 0,
    zeroBlocks: 0,
    dedupedBlocks: 0,
    storedBlocks: 0,
    rawBytes: 0,
    storedBytes: 0,
    segments: 0,
    compressionSkipped: 0,
    getRequests: 0,
    listRequests: 0,
    throttled: 0,
    transientErrors: 0,
    tokenRefreshes: 0,
    checksumRetries: 0,
    unchangedBlocks: 0,
    progressWrites: 0,
    maxInFlight: 0,
    finalRate: 0,
  };
}

const ShardSummarySchema = z.object({
  runId: z.string(),
  volumeId: z.string(),
  shard: z.number().int().nonnegative(),
  snapshotId: z.string(),
  run: z.object({
    key: z.string(),
    entries: z.number().int().nonnegative(),
    bytes: z.number().int().positive(),
    pages: z.number().int().nonnegative(),
    sha256: Sha256Hex,
  }),
  summaryKey: z.string(),
  segments: z.array(z.string()),
  stats: z.record(z.string(), z.number()),
});

/** Reads (and checks) the summary of a finished shard, or undefined when the shard is not done. */
export async function readShardSummary(
  repo: Repo,
  runId: string,
  volumeId: string,
  shard: number,
): Promise<ShardResultSummary | undefined> {
  const key = planKeys.shardSummary(repo, runId, volumeId, shard);
  try {
    const got = await repo.store.get(key);
    const parsed = decodeMetadata(got.body, "cgmirror.shard-result", ShardSummarySchema, key, got.versionId);
    if (parsed.runId !== runId || parsed.volumeId !== volumeId || parsed.shard !== shard) {
      throw new CorruptObjectError(
        key,
        got.versionId,
        `it is the summary of ${parsed.volumeId} shard ${parsed.shard} of run ${parsed.runId}`,
      );
    }
    return { ...(parsed as unknown as Omit<ShardResultSummary, "reused">), reused: true };
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return undefined;
    throw error;
  }
}

const RunInfoSchema = z.object({
  key: z.string(),
  entries: z.number().int().nonnegative(),
  bytes: z.number().int().positive(),
  pages: z.number().int().nonnegative(),
  sha256: Sha256Hex,
});

const CheckpointSchema = z.object({
  runId: z.string(),
  volumeId: z.string(),
  shard: z.number().int().nonnegative(),
  snapshotId: z.string(),
  /** Blocks of the shard list. */
  blocks: z.number().int().nonnegative(),
  /** 1 for the shard's first checkpoint, +1 per resumed invocation that stopped again. */
  sequence: z.number().int().positive(),
  /** The random id of the invocation that wrote it (keys are unique per attempt). */
  attempt: z.string().regex(/^[0-9a-f]{1,32}$/),
  /** Shard-list positions [0, cursor) are done: their refs are in `parts`. */
  cursor: z.number().int().nonnegative(),
  /** The segments THIS checkpoint's invocation made durable (Revert deletes them with the run). */
  segments: z.array(z.object({ segmentId: z.string(), key: z.string() })),
  /** Partial results in shard-list order, one per invocation so far (this one last). */
  parts: z.array(
    z.object({
      from: z.number().int().nonnegative(),
      to: z.number().int().nonnegative(),
      run: RunInfoSchema,
      /** Segment ids the part's refs point at. */
      segments: z.array(z.string()),
    }),
  ),
  /** Stats summed over the invocations so far. */
  stats: z.record(z.string(), z.number()),
});

export type TransferCheckpoint = z.infer<typeof CheckpointSchema>;

/**
 * Opens the checkpoint the state machine handed over: it must be the object whose seal is `ref.sha256`
 * (a checkpoint another, failed attempt wrote has another key and another digest), of this run's
 * scratch area, of this shard of this snapshot, and its parts must tile [0, cursor).
 */
export async function readTransferCheckpoint(
  repo: Repo,
  runId: string,
  d: ShardDescriptor,
  ref: TransferCheckpointRef,
): Promise<TransferCheckpoint> {
  const prefix = keys.checkpointsPrefix(repo, runId);
  if (typeof ref?.key !== "string" || !ref.key.startsWith(prefix) || !ref.key.endsWith(".json")) {
    throw new InvalidArgumentError(
      `expected a checkpoint key under ${prefix}, got ${JSON.stringify(ref?.key)}; pass the checkpoint the previous Transfer of this shard returned`,
    );
  }
  if (!Sha256Hex.safeParse(ref.sha256).success) {
    throw new InvalidArgumentError(
      `expected the checkpoint's sha256 as 64 hex digits, got ${JSON.stringify(ref.sha256)}`,
    );
  }
  const got = await repo.store.get(ref.key);
  const cp = decodeMetadata(
    got.body,
    "cgmirror.transfer-checkpoint",
    CheckpointSchema,
    ref.key,
    got.versionId,
    ref.sha256,
  );
  const wrong = (what: string) => new CorruptObjectError(ref.key, got.versionId, what);
  if (
    cp.runId !== runId ||
    cp.volumeId !== d.volumeId ||
    cp.shard !== d.shard ||
    cp.snapshotId !== d.snapshotId
  ) {
    throw wrong(
      `it is the checkpoint of ${cp.volumeId} shard ${cp.shard} (${cp.snapshotId}) of run ${cp.runId}, not of ${d.volumeId} shard ${d.shard} (${d.snapshotId}) of run ${runId}`,
    );
  }
  if (cp.blocks !== d.blocks || cp.cursor > cp.blocks) {
    throw wrong(`its cursor ${cp.cursor} of ${cp.blocks} blocks does not fit the shard's ${d.blocks} blocks`);
  }
  let at = 0;
  for (const part of cp.parts) {
    if (part.from !== at || part.to <= part.from || !part.run.key.startsWith(prefix)) {
      throw wrong(`its parts do not tile [0, ${cp.cursor}) with runs of the run's checkpoints`);
    }
    at = part.to;
  }
  if (at !== cp.cursor || cp.sequence !== cp.parts.length) {
    throw wrong(
      `its ${cp.parts.length} parts end at ${at}, not at its cursor ${cp.cursor} (sequence ${cp.sequence})`,
    );
  }
  return cp;
}

/** What one invocation of a shard achieved: the shard's result, or a checkpoint to resume from. */
export type TransferStep =
  | { readonly done: true; readonly summary: ShardResultSummary }
  | {
      readonly done: false;
      readonly checkpoint: TransferCheckpointRef;
      /** Shard-list positions done so far, of `blocksTotal`. */
      readonly cursor: number;
      readonly blocksTotal: number;
      /** How many invocations of this shard stopped before their deadline, this one included. */
      readonly sequence: number;
      /** Stats summed over the invocations so far. */
      readonly stats: ShardStats;
    };

/**
 * Transfers one shard in one call (no deadline). Fails only with a named error (TransferErrors,
 * FormatErrors) once retries are exhausted; throttling and 5xx answers slow the worker down (AIMD)
 * and are retried.
 */
export async function transferShard(
  deps: TransferDeps,
  input: TransferShardInput,
): Promise<ShardResultSummary> {
  const { remainingMs: _ignored, ...rest } = deps;
  const step = await transferShardStep(rest, input);
  if (!step.done) throw new Error("unreachable: a transfer without a deadline stopped early");
  return step.summary;
}

const COUNTERS = [
  "absentBlocks",
  "zeroBlocks",
  "dedupedBlocks",
  "storedBlocks",
  "rawBytes",
  "storedBytes",
  "segments",
  "compressionSkipped",
  "getRequests",
  "listRequests",
  "throttled",
  "transientErrors",
  "tokenRefreshes",
  "checksumRetries",
  "unchangedBlocks",
  "progressWrites",
] as const;

/** Adds the counters of earlier invocations (a checkpoint's `stats`) to this one's. */
function addStats(stats: ShardStats, earlier: Readonly<Record<string, number>> | undefined): void {
  if (!earlier) return;
  for (const k of COUNTERS) stats[k] += earlier[k] ?? 0;
  stats.maxInFlight = Math.max(stats.maxInFlight, earlier.maxInFlight ?? 0);
}

/**
 * Everything one invocation of a shard works with: its inputs and limits, its collaborators (the
 * segment writer, the AIMD limiter, the block tokens, the progress writer) and the state the stages
 * share. Built by `startShardRun`, passed to each stage of `transferShardStep`.
 */
interface ShardRun {
  readonly deps: TransferDeps;
  readonly input: TransferShardInput;
  readonly repo: Repo;
  readonly d: ShardDescriptor;
  readonly o: TransferOptions;
  readonly now: () => number;
  readonly sleep: (ms: number) => Promise<void>;
  readonly limits: ReadLimits;
  readonly list: ShardList;
  /** Blocks of the shard list. */
  readonly n: number;
  readonly resumed: TransferCheckpoint | undefined;
  /** The first position this invocation takes (the checkpoint's cursor, or 0). */
  readonly start: number;
  /** Stop taking blocks once less than this is left (`stopBeforeDeadlineMs`). */
  readonly reserve: number;
  readonly remaining: (() => number) | undefined;
  /** Blocks this invocation completed, and the time left when the first one did (the pace). */
  readonly pace: { blocks: number; firstAt: number | undefined };
  readonly stats: ShardStats;
  readonly refs: RefTable;
  readonly writer: SegmentWriter;
  readonly limiter: AimdLimiter;
  readonly slots: Slots;
  readonly tokens: ShardTokens;
  readonly progress: ProgressWriter;
  /** Packing is serial: each block's `writer.add` starts once the previous one settled. */
  packTail: Promise<unknown>;
  /** The first error of the block reads; the shard fails with it once the reads in flight settle. */
  failure: unknown;
  readonly tasks: Set<Promise<void>>;
  /** Positions [start, cursor) were taken by this invocation; all are done once `tasks` settle. */
  cursor: number;
}

/** Per-block bounds on failed reads (TransferOptions `maxAttempts`, `maxTokenRefreshes`, `maxChecksumAttempts`). */
interface ReadLimits {
  readonly maxAttempts: number;
  readonly maxRefreshes: number;
  readonly maxChecksum: number;
}

/** What `openShard` found: the shard is done already, or its list and the checkpoint to resume from. */
type OpenedShard =
  | { readonly summary: ShardResultSummary }
  | {
      readonly limits: ReadLimits;
      readonly list: ShardList;
      readonly resumed: TransferCheckpoint | undefined;
      readonly reserve: number;
    };

/**
 * One invocation of a shard's transfer. With `deps.remainingMs` it stops taking blocks once less than
 * `stopBeforeDeadlineMs` is left, finishes the blocks in flight, closes its segments (durable), writes
 * a partial result and a checkpoint, and returns `done: false`; the next invocation passes that
 * checkpoint as `input.resume` and neither reads nor stores the blocks it covers again. The last
 * invocation merges the checkpoints' partial results with its own into the shard's one result run:
 * Prepare sees the same shard result as from a single invocation.
 *
 * Stages: list (or resume from the checkpoint) `openShard`; fetch `fetchBlocks` / `readBlock`;
 * verify `checkRead`; pack `useBlock` / `packBlock`; upload `closeSegments`; checkpoint
 * `writeCheckpoint`; summarize `summarize`.
 */
export async function transferShardStep(
  deps: TransferDeps,
  input: TransferShardInput,
): Promise<TransferStep> {
  const opened = await openShard(deps, input);
  if ("summary" in opened) return { done: true, summary: opened.summary };
  const run = startShardRun(deps, input, opened);
  await fetchBlocks(run);
  // Durable from here: what the refs point at.
  const segments = await closeSegments(run);
  const attempt = randomId().slice(0, 12);
  if (run.cursor < run.n) return writeCheckpoint(run, segments, attempt);
  return summarize(run, attempt);
}

/**
 * Checks the input and options, returns the summary when the shard is done already, else reads the
 * shard list (checked against the descriptor) and the checkpoint to resume from.
 */
async function openShard(deps: TransferDeps, input: TransferShardInput): Promise<OpenedShard> {
  validate(input);
  const { repo } = deps;
  const d = input.shard;
  const o = input.options ?? {};
  const limits: ReadLimits = {
    maxAttempts: int("maxAttempts", o.maxAttempts ?? 20, 1, 1000),
    maxRefreshes: int("maxTokenRefreshes", o.maxTokenRefreshes ?? 3, 0, 100),
    maxChecksum: int("maxChecksumAttempts", o.maxChecksumAttempts ?? 3, 1, 100),
  };

  const done = await readShardSummary(repo, input.runId, d.volumeId, d.shard);
  if (done) return { summary: done };

  const listKey = planKeys.shardList(repo, input.runId, d.volumeId, d.shard);
  const list = decodeShardList((await repo.store.get(listKey)).body, listKey);
  if (list.first !== d.first || list.end !== d.end || list.blocks.length !== d.blocks) {
    throw new ShardPlanMismatchError(
      `shard list ${listKey} covers [${list.first}, ${list.end}) with ${list.blocks.length} blocks, ` +
        `the descriptor says [${d.first}, ${d.end}) with ${d.blocks}`,
    );
  }
  const resumed = input.resume ? await readTransferCheckpoint(repo, input.runId, d, input.resume) : undefined;
  const reserve = o.stopBeforeDeadlineMs ?? 120_000;
  if (!(Number.isFinite(reserve) && reserve >= 0)) {
    throw new InvalidArgumentError(`expected stopBeforeDeadlineMs >= 0, got ${reserve}`);
  }
  return { limits, list, resumed, reserve };
}

/** Builds the invocation's context and collaborators (no requests). */
function startShardRun(
  deps: TransferDeps,
  input: TransferShardInput,
  opened: Exclude<OpenedShard, { readonly summary: ShardResultSummary }>,
): ShardRun {
  const { repo, source } = deps;
  const d = input.shard;
  const o = input.options ?? {};
  const now = deps.now ?? (() => performance.now());
  const { list, resumed } = opened;
  const n = list.blocks.length;
  const start = resumed?.cursor ?? 0;
  const stats = newStats();
  const refs = new RefTable(n);
  const writer = newSegmentWriter(deps, input);
  const maxConcurrency = o.maxConcurrency ?? 64;
  const limiter = new AimdLimiter({
    initialRate: o.initialRate ?? 100,
    maxRate: o.maxRate ?? 1000,
    maxConcurrency,
    ...o.aimd,
    now,
  });
  const slots = new Slots(maxConcurrency);
  const tokens = new ShardTokens(source, d, list, o.listPageSize ?? 10_000, stats, o.listRetry, start);
  const progress = newProgress(deps, input, list, start, now, stats);
  return {
    deps,
    input,
    repo,
    d,
    o,
    now,
    sleep: deps.sleep ?? defaultSleep,
    limits: opened.limits,
    list,
    n,
    resumed,
    start,
    reserve: opened.reserve,
    remaining: deps.remainingMs,
    pace: { blocks: 0, firstAt: undefined },
    stats,
    refs,
    writer,
    limiter,
    slots,
    tokens,
    progress,
    packTail: Promise.resolve(),
    failure: undefined,
    tasks: new Set(),
    cursor: n,
  };
}

function newSegmentWriter(deps: TransferDeps, input: TransferShardInput): SegmentWriter {
  const o = input.options ?? {};
  const segmentBytes = o.segmentBytes ?? 64 * MiB;
  return new SegmentWriter({
    repo: deps.repo,
    targetBytes: segmentBytes,
    allowSmallSegments: o.allowSmallSegments ?? false,
    compression: o.compression ?? "zstd",
    ...(o.compressionProbe ? { compressionProbe: o.compressionProbe } : {}),
    // One PUT per segment: a segment is target + one block + footer at most.
    partBytes: segmentBytes + 2 * BLOCK_SIZE + 4 * MiB,
    ...(deps.dedup ? { dedup: deps.dedup } : {}),
    // Revert deletes only segments that name the reverted run (core/run-segments.ts).
    metadata: { [SEGMENT_RUN_ID_METADATA]: input.runId },
    ...(deps.beforeSegmentUpload ? { beforeUpload: deps.beforeSegmentUpload } : {}),
  });
}

/** The progress writer, counting positions [0, start) (done by earlier invocations) as done. */
function newProgress(
  deps: TransferDeps,
  input: TransferShardInput,
  list: ShardList,
  start: number,
  now: () => number,
  stats: ShardStats,
): ProgressWriter {
  const { repo } = deps;
  const d = input.shard;
  const n = list.blocks.length;
  let bytesTotal = 0;
  for (let i = 0; i < n; i++) if (!list.absent[i]) bytesTotal += BLOCK_SIZE;
  const progress = new ProgressWriter(
    repo,
    planKeys.progress(repo, input.runId, d.volumeId, d.shard),
    { runId: input.runId, volumeId: d.volumeId, shard: d.shard, blocksTotal: n, bytesTotal },
    input.options?.progressIntervalMs ?? 15_000,
    now,
    stats,
    deps.onProgress,
  );
  for (let i = 0; i < start; i++) {
    progress.blocksDone++;
    if (!list.absent[i]) progress.bytesDone += BLOCK_SIZE;
  }
  return progress;
}

/**
 * Fetch: takes positions from `start` on, each read as a task bounded by the slots and paced by the
 * limiter, until the end, a failure, or time is up (`cursor` then says where it stopped). Waits for
 * the reads in flight; throws the first failure.
 */
async function fetchBlocks(run: ShardRun): Promise<void> {
  const { list, n, refs, stats, progress, tokens, slots, limiter, tasks } = run;
  try {
    for (let pos = run.start; pos < n && run.failure === undefined; pos++) {
      if (timeUp(run, pos)) {
        run.cursor = pos;
        break;
      }
      if (list.absent[pos]) {
        refs.put(pos, ZERO_REF);
        stats.absentBlocks++;
        progress.add(1, 0);
        continue;
      }
      await tokens.ensure(pos);
      const s = slots.take();
      if (s) await s;
      if (timeUp(run, pos)) {
        slots.give();
        run.cursor = pos;
        break;
      }
      await limiter.acquire();
      if (run.failure !== undefined) {
        limiter.release("failed");
        slots.give();
        break;
      }
      const t: Promise<void> = readBlock(run, pos)
        .catch((error: unknown) => {
          run.failure ??= error;
        })
        .finally(() => {
          slots.give();
          tasks.delete(t);
        });
      tasks.add(t);
    }
  } catch (error) {
    run.failure ??= error;
  }
  await Promise.all(tasks);
  limiter.close();
  if (run.failure !== undefined) {
    await progress.stop();
    throw run.failure;
  }
}

/**
 * Time is up when what is left no longer covers the reserve plus draining the blocks in flight at
 * the pace blocks have been completing (read, checked, packed) in this invocation: a backlog of
 * blocks read faster than they can be packed must still finish before the deadline.
 */
function timeUp(run: ShardRun, pos: number): boolean {
  const { remaining, pace } = run;
  if (remaining === undefined || pos <= run.start) return false;
  const left = remaining();
  const perBlock =
    pace.blocks >= 2 && pace.firstAt !== undefined ? (pace.firstAt - left) / (pace.blocks - 1) : 0;
  return left < run.reserve + 1.5 * run.tasks.size * Math.max(0, perBlock);
}

/** One block's failed reads so far, each bounded by `ReadLimits`. */
interface ReadTries {
  attempts: number;
  refreshes: number;
  staleRefreshes: number;
  badReads: number;
}

/**
 * Reads the block at `pos` (the caller holds a limiter slot for the first request) until it is
 * checked and packed; retries throttling, 5xx and expired tokens (`onReadError`) and bad reads.
 */
async function readBlock(run: ShardRun, pos: number): Promise<void> {
  const { d, list, limiter, tokens, stats, now } = run;
  const index = list.blocks[pos]!;
  const tries: ReadTries = { attempts: 0, refreshes: 0, staleRefreshes: 0, badReads: 0 };
  let holding = true;
  for (;;) {
    if (!holding) await limiter.acquire();
    holding = false;
    const token = tokens.get(pos);
    const tokenExpiresAt = tokens.expiresAt(pos);
    const started = now();
    let got: BlockData;
    stats.getRequests++;
    try {
      if (token === undefined) throw new ShardPlanMismatchError(`block ${index} has no token`);
      got = await run.deps.source.getBlock({
        snapshotId: d.snapshotId,
        blockIndex: index,
        blockToken: token,
      });
    } catch (error) {
      await onReadError(run, pos, error, now() - started, tokenExpiresAt, tries);
      continue;
    }
    limiter.release("ok", now() - started);
    let problem: string | undefined;
    try {
      problem = await useBlock(run, pos, index, got);
      if (problem === undefined) return;
    } finally {
      // The writer copied what it keeps (or nothing was kept): the source may reuse the buffer.
      got.release?.();
    }
    tries.badReads++;
    stats.checksumRetries++;
    if (tries.badReads >= run.limits.maxChecksum) {
      throw new BlockChecksumMismatchError(d.snapshotId, index, problem);
    }
  }
}

/**
 * After a failed GetSnapshotBlock: backs off (throttling, 5xx) or refreshes the token (expired), and
 * returns for the caller to read again; throws when the error is not retried or retries ran out.
 */
async function onReadError(
  run: ShardRun,
  pos: number,
  error: unknown,
  latency: number,
  tokenExpiresAt: number,
  tries: ReadTries,
): Promise<void> {
  const { d, o, limiter, stats, limits } = run;
  const index = run.list.blocks[pos]!;
  if (!isBlockSourceError(error)) {
    limiter.release("failed");
    throw error;
  }
  if (error.kind === "throttled" || error.kind === "transient") {
    limiter.release(error.kind, latency);
    if (error.kind === "throttled") stats.throttled++;
    else stats.transientErrors++;
    tries.attempts++;
    if (tries.attempts >= limits.maxAttempts) {
      throw new TransferRetriesExhaustedError(
        `GetSnapshotBlock ${d.snapshotId} block ${index}`,
        tries.attempts,
        {
          cause: error,
        },
      );
    }
    await run.sleep(backoffMs(tries.attempts, o.backoffBaseMs ?? 100, o.backoffCapMs ?? 5000));
    return;
  }
  limiter.release("failed", latency);
  if (error.kind === "token-expired") {
    // A token refused once the ExpiryTime its listing announced has passed expired while this
    // block waited (back-off after throttling, pacing, a loaded machine, the request itself):
    // re-list without counting it against maxTokenRefreshes, which bounds tokens refused while
    // they should still be valid. maxAttempts bounds those stale refreshes.
    const stale = (run.deps.wallClock ?? Date.now)() >= tokenExpiresAt;
    if (stale) tries.staleRefreshes++;
    else tries.refreshes++;
    if (tries.refreshes > limits.maxRefreshes || tries.staleRefreshes >= limits.maxAttempts) {
      throw new TransferRetriesExhaustedError(
        `refreshing the token of ${d.snapshotId} block ${index}`,
        tries.refreshes + tries.staleRefreshes,
        { cause: error },
      );
    }
    await run.tokens.refresh(pos);
    return;
  }
  throw new SourceAccessError(error);
}

/** Verify: the SHA-256 a read announces, or what was wrong with it (the data is hashed when packed). */
function checkRead(got: BlockData): { readonly expected: Uint8Array } | { readonly problem: string } {
  if (got.dataLength !== BLOCK_SIZE || got.data.byteLength !== BLOCK_SIZE) {
    return {
      problem: `length ${got.data.byteLength} (DataLength ${got.dataLength}), expected ${BLOCK_SIZE}`,
    };
  }
  if (got.checksumAlgorithm !== "SHA256") {
    return { problem: `checksum algorithm ${JSON.stringify(got.checksumAlgorithm)}, expected SHA256` };
  }
  const expected = Buffer.from(got.checksum, "base64");
  if (expected.byteLength !== 32)
    return { problem: `checksum ${JSON.stringify(got.checksum)} is not a base64 SHA-256` };
  return { expected };
}

/**
 * Checks a block that was read and packs it (or skips it when `previous` holds the same content).
 * Returns undefined when the block is done, or what was wrong with the read (it is read again).
 * `writer.add` copies what it stores before it resolves, so `got.data` is free afterwards.
 */
async function useBlock(
  run: ShardRun,
  pos: number,
  index: number,
  got: BlockData,
): Promise<string | undefined> {
  const checked = checkRead(got);
  if ("problem" in checked) return checked.problem;
  const { expected } = checked;
  const { refs, stats, deps } = run;
  if (deps.previous) {
    const prev = await deps.previous.lookup(index);
    if (prev && equalBytes(prev.sha256, expected)) {
      refs.skip(pos);
      stats.unchangedBlocks++;
      blockDone(run, pos);
      return undefined;
    }
  }
  let ref: BlockRef;
  try {
    ref = await packBlock(run, got.data, expected);
  } catch (error) {
    if (!(error instanceof BlockIntegrityError)) throw error;
    return "SHA-256 of the data does not match the returned checksum";
  }
  refs.put(pos, ref);
  if (ref.codec === Codec.zero) stats.zeroBlocks++;
  blockDone(run, pos);
  return undefined;
}

/** Pack: dedups, compresses and appends the block to a segment (one block at a time, in read order). */
function packBlock(run: ShardRun, data: Uint8Array, expected: Uint8Array): Promise<BlockRef> {
  const p = run.packTail.then(() => run.writer.add(data, expected));
  run.packTail = p.catch(() => {});
  return p;
}

/** A block is done: its token is dropped, progress counts it, and the pace learns from it. */
function blockDone(run: ShardRun, pos: number): void {
  run.tokens.release(pos);
  run.progress.add(1, BLOCK_SIZE);
  if (run.remaining === undefined) return;
  run.pace.blocks++;
  if (run.pace.blocks === 1) run.pace.firstAt = run.remaining();
}

/** Upload: closes the segment writer (its last segment is uploaded; all are durable) and fills the stats. */
async function closeSegments(run: ShardRun): Promise<readonly SegmentInfo[]> {
  const { stats, writer, limiter } = run;
  const segments = await writer.close();
  const ws = writer.stats;
  stats.blocks = run.n;
  stats.dedupedBlocks = ws.dedupedBlocks;
  stats.storedBlocks = ws.storedBlocks;
  stats.rawBytes = ws.rawBytes;
  stats.storedBytes = ws.storedBytes;
  stats.segments = segments.length;
  stats.compressionSkipped = ws.compressionSkipped;
  stats.maxInFlight = limiter.stats.maxInFlight;
  stats.finalRate = Math.round(limiter.state.rate);
  addStats(stats, run.resumed?.stats);
  return segments;
}

/** Appends this invocation's refs of positions [from, to) to `w`, in shard-list order. */
async function appendRefs(run: ShardRun, w: IndexRunWriter, from: number, to: number): Promise<void> {
  const { refs, list } = run;
  for (let pos = from; pos < to; pos++) {
    if (refs.set[pos] !== 1) continue;
    const s = refs.seg[pos]!;
    const p = w.appendRaw(
      list.blocks[pos]!,
      s < 0 ? null : refs.segments[s]!,
      refs.offsets[pos]!,
      refs.lengths[pos]!,
      refs.codecs[pos]!,
      refs.hashes.subarray(pos * 32, pos * 32 + 32),
    );
    if (p) await p;
  }
}

/** Checkpoint (out of time): this invocation's blocks [start, cursor) become a partial result. */
async function writeCheckpoint(
  run: ShardRun,
  segments: readonly SegmentInfo[],
  attempt: string,
): Promise<TransferStep> {
  const { repo, input, d, resumed, refs, stats, start, cursor, n } = run;
  const sequence = (resumed?.sequence ?? 0) + 1;
  const pw = new IndexRunWriter(
    repo.store,
    keys.checkpointRun(repo, input.runId, d.volumeId, d.shard, sequence, attempt),
    { metadata: { "cgmirror-run-id": input.runId, "cgmirror-shard": String(d.shard) } },
  );
  let part: RunInfo;
  try {
    await appendRefs(run, pw, start, cursor);
    part = await pw.finish();
  } catch (error) {
    await pw.abort();
    throw error;
  }
  const checkpoint: TransferCheckpoint = {
    runId: input.runId,
    volumeId: d.volumeId,
    shard: d.shard,
    snapshotId: d.snapshotId,
    blocks: n,
    sequence,
    attempt,
    cursor,
    segments: segments.map((x) => ({ segmentId: x.segmentId, key: x.key })),
    parts: [...(resumed?.parts ?? []), { from: start, to: cursor, run: part, segments: refs.segments }],
    stats: { ...stats },
  };
  const sealed = sealMetadata("cgmirror.transfer-checkpoint", checkpoint);
  const key = keys.checkpoint(repo, input.runId, d.volumeId, d.shard, sequence, attempt);
  await run.progress.stop();
  await repo.store.put(key, sealed.bytes, { contentType: "application/json" });
  return { done: false, checkpoint: { key, sha256: sealed.sha256 }, cursor, blocksTotal: n, sequence, stats };
}

/** The shard's one result run: the checkpoints' partial results, then this invocation's refs. */
async function writeResultRun(run: ShardRun, attempt: string): Promise<RunInfo> {
  const { repo, input, d } = run;
  const w = new IndexRunWriter(
    repo.store,
    keys.shardResult(repo, input.runId, d.volumeId, d.shard, attempt),
    {
      metadata: { "cgmirror-run-id": input.runId, "cgmirror-shard": String(d.shard) },
    },
  );
  try {
    // The checkpoints' partial results first (they cover [0, start) in block order), pinned by SHA-256.
    for (const part of run.resumed?.parts ?? []) {
      const reader = await IndexRunReader.open(repo.store, part.run.key, {
        bytes: part.run.bytes,
        sha256: part.run.sha256,
      });
      for (let p = 0; p < reader.pageCount; p++) {
        const page = await reader.readPage(p);
        for (let i = 0; i < page.count; i++) {
          const r = w.appendFrom(page, i);
          if (r) await r;
        }
      }
    }
    await appendRefs(run, w, run.start, run.n);
    return await w.finish();
  } catch (error) {
    await w.abort();
    throw error;
  }
}

/** Summarize: writes the result run, then, last, the summary that names it and its segments. */
async function summarize(run: ShardRun, attempt: string): Promise<TransferStep> {
  const { repo, input, d, stats } = run;
  const result = await writeResultRun(run, attempt);
  const referenced = new Set<string>();
  for (const part of run.resumed?.parts ?? []) for (const id of part.segments) referenced.add(id);
  for (const id of run.refs.segments) referenced.add(id);
  const summaryKey = planKeys.shardSummary(repo, input.runId, d.volumeId, d.shard);
  const summary: ShardResultSummary = {
    runId: input.runId,
    volumeId: d.volumeId,
    shard: d.shard,
    snapshotId: d.snapshotId,
    run: result,
    summaryKey,
    segments: [...referenced],
    stats,
    reused: false,
  };
  await run.progress.finish();
  const { reused: _r, ...stored } = summary;
  await repo.store.put(summaryKey, encodeMetadata("cgmirror.shard-result", stored), {
    contentType: "application/json",
  });
  return { done: true, summary };
}

/**
 * The result runs of a volume's shards, for Prepare. Throws ShardPlanMismatchError naming the
 * first shard that has no summary (it did not finish).
 */
export async function collectShardRuns(
  repo: Repo,
  runId: string,
  volumeId: string,
  shardCount: number,
): Promise<RunInfo[]> {
  const out: RunInfo[] = [];
  for (let s = 0; s < shardCount; s++) {
    const summary = await readShardSummary(repo, runId, volumeId, s);
    if (!summary)
      throw new ShardPlanMismatchError(`shard ${s} of ${volumeId} in run ${runId} has not finished`);
    out.push(summary.run);
  }
  return out;
}

/** What a Transfer Lambda should return to the Map (≈ 150 bytes): the full summary stays in S3. */
export interface ShardResultItem {
  readonly volumeId: string;
  readonly shard: number;
  readonly entries: number;
  readonly storedBytes: number;
  readonly reused: boolean;
}

export function toShardResultItem(summary: ShardResultSummary): ShardResultItem {
  return {
    volumeId: summary.volumeId,
    shard: summary.shard,
    entries: summary.run.entries,
    storedBytes: summary.stats.storedBytes,
    reused: summary.reused,
  };
}

export interface RunProgress {
  readonly blocksDone: number;
  readonly blocksTotal: number;
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly shardsDone: number;
  readonly shards: readonly TransferProgress[];
}

/**
 * Sums the progress objects of a run (for the CLI). Shards that have not started have no object
 * yet: use the plan's totals for the whole.
 */
export async function readRunProgress(repo: Repo, runId: string): Promise<RunProgress> {
  const shards: TransferProgress[] = [];
  for await (const o of repo.store.list(planKeys.progressPrefix(repo, runId))) {
    try {
      const got = await repo.store.get(o.key);
      shards.push(JSON.parse(new TextDecoder().decode(got.body)) as TransferProgress);
    } catch (error) {
      if (!(error instanceof ObjectNotFoundError)) throw error;
    }
  }
  let blocksDone = 0;
  let blocksTotal = 0;
  let bytesDone = 0;
  let bytesTotal = 0;
  let shardsDone = 0;
  for (const p of shards) {
    blocksDone += p.blocksDone;
    blocksTotal += p.blocksTotal;
    bytesDone += p.bytesDone;
    bytesTotal += p.bytesTotal;
    if (p.state === "done") shardsDone++;
  }
  return { blocksDone, blocksTotal, bytesDone, bytesTotal, shardsDone, shards };
}
