import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { promisify } from "node:util";
import { brotliDecompress, gunzip, zstdDecompress } from "node:zlib";
import { CorruptObjectError, InvalidArgumentError } from "../errors.ts";
import type { BlockRef, IndexEntry } from "../format/block-ref.ts";
import { BLOCK_SIZE, equalBytes, toHex } from "../format/bytes.ts";
import { Codec, oneChunk } from "../format/codec.ts";
import { readRelocation, relocationKey } from "../format/gc-state.ts";
import {
  type GenerationManifest,
  type ManifestVolume,
  readCommittedManifest,
  readGeneration,
} from "../format/generation.ts";
import { keys, type Repo } from "../format/layout.ts";
import { openStoredBlock, readSegmentFooter, type SegmentFooterEntry } from "../format/segment.ts";
import { openVolumeIndex } from "../format/volume-index.ts";
import { type GetResult, ObjectNotFoundError } from "../ports/object-store.ts";
import { HashThreadLostError, type Sha256Pool, sharedSha256Pool } from "../util/hash-pool.ts";
import { TaskPool } from "../util/pool.ts";

export interface FetchOptions {
  /** Ranged GETs in flight. @default 8 */
  readonly concurrency?: number;
  /** Largest coalesced range. @default 8 MiB */
  readonly maxRangeBytes?: number;
  /** Bytes of unneeded data a range may span to join two refs. @default 256 KiB */
  readonly gapBytes?: number;
  /**
   * A read pool shared with other `fetchBlocks` calls (its limit replaces `concurrency`): the reads
   * of one call start as soon as slots free up, without the pool draining between calls. The call
   * still returns only once its own ranges are done.
   */
  readonly pool?: TaskPool;
  /**
   * Where blocks are hashed for their check: worker threads (the process's shared pool by default,
   * core/util/hash-pool.ts) or, with `null`, the calling thread.
   */
  readonly hashPool?: Sha256Pool | null;
  /**
   * Who compares each block's SHA-256 with its ref. `here` (the default): every block is hashed and
   * compared before it is handed over. `receiver`: the receiver has it compared where the block goes,
   * and no hash is made here. Restore into EBS snapshots does so: PutSnapshotBlock carries the ref's
   * digest as its checksum, and EBS refuses a block whose SHA-256 is not that checksum. When the
   * receiver's write fails for good, it calls the handover's `verify` (while the block is still kept):
   * it hashes the block and throws the BlockIntegrityError the check here would have thrown, or
   * returns when the block is sound (then the write failed for another reason). Lengths, decoding and
   * the refs' footer checks are made here either way.
   */
  readonly checkDigests?: "here" | "receiver";
}

export interface FetchStats {
  requests: number;
  bytesRead: number;
  blocks: number;
}

/** A block's footer entry, and where its bytes are now (another segment after a repack, §10.2). */
export interface LocatedBlock extends SegmentFooterEntry {
  /** The segment that holds the bytes (the ref's own segment unless it was repacked). */
  readonly segment: string;
  /** Offset of the bytes in `segment`. */
  readonly at: number;
}

/**
 * Segment footers (checked trailer + footer, one ranged GET each), cached per segment for a while:
 * restore checks every ref it uses against its segment's own record of the block. A segment that
 * prune repacked has no `.seg` any more but a relocation record (`.moved`, core/format/gc-state.ts): its
 * entries are checked against the footer of the segment that holds each block now.
 */
export class SegmentFooters {
  readonly #repo: Repo;
  readonly #cache = new Map<string, Promise<Map<number, LocatedBlock>>>();
  readonly #max: number;
  requests = 0;

  constructor(repo: Repo, max = 256) {
    this.#repo = repo;
    this.#max = max;
  }

  get(segmentId: string): Promise<Map<number, LocatedBlock>> {
    let p = this.#cache.get(segmentId);
    if (p) {
      this.#cache.delete(segmentId); // most recently used last
      this.#cache.set(segmentId, p);
      return p;
    }
    p = this.#load(segmentId, true);
    p.catch(() => this.#cache.delete(segmentId));
    this.#cache.set(segmentId, p);
    if (this.#cache.size > this.#max) this.#cache.delete(this.#cache.keys().next().value!);
    return p;
  }

  async #footer(segmentId: string): Promise<Map<number, LocatedBlock>> {
    const key = keys.segment(this.#repo, segmentId);
    this.requests++;
    const footer = await readSegmentFooter(this.#repo.store, key);
    if (footer.segmentId !== segmentId) {
      throw new CorruptObjectError(key, undefined, `its footer names segment ${footer.segmentId}`);
    }
    return new Map(footer.entries.map((e) => [e.offset, { ...e, segment: segmentId, at: e.offset }]));
  }

  async #load(segmentId: string, follow: boolean): Promise<Map<number, LocatedBlock>> {
    try {
      return await this.#footer(segmentId);
    } catch (error) {
      if (!(error instanceof ObjectNotFoundError) || !follow) throw error;
      this.requests++;
      const moved = await readRelocation(this.#repo, segmentId);
      if (!moved) throw error;
      const out = new Map<number, LocatedBlock>();
      const targets = new Map<string, Map<number, LocatedBlock>>();
      const key = relocationKey(this.#repo, segmentId);
      for (const b of moved.record.blocks) {
        let target = targets.get(b.segment);
        if (!target) {
          // One hop only: a relocation target is a segment prune wrote, never relocated itself.
          target = await this.#load(b.segment, false);
          targets.set(b.segment, target);
        }
        const f = target.get(b.at);
        if (!f || f.length !== b.length || f.codec !== b.codec || toHex(f.sha256) !== b.sha256) {
          throw new CorruptObjectError(
            key,
            undefined,
            `it moves the block at offset ${b.offset} to ${b.segment} offset ${b.at}, whose footer does not record it`,
          );
        }
        out.set(b.offset, { ...f, offset: b.offset, segment: b.segment, at: b.at });
      }
      return out;
    }
  }

  /** Throws unless the segment's footer records exactly this ref at its offset. */
  async check(ref: BlockRef, block: number | undefined): Promise<void> {
    await this.locate(ref, block);
  }

  /** Where this ref's bytes are (checked against the footer that records them). */
  async locate(ref: BlockRef, block: number | undefined): Promise<BlockRef> {
    return locateIn(this.#repo, await this.get(ref.segment!), ref, block);
  }
}

function locateIn(
  repo: Repo,
  entries: Map<number, LocatedBlock>,
  ref: BlockRef,
  block: number | undefined,
): BlockRef {
  const f = entries.get(ref.offset);
  if (!f || f.length !== ref.length || f.codec !== ref.codec || !equalBytes(f.sha256, ref.sha256)) {
    throw new CorruptObjectError(
      keys.segment(repo, ref.segment!),
      undefined,
      `its footer has no block at offset ${ref.offset} with length ${ref.length} and sha256 ${toHex(ref.sha256)}` +
        (block === undefined ? "" : ` (block ${block} of the index)`),
    );
  }
  return f.segment === ref.segment && f.at === ref.offset
    ? ref
    : { ...ref, segment: f.segment, offset: f.at };
}

/**
 * The entries with every stored ref replaced by where its bytes are now (checked against footers;
 * repacked segments followed through their relocation records). Zero refs pass through.
 */
export async function locateEntries(
  repo: Repo,
  entries: readonly IndexEntry[],
  footers: SegmentFooters,
  concurrency = 8,
): Promise<IndexEntry[]> {
  const maps = new Map<string, Map<number, LocatedBlock>>();
  const pool = new TaskPool(concurrency);
  for (const id of new Set(entries.flatMap((e) => (e.ref.codec === Codec.zero ? [] : [e.ref.segment!])))) {
    await pool.run(async () => {
      maps.set(id, await footers.get(id));
    });
  }
  await pool.drain();
  return entries.map((e) =>
    e.ref.codec === Codec.zero
      ? e
      : { block: e.block, ref: locateIn(repo, maps.get(e.ref.segment!)!, e.ref, e.block) },
  );
}

/**
 * The decoding half of `openStoredBlock`: compressed blocks are inflated in zlib's thread pool (every
 * block of a range at once); a raw block is its stored bytes. Resolves to undefined when the block
 * does not decode to one block (`checkBlock` then throws the error `openStoredBlock` names).
 */
async function decodeStored(ref: BlockRef, stored: Uint8Array): Promise<Uint8Array | undefined> {
  if (ref.codec === Codec.raw) return stored;
  const inflate = INFLATE[ref.codec];
  if (!inflate) return undefined;
  try {
    // One thread-pool pass per block instead of 32 (`oneChunk`).
    const out = await inflate(stored, { maxOutputLength: BLOCK_SIZE, chunkSize: oneChunk(BLOCK_SIZE) });
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  } catch {
    return undefined;
  }
}

/**
 * The checking half: the decoded block's size and SHA-256 against the ref (`createHash` over the bytes
 * in place; WebCrypto's digest copies its input and, on Node 24, hashes on the calling thread too).
 * Same checks and errors as `openStoredBlock`, which names what failed.
 */
function checkBlock(
  key: string,
  ref: BlockRef,
  stored: Uint8Array,
  decoded: Uint8Array | undefined,
  blockIndex: number,
  digest: Uint8Array | undefined | "receiver",
): Uint8Array {
  if (
    decoded === undefined ||
    decoded.byteLength !== BLOCK_SIZE ||
    (digest !== "receiver" &&
      !equalBytes(digest ?? createHash("sha256").update(decoded).digest(), ref.sha256))
  ) {
    return openStoredBlock(key, ref, stored, blockIndex); // throws BlockIntegrityError naming it
  }
  return decoded;
}

type Inflate = (data: Uint8Array, options: { maxOutputLength: number; chunkSize: number }) => Promise<Buffer>;
/** Asynchronous (thread-pool) decoders of the stored codecs (docs/format.md §3). */
const INFLATE: Readonly<Record<number, Inflate>> = {
  [Codec.zstd]: promisify(zstdDecompress) as Inflate,
  [Codec.brotli]: promisify(brotliDecompress) as Inflate,
  [Codec.gzip]: promisify(gunzip) as Inflate,
};

/** One ranged GET: a segment's bytes [start, end) holding `entries`. */
interface Range {
  readonly segment: string;
  readonly start: number;
  end: number;
  readonly entries: IndexEntry[];
}

/** Sorts stored refs by segment and offset and coalesces neighbours into ranges (≤ maxRange, gaps ≤ gap). */
function coalesce(stored: readonly IndexEntry[], maxRange: number, gap: number): Range[] {
  const sorted = [...stored].sort((a, b) =>
    a.ref.segment === b.ref.segment ? a.ref.offset - b.ref.offset : a.ref.segment! < b.ref.segment! ? -1 : 1,
  );
  const out: Range[] = [];
  for (const e of sorted) {
    const r = e.ref;
    const last = out.at(-1);
    if (
      last &&
      last.segment === r.segment &&
      r.offset <= last.end + gap &&
      Math.max(last.end, r.offset + r.length) - last.start <= maxRange
    ) {
      last.end = Math.max(last.end, r.offset + r.length);
      last.entries.push(e);
    } else out.push({ segment: r.segment!, start: r.offset, end: r.offset + r.length, entries: [e] });
  }
  return out;
}

/**
 * Reads stored blocks with coalesced ranged GETs, checks each block's SHA-256 and hands the raw
 * block to `onBlock`. Zero refs are skipped. Memory: `concurrency` × `maxRangeBytes`.
 *
 * `raw` may be a view of a buffer that is reused for a later range: it is valid until the promise
 * `onBlock` returns settles, and for longer only if `onBlock` passes `keep` a promise that settles
 * once nothing reads `raw` any more (a put sent in the background).
 * @throws BlockIntegrityError / CorruptObjectError / ObjectNotFoundError naming the segment key
 */
export async function fetchBlocks(
  repo: Repo,
  entries: readonly IndexEntry[],
  onBlock: (
    block: number,
    raw: Uint8Array,
    ref: BlockRef,
    keep: (inUse: Promise<unknown>) => void,
    verify: () => void,
  ) => Promise<void> | void,
  options: FetchOptions = {},
  stats: FetchStats = { requests: 0, bytesRead: 0, blocks: 0 },
  footers?: SegmentFooters,
): Promise<FetchStats> {
  const maxRange = options.maxRangeBytes ?? 8 * 1024 * 1024;
  const gap = options.gapBytes ?? 256 * 1024;
  const stored = entries.filter((e) => e.ref.codec !== Codec.zero);
  const hashPool = options.hashPool === undefined ? sharedSha256Pool() : options.hashPool;
  const byReceiver = options.checkDigests === "receiver";
  const read = async (r: Range, hashing: Sha256Pool | null = hashPool): Promise<void> => {
    const key = keys.segment(repo, r.segment);
    const got = await repo.store.get(key, {
      range: { start: r.start, end: r.end },
      // Into a buffer of the hash pool's: it goes to a hash thread and back without a copy.
      ...(hashing ? { into: (n: number) => hashing.borrow(n) } : {}),
    });
    // The range's bytes (a new view once back from a hash thread), and until they go back to the
    // pool: the hashing, every handover, and whatever a handover kept.
    const held = { body: got.body };
    const inUse: Promise<unknown>[] = [];
    try {
      await handOver(r, key, got, held, inUse, hashing);
    } catch (error) {
      // The bytes went down with a hash thread: read them again, hashed here.
      if (error instanceof HashThreadLostError) return read(r, null);
      throw error;
    } finally {
      if (hashing) void Promise.allSettled(inUse).then(() => hashing.giveBack(held.body));
    }
  };
  const handOver = async (
    r: Range,
    key: string,
    got: GetResult,
    held: { body: Uint8Array },
    inUse: Promise<unknown>[],
    hashing: Sha256Pool | null,
  ) => {
    stats.requests++;
    stats.bytesRead += got.body.byteLength;
    if (got.body.byteLength !== r.end - r.start) {
      throw new CorruptObjectError(
        key,
        got.versionId,
        `expected bytes ${r.start}-${r.end - 1}, the segment is ${got.size} bytes`,
      );
    }
    // Every block of the range is hashed (on a hash thread, while this thread parses other ranges'
    // responses and issues their writes) and decoded at once (compressed ones in zlib's thread pool),
    // then handed over in order, each checked just before. A block that fails its check throws when
    // its turn comes, once the blocks before it were handed over and their writes finished (as one at a
    // time). With `checkDigests: "receiver"` nothing is hashed here: the receiver's write checks it.
    const digests: Array<Promise<Uint8Array> | Uint8Array | undefined> = [];
    let body = got.body;
    if (!byReceiver && hashing?.lent(body) && r.entries.every((e) => e.ref.codec === Codec.raw)) {
      // Stored raw: the stored bytes are the blocks. The buffer goes to a hash thread and back.
      const back = await hashing.digestMoved(
        body,
        r.entries.map((e) => [e.ref.offset - r.start, e.ref.length] as const),
      );
      held.body = body = back.view;
      digests.push(...back.digests);
    }
    const bytes = r.entries.map((e) =>
      body.subarray(e.ref.offset - r.start, e.ref.offset - r.start + e.ref.length),
    );
    const decoded = await Promise.all(r.entries.map((e, k) => decodeStored(e.ref, bytes[k]!)));
    if (!byReceiver && hashing && digests.length === 0) {
      // Decoded blocks are copied to the thread. Only blocks that decoded to one block are hashed;
      // checkBlock names what is wrong with the others.
      const whole = decoded.flatMap((d, k) => (d?.byteLength === BLOCK_SIZE ? [k] : []));
      const hashed = hashing.digestEach(whole.map((k) => decoded[k]!));
      inUse.push(...hashed);
      for (const [i, k] of whole.entries()) digests[k] = hashed[i];
    }
    let previous: Promise<void> | undefined;
    for (const [k, e] of r.entries.entries()) {
      let raw: Uint8Array;
      try {
        raw = checkBlock(
          key,
          e.ref,
          bytes[k]!,
          decoded[k],
          e.block,
          byReceiver ? "receiver" : await digests[k],
        );
      } catch (error) {
        await previous; // a failed handover before it is the first error
        throw error;
      }
      await previous;
      stats.blocks++;
      const verify = () => void checkBlock(key, e.ref, bytes[k]!, decoded[k], e.block, undefined);
      previous = onBlock(e.block, raw, e.ref, (p) => inUse.push(p), verify) || undefined;
      // Awaited before the next handover (or below); until then a failure must not count as unhandled.
      previous?.catch(() => {});
      if (previous) inUse.push(previous);
    }
    await previous;
  };
  const pool = options.pool ?? new TaskPool(options.concurrency ?? 8);
  const mine: Promise<void>[] = [];
  for (const range of coalesce(stored, maxRange, gap)) {
    const task = async () => {
      if (!footers) return read(range);
      // Every ref is checked against its segment's footer before its data is read; a repacked
      // segment's blocks are read where its relocation record says they are now.
      const map = await footers.get(range.segment);
      const located = range.entries.map((e) => ({
        block: e.block,
        ref: locateIn(repo, map, e.ref, e.block),
      }));
      if (located.every((e, k) => e.ref === range.entries[k]!.ref)) return read(range);
      for (const moved of coalesce(located, maxRange, gap)) await read(moved);
    };
    if (!options.pool) {
      await pool.run(task);
      continue;
    }
    await pool.run(() => {
      const done = task();
      done.catch(() => {}); // awaited below, once every range is under way
      mine.push(done);
      return done;
    });
  }
  if (options.pool) await Promise.all(mine);
  else await pool.drain();
  return stats;
}

export interface RestoreVolumeOptions extends FetchOptions {
  readonly volumeId: string;
  /** Raw image file to create (replaced if it exists). */
  readonly path: string;
  /** @default the committed generation (HEAD) */
  readonly generation?: number;
  /** Use this manifest instead of reading one. */
  readonly manifest?: GenerationManifest;
  /** Called after every batch of index entries is restored (for progress displays). */
  readonly onProgress?: (progress: RestoreProgress) => void;
}

export interface RestoreProgress {
  readonly volumeId: string;
  /** Index entries (written blocks, zero ones included) restored so far. */
  readonly entriesDone: number;
  /** An upper bound of the entries to restore: the entries of every index run (a block may be in several). */
  readonly entriesEstimate: number;
  /** Block bytes written to the image so far. */
  readonly bytesWritten: number;
}

export interface RestoreStats {
  readonly volumeId: string;
  readonly generation: number;
  readonly sizeBytes: number;
  readonly indexEntries: number;
  readonly dataBlocks: number;
  readonly zeroBlocks: number;
  readonly segmentRequests: number;
  readonly segmentBytesRead: number;
}

async function resolveManifest(repo: Repo, generation: number | undefined): Promise<GenerationManifest> {
  if (generation !== undefined) return readGeneration(repo, generation);
  const m = await readCommittedManifest(repo);
  if (!m)
    throw new InvalidArgumentError(
      `repository ${repo.prefix || "(bucket root)"} has no committed generation`,
    );
  return m;
}

function findVolume(manifest: GenerationManifest, volumeId: string): ManifestVolume {
  const v = manifest.volumes.find((x) => x.volumeId === volumeId);
  if (!v) {
    throw new InvalidArgumentError(
      `generation ${manifest.generation} has no volume ${volumeId}; it has ${manifest.volumes.map((x) => x.volumeId).join(", ")}`,
    );
  }
  return v;
}

export interface ReadVolumeOptions extends FetchOptions {
  readonly volumeId: string;
  /** @default the committed generation (HEAD) */
  readonly generation?: number;
  /** Use this manifest instead of reading one. */
  readonly manifest?: GenerationManifest;
  /** Called after every batch of index entries is read (for progress displays). */
  readonly onProgress?: (progress: RestoreProgress) => void;
}

/**
 * Reads one volume of a generation the way restore does and hands every stored block to `onBlock`
 * (in no particular order; unwritten and zero blocks are not handed over: they read as zeros): the
 * manifest through HEAD or its commit record, the index root and runs checked against their pins, the
 * root's size against the manifest's, every block number against the volume size, every ref against
 * its segment's sealed footer, every block against its SHA-256. Throws on the first problem, naming
 * the object; never hands over a byte that did not check out.
 */
export async function readVolume(
  repo: Repo,
  options: ReadVolumeOptions,
  onBlock: (block: number, raw: Uint8Array) => Promise<void> | void,
): Promise<RestoreStats> {
  const manifest = options.manifest ?? (await resolveManifest(repo, options.generation));
  const volume = findVolume(manifest, options.volumeId);
  const index = await openVolumeIndex(repo, volume.volumeId, volume.index);
  const rootKey = keys.volumeIndex(repo, volume.volumeId);
  if (index.root.sizeBytes !== volume.sizeBytes) {
    throw new CorruptObjectError(
      rootKey,
      index.versionId,
      `it describes ${index.root.sizeBytes} bytes but generation ${manifest.generation} says ${volume.sizeBytes}`,
    );
  }
  const blockCount = Math.ceil(volume.sizeBytes / BLOCK_SIZE);
  const fetchStats: FetchStats = { requests: 0, bytesRead: 0, blocks: 0 };
  const footers = new SegmentFooters(repo);
  let zeroBlocks = 0;
  let entriesDone = 0;
  let bytesWritten = 0;
  const entriesEstimate =
    (index.root.base?.entries ?? 0) + index.root.deltas.reduce((acc, d) => acc + d.entries, 0);
  const entries = await index.scan(async (batch) => {
    for (const e of batch) {
      if (e.block >= blockCount) {
        throw new CorruptObjectError(
          rootKey,
          index.versionId,
          `block ${e.block} is beyond the volume size of ${blockCount} blocks`,
        );
      }
      if (e.ref.codec === Codec.zero) zeroBlocks++;
    }
    await fetchBlocks(
      repo,
      batch,
      async (block, raw) => {
        await onBlock(block, raw);
        bytesWritten += raw.byteLength;
      },
      options,
      fetchStats,
      footers,
    );
    entriesDone += batch.length;
    options.onProgress?.({ volumeId: volume.volumeId, entriesDone, entriesEstimate, bytesWritten });
  });
  return {
    volumeId: volume.volumeId,
    generation: manifest.generation,
    sizeBytes: volume.sizeBytes,
    indexEntries: entries,
    dataBlocks: fetchStats.blocks,
    zeroBlocks,
    segmentRequests: fetchStats.requests + footers.requests,
    segmentBytesRead: fetchStats.bytesRead,
  };
}

/**
 * Restores one volume of a generation to a sparse raw image (`readVolume` into a file): a temporary
 * file next to `path` is sized first (holes), every checked block is written in place, and only when
 * every block checked out is the file renamed to `path`. On any failure the temporary file is
 * removed and `path` is untouched.
 */
export async function restoreVolume(repo: Repo, options: RestoreVolumeOptions): Promise<RestoreStats> {
  const manifest = options.manifest ?? (await resolveManifest(repo, options.generation));
  const volume = findVolume(manifest, options.volumeId);
  const temp = join(
    dirname(options.path),
    `.${basename(options.path)}.${randomBytes(6).toString("hex")}.partial`,
  );
  const file = await open(temp, "wx");
  let ok = false;
  let stats: RestoreStats;
  try {
    await file.truncate(volume.sizeBytes);
    stats = await readVolume(repo, { ...options, manifest }, async (block, raw) => {
      await file.write(raw, 0, raw.byteLength, block * BLOCK_SIZE);
    });
    await file.sync();
    ok = true;
  } finally {
    await file.close();
    if (!ok) await rm(temp, { force: true });
  }
  await rename(temp, options.path);
  return stats;
}

/**
 * Restores every volume (or `volumeIds`) of a generation to `<directory>/<volumeId>.img`. All-or-nothing:
 * every image is written under a temporary name and renamed only after every volume checked out.
 */
export async function restoreGroup(
  repo: Repo,
  options: FetchOptions & { directory: string; generation?: number; volumeIds?: readonly string[] },
): Promise<RestoreStats[]> {
  const manifest = await resolveManifest(repo, options.generation);
  await mkdir(options.directory, { recursive: true });
  const ids = options.volumeIds ?? manifest.volumes.map((v) => v.volumeId);
  const out: RestoreStats[] = [];
  const tag = randomBytes(6).toString("hex");
  const staged: Array<{ temp: string; path: string }> = [];
  try {
    for (const volumeId of ids) {
      const path = join(options.directory, `${volumeId}.img`);
      const temp = join(options.directory, `.${volumeId}.img.${tag}.partial`);
      staged.push({ temp, path });
      out.push(await restoreVolume(repo, { ...options, manifest, volumeId, path: temp }));
    }
  } catch (error) {
    for (const s of staged) await rm(s.temp, { force: true });
    throw error;
  }
  for (const s of staged) await rename(s.temp, s.path);
  return out;
}
