/**
 * Restore into EBS: one new EBS snapshot per volume of a generation, written with the EBS direct APIs
 * (StartSnapshot, PutSnapshotBlock, CompleteSnapshot) — usable at once to create volumes and start the
 * instances again.
 *
 * - **Only the blocks the index holds** are written (zero and never-written blocks read as zeros in a
 *   new snapshot), every one checked on the way (restore's checks: pinned index, segment footers,
 *   lengths, decoding) and sent with its ref's SHA-256 as `x-amz-Checksum`, paced at the
 *   PutSnapshotBlock quota by the same AIMD limiter as the transfer. The SHA-256 check of each block
 *   is EBS's: it refuses a block whose SHA-256 is not the checksum, so no block lands unless it is the
 *   one the backup recorded, and no hash of it is made here (EBS hashes every block it is sent anyway).
 *   A refused put is checked here to tell a damaged block (BlockIntegrityError, naming it)
 *   from any other refusal.
 * - **Incremental**: with a parent snapshot whose content is an earlier generation M (the source
 *   snapshot a backup of M took, or a snapshot an earlier restore of M wrote), StartSnapshot names it as
 *   ParentSnapshotId and only the blocks whose content differs between M and N are written — found by
 *   walking both indexes in block order, without reading data. A block N does not hold but M does is
 *   written as zeros.
 * - **All-or-nothing** across volumes (`restoreGroupToSnapshots`): when any volume fails, every
 *   snapshot this restore created is deleted, and the error says why.
 * - **Resumable** (`restoreVolumeToSnapshot` with `resume`): blocks are written in block order; a task
 *   that must stop returns a cursor, and the next invocation (same restore id: StartSnapshot's client
 *   token gives the same snapshot) continues from it.
 */

import { createHash } from "node:crypto";
import { CorruptObjectError, InvalidArgumentError } from "../errors.ts";
import type { IndexEntry } from "../format/block-ref.ts";
import { BLOCK_SIZE, toHex, ZERO_BLOCK_SHA256 } from "../format/bytes.ts";
import { Codec } from "../format/codec.ts";
import {
  type GenerationManifest,
  listGenerations,
  readCommittedManifest,
  readGeneration,
} from "../format/generation.ts";
import { keys, type Repo } from "../format/layout.ts";
import { openVolumeIndex, type VolumeIndex } from "../format/volume-index.ts";
import { isBlockSourceError } from "../ports/block-source.ts";
import type { SnapshotWriter, WrittenSnapshot } from "../ports/snapshot-writer.ts";
import {
  READ_LEASE_TTL_MS,
  readPinnedGeneration,
  releaseReadLease,
  renewReadLease,
  takeReadLease,
} from "../protocol/read-lease.ts";
import { AimdLimiter, type AimdOptions, backoffMs } from "../transfer/aimd.ts";
import { namedError } from "../util/named-error.ts";
import { TaskPool } from "../util/pool.ts";
import { fetchBlocks, SegmentFooters } from "./restore.ts";

/** Tags on every snapshot a restore writes. Not the backup's tags: backup retention never sees them. */
export const RESTORE_TAGS = {
  group: "cgmirror:restored-group",
  generation: "cgmirror:restored-generation",
  volume: "cgmirror:source-volume",
  restoreId: "cgmirror:restore-id",
} as const;

const GiB = 2 ** 30;
const ZERO_BLOCK = new Uint8Array(BLOCK_SIZE);
const ZERO_CHECKSUM = Buffer.from(ZERO_BLOCK_SHA256).toString("base64");

/** A restore into EBS failed; the snapshots it had created were deleted (or are named as left). */
export class RestoreToSnapshotsError extends namedError("RestoreToSnapshotsError") {
  readonly deleted: readonly string[];
  readonly left: readonly string[];
  constructor(message: string, deleted: readonly string[], left: readonly string[], options?: ErrorOptions) {
    super(message, options);
    this.deleted = deleted;
    this.left = left;
  }
}

export interface SnapshotParent {
  readonly snapshotId: string;
  /** The generation whose image the parent holds. */
  readonly generation: number;
  /** Where cgmirror knows it from. */
  readonly source: "backup" | "restore" | "given";
}

export interface VolumeRestoreState {
  readonly snapshotId: string;
  /** Every block below it is written. */
  readonly cursor: number;
  /** Distinct blocks written so far (data and zeros). */
  readonly blocksWritten: number;
  readonly bytesWritten: number;
}

export interface VolumeToSnapshotOptions {
  readonly manifest: GenerationManifest;
  readonly volumeId: string;
  /** Names the restore: snapshots are tagged with it and StartSnapshot's client token derives from it. */
  readonly restoreId: string;
  readonly parent?: SnapshotParent | undefined;
  /** Continue an earlier invocation of the same restore. */
  readonly resume?: VolumeRestoreState | undefined;
  /** Checked between batches: stop and return the cursor (`done: false`). */
  readonly shouldStop?: () => boolean;
  /** Pacing of PutSnapshotBlock. @default initialRate and maxRate 1000 (the per-snapshot quota), maxConcurrency 64 */
  readonly aimd?: AimdOptions;
  /** Segment reads in flight. @default 8 */
  readonly readConcurrency?: number;
  /** Attempts per block on throttling / 5xx. @default 20 */
  readonly maxAttempts?: number;
  readonly backoffBaseMs?: number;
  readonly backoffCapMs?: number;
  /** Extra tags. */
  readonly tags?: Readonly<Record<string, string>>;
  /** Blocks per batch (a checkpoint after each). @default 1024 */
  readonly batchBlocks?: number;
  /** Called after every batch (for progress and checkpoints). */
  readonly onProgress?: (state: VolumeRestoreState) => void | Promise<void>;
  /**
   * Reads the parent's generation manifest (a restore under a read lease reads the one its lease
   * pins, core/protocol/read-lease.ts). @default readGeneration (through HEAD or the commit record)
   */
  readonly readManifest?: (generation: number) => Promise<GenerationManifest>;
}

export interface VolumeToSnapshotResult extends VolumeRestoreState {
  readonly volumeId: string;
  readonly generation: number;
  readonly parentSnapshotId: string | null;
  readonly parentGeneration: number | null;
  /** Data blocks written (zeros excluded). */
  readonly dataBlocks: number;
  /** Blocks written as zeros (incremental restore: content the parent has and this generation does not). */
  readonly zeroBlocks: number;
  readonly done: boolean;
  /** The snapshot's status after CompleteSnapshot (when done). */
  readonly status: string;
}

function clientToken(restoreId: string, volumeId: string): string {
  return createHash("sha256").update(`${restoreId}\0${volumeId}`).digest("hex").slice(0, 64);
}

/**
 * The live entries of an index in block order, as an async sequence of batches (backpressure: the
 * scan waits while two batches are queued). Memory: one page per run + two batches.
 */
function entriesOf(index: VolumeIndex | undefined, batchSize = 4096): AsyncIterator<IndexEntry[]> {
  if (!index) return (async function* () {})();
  const queue: Array<IndexEntry[] | null> = [];
  let failure: unknown;
  let failed = false;
  let wake: (() => void) | undefined;
  let resume: (() => void) | undefined;
  const signal = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  void index
    .scan(async (batch) => {
      queue.push(batch);
      signal();
      while (queue.length >= 2) await new Promise<void>((r) => (resume = r));
    }, batchSize)
    .then(
      () => {
        queue.push(null);
        signal();
      },
      (error: unknown) => {
        failure = error;
        failed = true;
        signal();
      },
    );
  return (async function* () {
    for (;;) {
      while (queue.length === 0 && !failed) await new Promise<void>((r) => (wake = r));
      if (queue.length === 0 && failed) throw failure;
      const b = queue.shift()!;
      const r = resume;
      resume = undefined;
      r?.();
      if (b === null) return;
      yield b;
    }
  })();
}

/** A block of the target to write: its data ref, or `zero` (the parent holds data there). */
type Write = { readonly block: number; readonly entry: IndexEntry | null };

/** Yields, in block order, the blocks whose content differs between `from` (the parent's) and `to`. */
async function* differences(
  from: AsyncIterator<IndexEntry[]>,
  to: AsyncIterator<IndexEntry[]>,
): AsyncGenerator<Write> {
  const cursor = (it: AsyncIterator<IndexEntry[]>) => {
    let batch: IndexEntry[] = [];
    let i = 0;
    let done = false;
    return {
      async peek(): Promise<IndexEntry | undefined> {
        while (!done && i >= batch.length) {
          const r = await it.next();
          if (r.done) done = true;
          else {
            batch = r.value;
            i = 0;
          }
        }
        return done ? undefined : batch[i];
      },
      skip() {
        i++;
      },
    };
  };
  const a = cursor(from);
  const b = cursor(to);
  const isZero = (e: IndexEntry | undefined) => !e || e.ref.codec === Codec.zero;
  for (;;) {
    const x = await a.peek();
    const y = await b.peek();
    if (!x && !y) return;
    if (y && (!x || y.block < x.block)) {
      b.skip();
      if (!isZero(y)) yield { block: y.block, entry: y }; // the parent has nothing there
      continue;
    }
    if (x && (!y || x.block < y.block)) {
      a.skip();
      if (!isZero(x)) yield { block: x.block, entry: null }; // the target has nothing there: zeros
      continue;
    }
    a.skip();
    b.skip();
    if (isZero(x) && isZero(y)) continue;
    if (!isZero(x) && !isZero(y) && Buffer.compare(x!.ref.sha256, y!.ref.sha256) === 0) continue;
    yield isZero(y) ? { block: y!.block, entry: null } : { block: y!.block, entry: y! };
  }
}

/** Writes blocks through the limiter: a failed block fails the whole volume. */
class BlockPutter {
  readonly #writer: SnapshotWriter;
  readonly #snapshotId: string;
  readonly #limiter: AimdLimiter;
  readonly #maxAttempts: number;
  readonly #base: number;
  readonly #cap: number;
  readonly #inFlight = new Set<Promise<void>>();
  #failure: unknown;
  #failed = false;

  constructor(writer: SnapshotWriter, snapshotId: string, o: VolumeToSnapshotOptions) {
    this.#writer = writer;
    this.#snapshotId = snapshotId;
    // Starts at the per-snapshot quota (volumes are restored one at a time): throttling backs it off.
    this.#limiter = new AimdLimiter({ initialRate: 1000, maxRate: 1000, maxConcurrency: 64, ...o.aimd });
    this.#maxAttempts = o.maxAttempts ?? 20;
    this.#base = o.backoffBaseMs ?? 100;
    this.#cap = o.backoffCapMs ?? 5000;
  }

  get limiterStats() {
    return this.#limiter.stats;
  }

  /**
   * Waits for the limiter, then sends in the background; resolves to the send's completion (which
   * never rejects: a failure is kept and thrown by the next `put` or `drain`). Throws the first
   * failure of an earlier put.
   */
  async put(
    block: number,
    data: Uint8Array,
    checksum: string,
    verify?: () => void,
  ): Promise<{ sent: Promise<void> }> {
    if (this.#failed) throw this.#failure;
    await this.#limiter.acquire();
    if (this.#failed) {
      this.#limiter.release("failed");
      throw this.#failure;
    }
    const p: Promise<void> = this.#send(block, data, checksum, verify)
      .catch((error: unknown) => {
        if (!this.#failed) {
          this.#failed = true;
          this.#failure = error;
        }
      })
      .finally(() => this.#inFlight.delete(p));
    this.#inFlight.add(p);
    return { sent: p };
  }

  /** Throws the first failure of any put so far. */
  check(): void {
    if (this.#failed) throw this.#failure;
  }

  async #send(block: number, data: Uint8Array, checksum: string, verify?: () => void): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const started = performance.now();
      try {
        await this.#writer.putBlock({ snapshotId: this.#snapshotId, blockIndex: block, data, checksum });
        this.#limiter.release("ok", performance.now() - started);
        return;
      } catch (error) {
        const latency = performance.now() - started;
        if (isBlockSourceError(error) && (error.kind === "throttled" || error.kind === "transient")) {
          this.#limiter.release(error.kind, latency);
          if (attempt >= this.#maxAttempts) throw error;
          await new Promise((r) => setTimeout(r, backoffMs(attempt, this.#base, this.#cap)));
          await this.#limiter.acquire();
          continue;
        }
        this.#limiter.release("failed", latency);
        // The block's own check is EBS's (its checksum is the ref's digest): when the put is refused for
        // good, a damaged block is reported as such (BlockIntegrityError), anything else as it is.
        verify?.();
        throw error;
      }
    }
  }

  /** Waits for every put; throws the first failure. */
  async drain(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.race(this.#inFlight);
    if (this.#failed) throw this.#failure;
  }

  close(): void {
    this.#limiter.close();
  }
}

/** The volume's entry in the manifest, its index and (with a parent) the parent generation's index. */
async function openIndexes(repo: Repo, options: VolumeToSnapshotOptions) {
  const { manifest, volumeId, parent } = options;
  const volume = manifest.volumes.find((v) => v.volumeId === volumeId);
  if (!volume) {
    throw new InvalidArgumentError(
      `generation ${manifest.generation} has no volume ${volumeId}; it has ${manifest.volumes.map((v) => v.volumeId).join(", ")}`,
    );
  }
  const index = await openVolumeIndex(repo, volumeId, volume.index);
  const rootKey = keys.volumeIndex(repo, volumeId);
  if (index.root.sizeBytes !== volume.sizeBytes) {
    throw new CorruptObjectError(
      rootKey,
      index.versionId,
      `it describes ${index.root.sizeBytes} bytes but generation ${manifest.generation} says ${volume.sizeBytes}`,
    );
  }
  let parentIndex: VolumeIndex | undefined;
  if (parent) {
    const m = await (options.readManifest ?? ((n: number) => readGeneration(repo, n)))(parent.generation);
    const pv = m.volumes.find((v) => v.volumeId === volumeId);
    if (!pv) throw new InvalidArgumentError(`generation ${parent.generation} has no volume ${volumeId}`);
    if (pv.sizeBytes > volume.sizeBytes) {
      throw new InvalidArgumentError(
        `parent ${parent.snapshotId} (generation ${parent.generation}) is larger than generation ${manifest.generation} of ${volumeId}`,
      );
    }
    parentIndex = await openVolumeIndex(repo, volumeId, pv.index);
  }
  return { volume, index, rootKey, parentIndex };
}

/** StartSnapshot (idempotent by client token); a resumed restore must get its snapshot back. */
async function startSnapshot(
  repo: Repo,
  writer: SnapshotWriter,
  options: VolumeToSnapshotOptions,
  sizeBytes: number,
): Promise<{ snapshotId: string; status: string }> {
  const { manifest, volumeId, parent } = options;
  const started = await writer.startSnapshot({
    volumeSizeGiB: Math.max(1, Math.ceil(sizeBytes / GiB)),
    ...(parent ? { parentSnapshotId: parent.snapshotId } : {}),
    description: `cgmirror restore of ${repo.group} generation ${manifest.generation}, volume ${volumeId}`,
    tags: {
      [RESTORE_TAGS.group]: repo.group,
      [RESTORE_TAGS.generation]: String(manifest.generation),
      [RESTORE_TAGS.volume]: volumeId,
      [RESTORE_TAGS.restoreId]: options.restoreId,
      Name: `cgmirror ${repo.group} #${manifest.generation} ${volumeId}`,
      ...options.tags,
    },
    clientToken: clientToken(options.restoreId, volumeId),
  });
  const snapshotId = started.snapshotId;
  if (options.resume && options.resume.snapshotId !== snapshotId) {
    throw new InvalidArgumentError(
      `restore ${options.restoreId} of ${volumeId} resumes snapshot ${options.resume.snapshotId}, but StartSnapshot gave ${snapshotId}`,
    );
  }
  return { snapshotId, status: started.status };
}

/**
 * True when another invocation of the same step (a retry after a lost answer, or a duplicate delivery
 * running at the same time) has completed the snapshot: it did so only after every block from the same
 * cursor on was written, so the volume is done.
 */
async function completedElsewhere(writer: SnapshotWriter, snapshotId: string): Promise<boolean> {
  try {
    return (await writer.describeSnapshot(snapshotId))?.status === "completed";
  } catch {
    return false;
  }
}

/**
 * Sends batches of blocks into the snapshot. Batches are pipelined: the next batch is read while the
 * previous one's last reads and its puts finish (one read pool for all batches); the cursor (and the
 * checkpoint) moves only once every read and put of a batch has completed, in order.
 */
class BatchSender {
  readonly #repo: Repo;
  readonly #putter: BlockPutter;
  readonly #footers: SegmentFooters;
  readonly #options: VolumeToSnapshotOptions;
  readonly #snapshotId: string;
  #previous: Promise<void> = Promise.resolve();
  /** The reads of the last batch sent (they share one pool with the next batch's). */
  #fetching: Promise<void> = Promise.resolve();
  readonly #reads: TaskPool;
  cursor: number;
  blocksWritten: number;
  bytesWritten: number;
  dataBlocks = 0;
  zeroBlocks = 0;

  constructor(repo: Repo, putter: BlockPutter, snapshotId: string, options: VolumeToSnapshotOptions) {
    this.#repo = repo;
    this.#putter = putter;
    this.#footers = new SegmentFooters(repo);
    this.#options = options;
    this.#snapshotId = snapshotId;
    this.#reads = new TaskPool(options.readConcurrency ?? 8);
    this.cursor = options.resume?.cursor ?? 0;
    this.blocksWritten = options.resume?.blocksWritten ?? 0;
    this.bytesWritten = options.resume?.bytesWritten ?? 0;
  }

  state(): VolumeRestoreState {
    const { cursor, blocksWritten, bytesWritten } = this;
    return { snapshotId: this.#snapshotId, cursor, blocksWritten, bytesWritten };
  }

  /**
   * Reads and sends one batch; returns once its reads are under way and the previous batch's are done
   * (`settle` waits for the rest). Throws the first failure of the previous batch's reads.
   */
  async send(batch: readonly Write[]): Promise<void> {
    const putter = this.#putter;
    const sends: Promise<void>[] = [];
    for (const w of batch) {
      if (w.entry !== null) continue;
      sends.push((await putter.put(w.block, ZERO_BLOCK, ZERO_CHECKSUM)).sent);
      this.zeroBlocks++;
    }
    // This batch's reads start while the previous batch's last ones finish (one shared pool: no
    // drained pipeline between batches); at most two batches are being read at once.
    const fetched = fetchBlocks(
      this.#repo,
      batch.flatMap((w) => (w.entry === null ? [] : [w.entry])),
      async (block, raw, ref, keep, verify) => {
        // The ref's digest is the put's checksum: EBS refuses the block unless it is the block's SHA-256,
        // which is the block's check (no hash is made here: `checkDigests: "receiver"`).
        const checksum = Buffer.from(ref.sha256).toString("base64");
        const { sent } = await putter.put(block, raw, checksum, verify);
        keep(sent); // `raw` is read until the put is sent (retries included), and `verify` with it
        sends.push(sent);
        this.dataBlocks++;
      },
      { pool: this.#reads, checkDigests: "receiver" },
      undefined,
      this.#footers,
    ).then(() => {});
    fetched.catch(() => {}); // awaited by the next send and by settle
    const previousFetch = this.#fetching;
    this.#fetching = fetched;
    const before = this.#previous;
    this.#previous = (async () => {
      await before;
      await fetched;
      await Promise.all(sends);
      putter.check();
      this.blocksWritten += batch.length;
      this.bytesWritten += (batch.length - batch.filter((w) => w.entry === null).length) * BLOCK_SIZE;
      this.cursor = batch.at(-1)!.block + 1;
      await this.#options.onProgress?.(this.state());
    })();
    this.#previous.catch(() => {});
    try {
      await previousFetch;
    } catch (error) {
      await fetched.catch(() => {}); // nothing of this volume is read once its failure is thrown
      throw error;
    }
  }

  /** Waits for every batch sent so far (reads and puts); throws the first failure. */
  async settle(): Promise<void> {
    await this.#previous;
  }

  /** Waits until no read of this volume is under way (after a failure, before it is thrown). */
  async quiesce(): Promise<void> {
    await this.#fetching.catch(() => {});
  }
}

/**
 * Sends every block where the index differs from the parent's (all, without a parent) from the resume
 * cursor on, in batches; returns false when `shouldStop` stopped it between batches.
 */
async function sendDifferences(
  sender: BatchSender,
  indexes: Awaited<ReturnType<typeof openIndexes>>,
  options: VolumeToSnapshotOptions,
): Promise<boolean> {
  const { index, parentIndex, rootKey } = indexes;
  const blockCount = Math.ceil(indexes.volume.sizeBytes / BLOCK_SIZE);
  const resumeFrom = options.resume?.cursor ?? 0;
  let batch: Write[] = [];
  for await (const w of differences(entriesOf(parentIndex), entriesOf(index))) {
    if (w.block >= blockCount) {
      throw new CorruptObjectError(
        rootKey,
        index.versionId,
        `block ${w.block} is beyond the volume's ${blockCount} blocks`,
      );
    }
    if (w.block < resumeFrom) continue; // written by an earlier invocation
    batch.push(w);
    if (batch.length >= (options.batchBlocks ?? 1024)) {
      const full = batch;
      batch = [];
      await sender.send(full);
      if (options.shouldStop?.()) return false;
    }
  }
  if (batch.length > 0) await sender.send(batch);
  return true;
}

/**
 * Restores one volume of a generation into a new EBS snapshot (or continues one, with `resume`).
 * Writes only what the index holds (or, with a parent, what differs from the parent's generation).
 */
export async function restoreVolumeToSnapshot(
  repo: Repo,
  writer: SnapshotWriter,
  options: VolumeToSnapshotOptions,
): Promise<VolumeToSnapshotResult> {
  const { manifest, volumeId, parent } = options;
  const indexes = await openIndexes(repo, options);
  const blockCount = Math.ceil(indexes.volume.sizeBytes / BLOCK_SIZE);
  const started = await startSnapshot(repo, writer, options, indexes.volume.sizeBytes);
  const snapshotId = started.snapshotId;
  const finished = (state: VolumeRestoreState, counts: { dataBlocks: number; zeroBlocks: number }) => ({
    volumeId,
    generation: manifest.generation,
    parentSnapshotId: parent?.snapshotId ?? null,
    parentGeneration: parent?.generation ?? null,
    ...state,
    cursor: blockCount,
    ...counts,
    done: true,
    status: "completed",
  });
  if (started.status === "completed") {
    // A retry of a step whose answer was lost after it completed the snapshot: nothing to write.
    return finished(
      {
        snapshotId,
        cursor: blockCount,
        blocksWritten: options.resume?.blocksWritten ?? 0,
        bytesWritten: options.resume?.bytesWritten ?? 0,
      },
      { dataBlocks: 0, zeroBlocks: 0 },
    );
  }
  await options.onProgress?.({
    snapshotId,
    cursor: options.resume?.cursor ?? 0,
    blocksWritten: options.resume?.blocksWritten ?? 0,
    bytesWritten: options.resume?.bytesWritten ?? 0,
  }); // the caller learns the snapshot id before any block is sent
  const putter = new BlockPutter(writer, snapshotId, options);
  const sender = new BatchSender(repo, putter, snapshotId, options);
  let done: boolean;
  const counts = () => ({ dataBlocks: sender.dataBlocks, zeroBlocks: sender.zeroBlocks });
  try {
    done = await sendDifferences(sender, indexes, options);
    await sender.settle();
    await putter.drain();
  } catch (error) {
    await sender.quiesce();
    // A duplicate of this step completed the snapshot while this one wrote the same blocks into it.
    if (await completedElsewhere(writer, snapshotId)) return finished(sender.state(), counts());
    throw error;
  } finally {
    putter.close();
  }
  let status = "pending";
  let cursor = sender.cursor;
  if (done) {
    try {
      status = (await writer.completeSnapshot(snapshotId, sender.blocksWritten)).status;
    } catch (error) {
      if (await completedElsewhere(writer, snapshotId)) return finished(sender.state(), counts());
      throw error;
    }
    cursor = blockCount;
  }
  return {
    volumeId,
    generation: manifest.generation,
    snapshotId,
    parentSnapshotId: parent?.snapshotId ?? null,
    parentGeneration: parent?.generation ?? null,
    cursor,
    blocksWritten: sender.blocksWritten,
    bytesWritten: sender.bytesWritten,
    dataBlocks: sender.dataBlocks,
    zeroBlocks: sender.zeroBlocks,
    done,
    status,
  };
}

/** What cgmirror knows about snapshots of this group: snapshot id → the volume and generation it holds. */
export async function knownSnapshots(
  repo: Repo,
  writer: SnapshotWriter,
): Promise<Map<string, { volumeId: string; generation: number; source: "backup" | "restore" }>> {
  const retained = new Set(await listGenerations(repo));
  const out = new Map<string, { volumeId: string; generation: number; source: "backup" | "restore" }>();
  for (const n of retained) {
    const m = await readGeneration(repo, n);
    for (const v of m.volumes) {
      if (v.sourceSnapshotId)
        out.set(v.sourceSnapshotId, { volumeId: v.volumeId, generation: n, source: "backup" });
    }
  }
  const restored: WrittenSnapshot[] = await writer.findSnapshots({ [RESTORE_TAGS.group]: repo.group });
  for (const s of restored) {
    const generation = Number(s.tags?.[RESTORE_TAGS.generation]);
    const volumeId = s.tags?.[RESTORE_TAGS.volume];
    if (s.status !== "completed" || !volumeId || !retained.has(generation)) continue;
    out.set(s.snapshotId, { volumeId, generation, source: "restore" });
  }
  return out;
}

export interface GroupToSnapshotsOptions
  extends Omit<VolumeToSnapshotOptions, "manifest" | "volumeId" | "parent" | "resume" | "restoreId"> {
  /** @default HEAD's generation */
  readonly generation?: number;
  /** @default every volume of the generation */
  readonly volumeIds?: readonly string[];
  /** Parents given by the caller (volume id → snapshot id); each must hold a retained generation. */
  readonly parents?: Readonly<Record<string, string>>;
  /** Pick a parent by itself among the snapshots cgmirror knows (backup sources, earlier restores). @default true */
  readonly autoParent?: boolean;
  /** @default a new id */
  readonly restoreId?: string;
  /** Called when a volume starts (for progress displays). */
  readonly onVolume?: (volumeId: string, parent: SnapshotParent | undefined) => void;
  /** The clock of the read lease. @default Date.now */
  readonly now?: () => number;
  /** @default READ_LEASE_TTL_MS */
  readonly leaseTtlMs?: number;
}

export interface GroupToSnapshotsResult {
  readonly restoreId: string;
  readonly generation: number;
  readonly pointInTime: string;
  readonly volumes: readonly VolumeToSnapshotResult[];
}

/** Chooses each volume's parent: the caller's, else (auto) the known snapshot nearest in generations. */
export async function chooseParents(
  repo: Repo,
  writer: SnapshotWriter,
  manifest: GenerationManifest,
  volumeIds: readonly string[],
  parents: Readonly<Record<string, string>>,
  auto: boolean,
): Promise<Map<string, SnapshotParent>> {
  const out = new Map<string, SnapshotParent>();
  const given = Object.entries(parents);
  for (const [volumeId] of given) {
    if (!volumeIds.includes(volumeId)) {
      throw new InvalidArgumentError(`a parent is given for ${volumeId}, which this restore does not write`);
    }
  }
  if (given.length === 0 && !auto) return out;
  const known = await knownSnapshots(repo, writer);
  for (const [volumeId, snapshotId] of given) {
    const k = known.get(snapshotId);
    if (!k || k.volumeId !== volumeId) {
      throw new InvalidArgumentError(
        `cgmirror does not know which generation of ${volumeId} snapshot ${snapshotId} holds (it is neither the source snapshot of a retained generation nor a snapshot a restore wrote); restore without --parent-snapshot for ${volumeId}`,
      );
    }
    const d = await writer.describeSnapshot(snapshotId);
    if (d?.status !== "completed") {
      throw new InvalidArgumentError(
        `parent snapshot ${snapshotId} is ${d?.status ?? "missing"}, not completed`,
      );
    }
    out.set(volumeId, { snapshotId, generation: k.generation, source: "given" });
  }
  if (!auto) return out;
  for (const volumeId of volumeIds) {
    if (out.has(volumeId)) continue;
    const candidates = [...known]
      .filter(([, k]) => k.volumeId === volumeId)
      .sort(
        ([, a], [, b]) =>
          Math.abs(a.generation - manifest.generation) - Math.abs(b.generation - manifest.generation) ||
          b.generation - a.generation,
      );
    for (const [snapshotId, k] of candidates) {
      const d = await writer.describeSnapshot(snapshotId);
      if (d?.status !== "completed") continue;
      out.set(volumeId, { snapshotId, generation: k.generation, source: k.source });
      break;
    }
  }
  return out;
}

async function resolveManifest(repo: Repo, generation: number | undefined): Promise<GenerationManifest> {
  if (generation !== undefined) return readGeneration(repo, generation);
  const m = await readCommittedManifest(repo);
  if (!m) throw new InvalidArgumentError(`group ${repo.group} has no committed generation`);
  return m;
}

/**
 * Restores a generation into one new EBS snapshot per volume, all or nothing: when a volume fails,
 * every snapshot this restore created is deleted and RestoreToSnapshotsError says why.
 */
export async function restoreGroupToSnapshots(
  repo: Repo,
  writer: SnapshotWriter,
  options: GroupToSnapshotsOptions = {},
): Promise<GroupToSnapshotsResult> {
  const manifest = await resolveManifest(repo, options.generation);
  const volumeIds = options.volumeIds ?? manifest.volumes.map((v) => v.volumeId);
  for (const id of volumeIds) {
    if (!manifest.volumes.some((v) => v.volumeId === id)) {
      throw new InvalidArgumentError(
        `generation ${manifest.generation} has no volume ${id}; it has ${manifest.volumes.map((v) => v.volumeId).join(", ")}`,
      );
    }
  }
  const restoreId =
    options.restoreId ??
    `restore-${toHex(createHash("sha256").update(`${Date.now()}${Math.random()}`).digest()).slice(0, 16)}`;
  const parents = await chooseParents(
    repo,
    writer,
    manifest,
    volumeIds,
    options.parents ?? {},
    options.autoParent ?? true,
  );
  // Prune keeps what these generations reach while the lease lives (docs/format.md §10.2).
  const now = options.now ?? Date.now;
  const ttlMs = options.leaseTtlMs ?? READ_LEASE_TTL_MS;
  const lease = await takeReadLease(repo, {
    restoreId,
    generations: [manifest.generation, ...[...parents.values()].map((p) => p.generation)],
    now: now(),
    ttlMs,
  });
  let renewedAt = now();
  const readManifest = (n: number) => {
    const pin = lease.generations.find((p) => p.generation === n);
    if (!pin) throw new InvalidArgumentError(`restore ${restoreId} holds no read lease on generation ${n}`);
    return readPinnedGeneration(repo, pin, restoreId);
  };
  const created: string[] = [];
  const results: VolumeToSnapshotResult[] = [];
  let current: string | undefined;
  try {
    for (const volumeId of volumeIds) {
      const parent = parents.get(volumeId);
      options.onVolume?.(volumeId, parent);
      current = undefined;
      const r = await restoreVolumeToSnapshot(repo, writer, {
        ...options,
        manifest,
        volumeId,
        restoreId,
        parent,
        readManifest,
        onProgress: async (s) => {
          if (current === undefined) {
            current = s.snapshotId;
            created.push(s.snapshotId);
          }
          if (now() - renewedAt >= ttlMs / 4) {
            await renewReadLease(repo, restoreId, now(), ttlMs);
            renewedAt = now();
          }
          await options.onProgress?.(s);
        },
      });
      if (!created.includes(r.snapshotId)) created.push(r.snapshotId);
      if (r.status === "error")
        throw new Error(`snapshot ${r.snapshotId} of ${volumeId} ended in state error`);
      results.push(r);
    }
  } catch (error) {
    await releaseReadLease(repo, restoreId).catch(() => undefined); // else it expires
    const { deleted, left } = await deleteRestoreSnapshots(writer, restoreId, created);
    const why = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    throw new RestoreToSnapshotsError(
      `restoring generation ${manifest.generation} into snapshots failed (${why}); ${describeCleanup(restoreId, deleted, left)}`,
      deleted,
      left,
      { cause: error },
    );
  }
  await releaseReadLease(repo, restoreId).catch(() => undefined); // else it expires
  return { restoreId, generation: manifest.generation, pointInTime: manifest.pointInTime, volumes: results };
}

/**
 * Deletes every snapshot of a restore (all or nothing): the ones the caller knows it created, and any
 * tagged with the restore id (the failing volume's snapshot may exist without a progress report).
 * Never throws for a snapshot it cannot delete: it names it in `left`.
 */
export async function deleteRestoreSnapshots(
  writer: SnapshotWriter,
  restoreId: string,
  known: readonly string[] = [],
): Promise<{ deleted: string[]; left: string[] }> {
  const created = [...known];
  let found: WrittenSnapshot[] = [];
  let findFailed = false;
  try {
    found = await writer.findSnapshots({ [RESTORE_TAGS.restoreId]: restoreId });
  } catch {
    findFailed = true;
  }
  for (const s of found) if (!created.includes(s.snapshotId)) created.push(s.snapshotId);
  const deleted: string[] = [];
  const left: string[] = [];
  for (const id of created) {
    try {
      await writer.deleteSnapshot(id);
      deleted.push(id);
    } catch {
      left.push(id);
    }
  }
  if (findFailed) left.push(`any other snapshot of the restore (finding them by tag failed)`);
  return { deleted, left };
}

/** What a failed restore's cleanup did, as the end of its error message. */
export function describeCleanup(
  restoreId: string,
  deleted: readonly string[],
  left: readonly string[],
): string {
  return (
    (deleted.length > 0
      ? `deleted the ${deleted.length} snapshot(s) it had created (${deleted.join(", ")})`
      : "it had created no snapshot") +
    (left.length > 0
      ? `; could not delete ${left.join(", ")}: delete them by hand (tag ${RESTORE_TAGS.restoreId}=${restoreId})`
      : "")
  );
}
