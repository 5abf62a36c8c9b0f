import { mkdir, open } from "node:fs/promises";
import { join } from "node:path";
import type { BlockRef, IndexEntry } from "./block-ref.ts";
import { BLOCK_SIZE } from "./bytes.ts";
import { Codec } from "./codec.ts";
import { CorruptObjectError, InvalidArgumentError } from "./errors.ts";
import {
  type GenerationManifest,
  type ManifestVolume,
  readCommittedManifest,
  readManifest,
} from "./generation.ts";
import { keys, type Repo } from "./layout.ts";
import { TaskPool } from "./pool.ts";
import { openStoredBlock } from "./segment.ts";
import { openVolumeIndex } from "./volume-index.ts";

export interface FetchOptions {
  /** Ranged GETs in flight. @default 8 */
  readonly concurrency?: number;
  /** Largest coalesced range. @default 8 MiB */
  readonly maxRangeBytes?: number;
  /** Bytes of unneeded data a range may span to join two refs. @default 256 KiB */
  readonly gapBytes?: number;
}

export interface FetchStats {
  requests: number;
  bytesRead: number;
  blocks: number;
}

/**
 * Reads stored blocks with coalesced ranged GETs, checks each block's SHA-256 and hands the raw
 * block to `onBlock`. Zero refs are skipped. Memory: `concurrency` × `maxRangeBytes`.
 * @throws BlockIntegrityError / CorruptObjectError / ObjectNotFoundError naming the segment key
 */
export async function fetchBlocks(
  repo: Repo,
  entries: readonly IndexEntry[],
  onBlock: (block: number, raw: Uint8Array, ref: BlockRef) => Promise<void> | void,
  options: FetchOptions = {},
  stats: FetchStats = { requests: 0, bytesRead: 0, blocks: 0 },
): Promise<FetchStats> {
  const maxRange = options.maxRangeBytes ?? 8 * 1024 * 1024;
  const gap = options.gapBytes ?? 256 * 1024;
  const stored = entries.filter((e) => e.ref.codec !== Codec.zero);
  stored.sort((a, b) =>
    a.ref.segment === b.ref.segment ? a.ref.offset - b.ref.offset : a.ref.segment! < b.ref.segment! ? -1 : 1,
  );
  const pool = new TaskPool(options.concurrency ?? 8);
  let i = 0;
  while (i < stored.length) {
    const first = stored[i]!;
    const segment = first.ref.segment!;
    const start = first.ref.offset;
    let end = start + first.ref.length;
    let j = i + 1;
    while (j < stored.length) {
      const r = stored[j]!.ref;
      if (
        r.segment !== segment ||
        r.offset > end + gap ||
        Math.max(end, r.offset + r.length) - start > maxRange
      )
        break;
      end = Math.max(end, r.offset + r.length);
      j++;
    }
    const group = stored.slice(i, j);
    i = j;
    await pool.run(async () => {
      const key = keys.segment(repo, segment);
      const got = await repo.store.get(key, { range: { start, end } });
      stats.requests++;
      stats.bytesRead += got.body.byteLength;
      if (got.body.byteLength !== end - start) {
        throw new CorruptObjectError(
          key,
          got.versionId,
          `expected bytes ${start}-${end - 1}, the segment is ${got.size} bytes`,
        );
      }
      for (const e of group) {
        const slice = got.body.subarray(e.ref.offset - start, e.ref.offset - start + e.ref.length);
        const raw = openStoredBlock(key, e.ref, slice, e.block);
        stats.blocks++;
        const r = onBlock(e.block, raw, e.ref);
        if (r) await r;
      }
    });
  }
  await pool.drain();
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
  if (generation !== undefined) return readManifest(repo, generation);
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

/**
 * Restores one volume of a generation to a sparse raw image: the file is sized first (holes), then
 * every stored block is read (ranged, coalesced, parallel), SHA-256-checked and written in place.
 * Unwritten and zero blocks stay holes.
 */
export async function restoreVolume(repo: Repo, options: RestoreVolumeOptions): Promise<RestoreStats> {
  const manifest = options.manifest ?? (await resolveManifest(repo, options.generation));
  const volume = findVolume(manifest, options.volumeId);
  const index = await openVolumeIndex(repo, volume.volumeId, volume.indexVersionId ?? undefined);
  const blockCount = Math.ceil(volume.sizeBytes / BLOCK_SIZE);
  const file = await open(options.path, "w");
  const fetchStats: FetchStats = { requests: 0, bytesRead: 0, blocks: 0 };
  let zeroBlocks = 0;
  let entries = 0;
  let entriesDone = 0;
  let bytesWritten = 0;
  const entriesEstimate =
    (index.root.base?.entries ?? 0) + index.root.deltas.reduce((acc, d) => acc + d.entries, 0);
  try {
    await file.truncate(volume.sizeBytes);
    entries = await index.scan(async (batch) => {
      for (const e of batch) {
        if (e.block >= blockCount) {
          throw new CorruptObjectError(
            index.root.base?.key ?? keys.volumeIndex(repo, volume.volumeId),
            volume.indexVersionId ?? undefined,
            `block ${e.block} is beyond the volume size of ${blockCount} blocks`,
          );
        }
        if (e.ref.codec === Codec.zero) zeroBlocks++;
      }
      await fetchBlocks(
        repo,
        batch,
        async (block, raw) => {
          await file.write(raw, 0, raw.byteLength, block * BLOCK_SIZE);
          bytesWritten += raw.byteLength;
        },
        options,
        fetchStats,
      );
      entriesDone += batch.length;
      options.onProgress?.({ volumeId: volume.volumeId, entriesDone, entriesEstimate, bytesWritten });
    });
  } finally {
    await file.close();
  }
  return {
    volumeId: volume.volumeId,
    generation: manifest.generation,
    sizeBytes: volume.sizeBytes,
    indexEntries: entries,
    dataBlocks: fetchStats.blocks,
    zeroBlocks,
    segmentRequests: fetchStats.requests,
    segmentBytesRead: fetchStats.bytesRead,
  };
}

/** Restores every volume (or `volumeIds`) of a generation to `<directory>/<volumeId>.img`. */
export async function restoreGroup(
  repo: Repo,
  options: FetchOptions & { directory: string; generation?: number; volumeIds?: readonly string[] },
): Promise<RestoreStats[]> {
  const manifest = await resolveManifest(repo, options.generation);
  await mkdir(options.directory, { recursive: true });
  const ids = options.volumeIds ?? manifest.volumes.map((v) => v.volumeId);
  const out: RestoreStats[] = [];
  for (const volumeId of ids) {
    out.push(
      await restoreVolume(repo, {
        ...options,
        manifest,
        volumeId,
        path: join(options.directory, `${volumeId}.img`),
      }),
    );
  }
  return out;
}
