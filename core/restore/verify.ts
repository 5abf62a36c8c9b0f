import { createHash } from "node:crypto";
import type { IndexEntry } from "../format/block-ref.ts";
import { BLOCK_SIZE, equalBytes, toHex } from "../format/bytes.ts";
import { Codec } from "../format/codec.ts";
import { openHashRunRef, readBloomRef } from "../format/dedup-runs.ts";
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

type SegmentRefs = Map<string, Array<IndexEntry & { volumeId: string }>>;

interface OpenedVolume {
  readonly volumeId: string;
  readonly indexKey: string;
  readonly index: VolumeIndex;
  readonly blocks: number;
}

interface VolumeDedup {
  readonly volumeId: string;
  readonly indexKey: string;
  readonly root: VolumeIndexRoot;
}

/** Reads the manifest to verify; a failure is a problem, not an exception. */
async function readManifest(
  repo: Repo,
  options: VerifyOptions,
  problems: VerifyProblem[],
): Promise<GenerationManifest | undefined> {
  try {
    return (
      options.manifest ??
      (options.generation !== undefined
        ? await readGeneration(repo, options.generation)
        : await readCommittedManifest(repo))
    );
  } catch (error) {
    const key =
      (error as { key?: string }).key ??
      (options.generation !== undefined ? keys.commit(repo, options.generation) : keys.head(repo));
    problems.push({ kind: "manifest", key, message: message(error) });
    return undefined;
  }
}

/** One verification: its options, what it found, and its counters. */
class Verifier {
  readonly problems: VerifyProblem[];
  readonly #repo: Repo;
  readonly #options: VerifyOptions;
  readonly #fraction: number;
  readonly #salt: string;
  readonly #footers: SegmentFooters;
  #retired = new RetiredSegments();
  readonly #failed = new Set<string>();
  readonly #failedDedup = new Set<string>();
  /** Passes over a partition of the segment ids, so memory stays at about `maxRefsInMemory` refs. */
  passes = 1;
  indexEntries = 0;
  segments = 0;
  segmentsReadData = 0;
  blocksReHashed = 0;
  dedupRefsRetired = 0;

  constructor(repo: Repo, options: VerifyOptions, problems: VerifyProblem[]) {
    this.#repo = repo;
    this.#options = options;
    this.problems = problems;
    this.#fraction = options.readData ?? 0;
    this.#salt = options.salt ?? "";
    this.#footers = new SegmentFooters(repo, 64);
  }

  async readRetired(): Promise<void> {
    try {
      this.#retired = (await readRetiredSegments(this.#repo)).retired;
    } catch (error) {
      this.problems.push({ kind: "dedup", key: retiredSegmentsKey(this.#repo), message: message(error) });
    }
  }

  /** Opens each volume's index (checking its size against the manifest); sets the number of passes. */
  async openVolumes(
    volumes: GenerationManifest["volumes"],
  ): Promise<{ opened: OpenedVolume[]; dedup: VolumeDedup[] }> {
    const opened: OpenedVolume[] = [];
    const dedup: VolumeDedup[] = [];
    let bound = 0;
    for (const v of volumes) {
      const indexKey = keys.volumeIndex(this.#repo, v.volumeId);
      try {
        const index = await openVolumeIndex(this.#repo, v.volumeId, v.index);
        if (index.root.sizeBytes !== v.sizeBytes) {
          this.problems.push({
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
          dedup.push({ volumeId: v.volumeId, indexKey, root: index.root });
          const d = index.root.dedup;
          bound += [d.base, ...d.deltas].reduce((n, r) => n + (r?.entries ?? 0), 0);
        }
      } catch (error) {
        const key = (error as { key?: string }).key ?? indexKey;
        this.problems.push({ kind: "index", key, volumeId: v.volumeId, message: message(error) });
      }
    }
    this.passes = Math.max(1, Math.ceil(bound / (this.#options.maxRefsInMemory ?? 400_000)));
    return { opened, dedup };
  }

  /** Adds a stored ref to this pass's segment map (when its segment falls into the pass). */
  #add(bySegment: SegmentRefs, pass: number, e: IndexEntry, volumeId: string): void {
    if (e.ref.codec === Codec.zero) return;
    if (this.passes > 1 && Number.parseInt(e.ref.segment!.slice(0, 8), 16) % this.passes !== pass) return;
    let list = bySegment.get(e.ref.segment!);
    if (!list) {
      list = [];
      bySegment.set(e.ref.segment!, list);
    }
    list.push({ ...e, volumeId });
  }

  /** Scans every opened index into `bySegment`; reports unreadable indexes and blocks past the end. */
  async collectIndexRefs(
    opened: readonly OpenedVolume[],
    bySegment: SegmentRefs,
    pass: number,
  ): Promise<void> {
    for (const o of opened) {
      if (this.#failed.has(o.volumeId)) continue;
      try {
        let beyond: number | undefined;
        const n = await o.index.scan((batch) => {
          for (const e of batch) {
            if (e.block >= o.blocks) beyond ??= e.block;
            this.#add(bySegment, pass, e, o.volumeId);
          }
        });
        if (beyond !== undefined) {
          this.problems.push({
            kind: "index",
            key: o.indexKey,
            volumeId: o.volumeId,
            block: beyond,
            message: `the index names block ${beyond}, beyond the volume's ${o.blocks} blocks`,
          });
        }
        if (pass === 0) this.indexEntries += n;
      } catch (error) {
        this.#failed.add(o.volumeId);
        const key = (error as { key?: string }).key ?? o.indexKey;
        this.problems.push({ kind: "index", key, volumeId: o.volumeId, message: message(error) });
      }
    }
  }

  /**
   * Dedup runs (a backup dedups against them): every run, Bloom filter and page is read and checked,
   * and every ref they vouch for is checked against its segment like an index ref.
   */
  async collectDedupRefs(
    dedupRefs: readonly VolumeDedup[],
    bySegment: SegmentRefs,
    pass: number,
  ): Promise<void> {
    const repo = this.#repo;
    for (const d of dedupRefs) {
      if (this.#failedDedup.has(d.volumeId)) continue;
      const dedup = d.root.dedup!;
      for (const r of [...(dedup.base ? [dedup.base] : []), ...dedup.deltas]) {
        try {
          const reader = await openHashRunRef(repo, r, d.indexKey);
          if (pass === 0) await readBloomRef(repo, r, d.indexKey);
          for (let p = 0; p < reader.pageCount; p++) {
            const page = await reader.readPage(p);
            for (let i = 0; i < page.count; i++)
              this.#add(bySegment, pass, { block: -1, ref: page.ref(i) }, d.volumeId);
          }
        } catch (error) {
          this.#failedDedup.add(d.volumeId);
          const key = (error as { key?: string }).key ?? r.key;
          this.problems.push({ kind: "dedup", key, volumeId: d.volumeId, message: message(error) });
          break;
        }
      }
    }
  }

  async checkSegments(bySegment: SegmentRefs): Promise<void> {
    this.segments += bySegment.size;
    const pool = new TaskPool(this.#options.concurrency ?? 8);
    for (const [segmentId, all] of bySegment) {
      await pool.run(() => this.#checkSegment(segmentId, all));
    }
    await pool.drain();
  }

  async #checkSegment(segmentId: string, all: Array<IndexEntry & { volumeId: string }>): Promise<void> {
    const key = keys.segment(this.#repo, segmentId);
    // A dedup ref into a segment prune retired is not used by any backup (§10.2): not damage.
    const refs = this.#retired.has(segmentId) ? all.filter((e) => e.block >= 0) : all;
    this.dedupRefsRetired += all.length - refs.length;
    if (refs.length === 0) return;
    let located: Map<number, LocatedBlock> | undefined;
    try {
      located = await this.#footers.get(segmentId);
      this.#checkRefs(key, located, refs);
    } catch (error) {
      located = undefined;
      this.problems.push({
        kind: error instanceof ObjectNotFoundError ? "missing-segment" : "segment",
        key: (error as { key?: string }).key ?? key,
        volumeId: refs[0]?.volumeId,
        ...(refs[0] && refs[0].block >= 0 ? { block: refs[0].block } : {}),
        message: `${message(error)} (referenced by ${refs.length} ref(s))`,
      } as VerifyProblem);
    }
    if (located && selected(segmentId, this.#fraction, this.#salt)) await this.#reHash(key, located, refs);
  }

  /** Every ref must match its segment's footer entry (length, codec, SHA-256). */
  #checkRefs(
    key: string,
    located: Map<number, LocatedBlock>,
    refs: ReadonlyArray<IndexEntry & { volumeId: string }>,
  ): void {
    for (const e of refs) {
      const f = located.get(e.ref.offset);
      if (!f || f.length !== e.ref.length || f.codec !== e.ref.codec || !equalBytes(f.sha256, e.ref.sha256)) {
        this.problems.push({
          kind: "ref-mismatch",
          key,
          volumeId: e.volumeId,
          ...(e.block >= 0 ? { block: e.block } : {}),
          message: `${e.block >= 0 ? "index" : "dedup"} ref (offset ${e.ref.offset}, length ${e.ref.length}, sha256 ${toHex(e.ref.sha256)}) has no matching footer entry`,
        });
      }
    }
  }

  /** Re-reads and re-hashes every referenced block of a selected segment. */
  async #reHash(
    key: string,
    located: Map<number, LocatedBlock>,
    refs: ReadonlyArray<IndexEntry & { volumeId: string }>,
  ): Promise<void> {
    this.segmentsReadData++;
    try {
      const unique = [...new Map(refs.map((r) => [r.ref.offset, r])).values()].flatMap((e) => {
        const f = located.get(e.ref.offset);
        return f ? [{ block: e.block, ref: { ...e.ref, segment: f.segment, offset: f.at } }] : [];
      });
      await fetchBlocks(
        this.#repo,
        unique,
        () => {
          this.blocksReHashed++;
        },
        { concurrency: 1 },
      );
    } catch (error) {
      this.problems.push({
        kind: "block-data",
        key,
        volumeId: refs[0]?.volumeId,
        block: (error as { blockIndex?: number }).blockIndex,
        message: message(error),
      } as VerifyProblem);
    }
  }
}

/**
 * Verify: structural (every index run readable and checksummed, every ref resolves to an existing
 * segment whose footer agrees with it) and, for `readData` of the segments, every referenced block
 * re-read and re-hashed. Reports problems; does not throw for damage it finds.
 */
export async function verifyGeneration(repo: Repo, options: VerifyOptions = {}): Promise<VerifyReport> {
  const problems: VerifyProblem[] = [];
  const manifest = await readManifest(repo, options, problems);
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
  const v = new Verifier(repo, options, problems);
  await v.readRetired();
  const volumes = manifest.volumes.filter(
    (x) => !options.volumeIds || options.volumeIds.includes(x.volumeId),
  );
  const { opened, dedup } = await v.openVolumes(volumes);
  for (let pass = 0; pass < v.passes; pass++) {
    const bySegment: SegmentRefs = new Map();
    await v.collectIndexRefs(opened, bySegment, pass);
    await v.collectDedupRefs(dedup, bySegment, pass);
    await v.checkSegments(bySegment);
  }
  return {
    ok: problems.length === 0,
    generation: manifest.generation,
    volumes: volumes.length,
    indexEntries: v.indexEntries,
    segments: v.segments,
    segmentsReadData: v.segmentsReadData,
    blocksReHashed: v.blocksReHashed,
    dedupRefsRetired: v.dedupRefsRetired,
    problems,
  };
}
