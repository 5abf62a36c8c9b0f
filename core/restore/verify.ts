import { createHash } from "node:crypto";
import type { IndexEntry } from "../format/block-ref.ts";
import { BLOCK_SIZE, equalBytes, toHex } from "../format/bytes.ts";
import { Codec } from "../format/codec.ts";
import { openHashRunRef, readBloomRef } from "../format/dedup-index.ts";
import { RetiredSegments, readRetiredSegments, retiredSegmentsKey } from "../format/gc-state.ts";
import {
  type GenerationManifest,
  readCommitRecord,
  readCommittedManifest,
  readGeneration,
  readHead,
} from "../format/generation.ts";
import { keys, type Repo } from "../format/layout.ts";
import { openVolumeIndex, type VolumeIndex, type VolumeIndexRoot } from "../format/volume-index.ts";
import { ObjectNotFoundError } from "../ports/object-store.ts";
import { TaskPool } from "../util/pool.ts";
import { fetchBlocks, type LocatedBlock, SegmentFooters } from "./restore.ts";

export type VerifyProblemKind =
  | "manifest"
  | "index"
  | "dedup"
  | "missing-segment"
  | "segment"
  | "ref-mismatch"
  | "block-data";

export interface VerifyProblem {
  readonly kind: VerifyProblemKind;
  /** The object at fault. */
  readonly key: string;
  readonly volumeId?: string;
  readonly block?: number;
  readonly message: string;
}

export interface VerifyOptions {
  /** @default the committed generation */
  readonly generation?: number;
  /** Verify this (already read) manifest instead of reading one. */
  readonly manifest?: GenerationManifest;
  readonly volumeIds?: readonly string[];
  /**
   * Fraction of referenced segments whose blocks are re-read and re-hashed (0 = structural only,
   * 1 = everything; like restic's --read-data-subset). Selection is by segment id hash, so the same
   * fraction with the same `salt` checks the same segments. @default 0
   */
  readonly readData?: number;
  readonly salt?: string;
  /** @default 8 */
  readonly concurrency?: number;
  /** Refs held in memory at once; larger groups are verified in several passes. @default 400000 */
  readonly maxRefsInMemory?: number;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly generation: number | undefined;
  readonly volumes: number;
  readonly indexEntries: number;
  readonly segments: number;
  readonly segmentsReadData: number;
  readonly blocksReHashed: number;
  /** Dedup refs into segments prune retired (not used by backups any more; not problems). */
  readonly dedupRefsRetired?: number;
  readonly problems: readonly VerifyProblem[];
}

function selected(segmentId: string, fraction: number, salt: string): boolean {
  if (fraction >= 1) return true;
  if (fraction <= 0) return false;
  const h = createHash("sha256").update(salt).update(segmentId).digest();
  return h.readUInt32BE(0) / 0x1_0000_0000 < fraction;
}

function message(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/**
 * Checks the commit record of `generation` (when there is one: the record of HEAD's generation may not
 * be written yet): it must open (seal, shape, key) and, for HEAD's generation, pin the manifest HEAD pins.
 */
async function checkCommitRecord(repo: Repo, generation: number): Promise<VerifyProblem[]> {
  const key = keys.commit(repo, generation);
  try {
    const record = await readCommitRecord(repo, generation);
    if (!record) return [];
    const head = (await readHead(repo))?.head;
    if (
      head?.generation === generation &&
      head.commit &&
      head.commit.manifest.sha256 !== record.manifest.sha256
    ) {
      return [
        {
          kind: "manifest",
          key,
          message: `it pins manifest sha256 ${record.manifest.sha256} for generation ${generation}, HEAD pins ${head.commit.manifest.sha256}`,
        },
      ];
    }
    return [];
  } catch (error) {
    return [{ kind: "manifest", key: (error as { key?: string }).key ?? key, message: message(error) }];
  }
}

/**
 * Verify: structural (every index run readable and checksummed, every ref resolves to an existing
 * segment whose footer agrees with it) and, for `readData` of the segments, every referenced block
 * re-read and re-hashed. Reports problems; does not throw for damage it finds.
 */
export async function verifyGeneration(repo: Repo, options: VerifyOptions = {}): Promise<VerifyReport> {
  const problems: VerifyProblem[] = [];
  let manifest: GenerationManifest | undefined;
  try {
    manifest =
      options.manifest ??
      (options.generation !== undefined
        ? await readGeneration(repo, options.generation)
        : await readCommittedManifest(repo));
  } catch (error) {
    const key =
      (error as { key?: string }).key ??
      (options.generation !== undefined ? keys.commit(repo, options.generation) : keys.head(repo));
    problems.push({ kind: "manifest", key, message: message(error) });
  }
  // The generation's commit record: what restore reads once HEAD has moved on, and what the next run's
  // fence checks against HEAD. A damaged one would otherwise go unreported until then.
  if (manifest && !options.manifest) problems.push(...(await checkCommitRecord(repo, manifest.generation)));
  if (!manifest) {
    return {
      ok: problems.length === 0,
      generation: options.generation,
      volumes: 0,
      indexEntries: 0,
      segments: 0,
      segmentsReadData: 0,
      blocksReHashed: 0,
      problems,
    };
  }
  const fraction = options.readData ?? 0;
  const salt = options.salt ?? "";
  const footers = new SegmentFooters(repo, 64);
  let dedupRefsRetired = 0;
  let retired: RetiredSegments;
  try {
    retired = (await readRetiredSegments(repo)).retired;
  } catch (error) {
    retired = new RetiredSegments();
    problems.push({ kind: "dedup", key: retiredSegmentsKey(repo), message: message(error) });
  }
  let segmentsReadData = 0;
  let blocksReHashed = 0;
  let indexEntries = 0;
  const volumes = manifest.volumes.filter(
    (v) => !options.volumeIds || options.volumeIds.includes(v.volumeId),
  );
  const opened: Array<{ volumeId: string; indexKey: string; index: VolumeIndex; blocks: number }> = [];
  const dedupRefs: Array<{ volumeId: string; indexKey: string; root: VolumeIndexRoot }> = [];
  let bound = 0;
  for (const v of volumes) {
    const indexKey = keys.volumeIndex(repo, v.volumeId);
    try {
      const index = await openVolumeIndex(repo, v.volumeId, v.index);
      if (index.root.sizeBytes !== v.sizeBytes) {
        problems.push({
          kind: "index",
          key: indexKey,
          volumeId: v.volumeId,
          message: `the index root describes ${index.root.sizeBytes} bytes, the manifest ${v.sizeBytes}`,
        });
        continue;
      }
      opened.push({ volumeId: v.volumeId, indexKey, index, blocks: Math.ceil(v.sizeBytes / BLOCK_SIZE) });
      bound += index.readers.reduce((n, r) => n + r.entryCount, 0);
      if (index.root.dedup) {
        dedupRefs.push({ volumeId: v.volumeId, indexKey, root: index.root });
        const d = index.root.dedup;
        bound += [d.base, ...d.deltas].reduce((n, r) => n + (r?.entries ?? 0), 0);
      }
    } catch (error) {
      const key = (error as { key?: string }).key ?? indexKey;
      problems.push({ kind: "index", key, volumeId: v.volumeId, message: message(error) });
    }
  }
  // Refs are grouped by segment in memory; big groups are checked in passes over a partition of the
  // segment ids each, so memory stays at about `maxRefsInMemory` refs.
  const passes = Math.max(1, Math.ceil(bound / (options.maxRefsInMemory ?? 400_000)));
  const failed = new Set<string>();
  let segmentCount = 0;
  const failedDedup = new Set<string>();
  const add = (
    bySegment: Map<string, Array<IndexEntry & { volumeId: string }>>,
    pass: number,
    e: IndexEntry,
    volumeId: string,
  ) => {
    if (e.ref.codec === Codec.zero) return;
    if (passes > 1 && Number.parseInt(e.ref.segment!.slice(0, 8), 16) % passes !== pass) return;
    let list = bySegment.get(e.ref.segment!);
    if (!list) {
      list = [];
      bySegment.set(e.ref.segment!, list);
    }
    list.push({ ...e, volumeId });
  };
  for (let pass = 0; pass < passes; pass++) {
    const bySegment = new Map<string, Array<IndexEntry & { volumeId: string }>>();
    for (const o of opened) {
      if (failed.has(o.volumeId)) continue;
      try {
        let beyond: number | undefined;
        const n = await o.index.scan((batch) => {
          for (const e of batch) {
            if (e.block >= o.blocks) beyond ??= e.block;
            add(bySegment, pass, e, o.volumeId);
          }
        });
        if (beyond !== undefined) {
          problems.push({
            kind: "index",
            key: o.indexKey,
            volumeId: o.volumeId,
            block: beyond,
            message: `the index names block ${beyond}, beyond the volume's ${o.blocks} blocks`,
          });
        }
        if (pass === 0) indexEntries += n;
      } catch (error) {
        failed.add(o.volumeId);
        const key = (error as { key?: string }).key ?? o.indexKey;
        problems.push({ kind: "index", key, volumeId: o.volumeId, message: message(error) });
      }
    }
    // Dedup runs (a backup dedups against them): every run, Bloom filter and page is read and checked,
    // and every ref they vouch for is checked against its segment like an index ref.
    for (const d of dedupRefs) {
      if (failedDedup.has(d.volumeId)) continue;
      const dedup = d.root.dedup!;
      for (const r of [...(dedup.base ? [dedup.base] : []), ...dedup.deltas]) {
        try {
          const reader = await openHashRunRef(repo, r, d.indexKey);
          if (pass === 0) await readBloomRef(repo, r, d.indexKey);
          for (let p = 0; p < reader.pageCount; p++) {
            const page = await reader.readPage(p);
            for (let i = 0; i < page.count; i++)
              add(bySegment, pass, { block: -1, ref: page.ref(i) }, d.volumeId);
          }
        } catch (error) {
          failedDedup.add(d.volumeId);
          const key = (error as { key?: string }).key ?? r.key;
          problems.push({ kind: "dedup", key, volumeId: d.volumeId, message: message(error) });
          break;
        }
      }
    }
    segmentCount += bySegment.size;
    await checkSegments(bySegment);
  }
  return {
    ok: problems.length === 0,
    generation: manifest.generation,
    volumes: volumes.length,
    indexEntries,
    segments: segmentCount,
    segmentsReadData,
    blocksReHashed,
    dedupRefsRetired,
    problems,
  };

  async function checkSegments(
    bySegment: Map<string, Array<IndexEntry & { volumeId: string }>>,
  ): Promise<void> {
    const pool = new TaskPool(options.concurrency ?? 8);
    for (const [segmentId, all] of bySegment) {
      await pool.run(async () => {
        const key = keys.segment(repo, segmentId);
        // A dedup ref into a segment prune retired is not used by any backup (§10.2): not damage.
        const refs = retired.has(segmentId) ? all.filter((e) => e.block >= 0) : all;
        dedupRefsRetired += all.length - refs.length;
        if (refs.length === 0) return;
        let located: Map<number, LocatedBlock> | undefined;
        try {
          located = await footers.get(segmentId);
          for (const e of refs) {
            const f = located.get(e.ref.offset);
            if (
              !f ||
              f.length !== e.ref.length ||
              f.codec !== e.ref.codec ||
              !equalBytes(f.sha256, e.ref.sha256)
            ) {
              problems.push({
                kind: "ref-mismatch",
                key,
                volumeId: e.volumeId,
                ...(e.block >= 0 ? { block: e.block } : {}),
                message: `${e.block >= 0 ? "index" : "dedup"} ref (offset ${e.ref.offset}, length ${e.ref.length}, sha256 ${toHex(e.ref.sha256)}) has no matching footer entry`,
              });
            }
          }
        } catch (error) {
          located = undefined;
          problems.push({
            kind: error instanceof ObjectNotFoundError ? "missing-segment" : "segment",
            key: (error as { key?: string }).key ?? key,
            volumeId: refs[0]?.volumeId,
            ...(refs[0] && refs[0].block >= 0 ? { block: refs[0].block } : {}),
            message: `${message(error)} (referenced by ${refs.length} ref(s))`,
          } as VerifyProblem);
        }
        if (located && selected(segmentId, fraction, salt)) {
          segmentsReadData++;
          try {
            const unique = [...new Map(refs.map((r) => [r.ref.offset, r])).values()].flatMap((e) => {
              const f = located.get(e.ref.offset);
              return f ? [{ block: e.block, ref: { ...e.ref, segment: f.segment, offset: f.at } }] : [];
            });
            await fetchBlocks(
              repo,
              unique,
              () => {
                blocksReHashed++;
              },
              { concurrency: 1 },
            );
          } catch (error) {
            problems.push({
              kind: "block-data",
              key,
              volumeId: refs[0]?.volumeId,
              block: (error as { blockIndex?: number }).blockIndex,
              message: message(error),
            } as VerifyProblem);
          }
        }
      });
    }
    await pool.drain();
  }
}
