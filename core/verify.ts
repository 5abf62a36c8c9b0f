import { createHash } from "node:crypto";
import type { IndexEntry } from "./block-ref.ts";
import { BloomFilter } from "./bloom.ts";
import { equalBytes, toHex } from "./bytes.ts";
import { Codec } from "./codec.ts";
import { type GenerationManifest, readCommittedManifest, readManifest } from "./generation.ts";
import { HashRunReader } from "./hash-run.ts";
import { keys, type Repo } from "./layout.ts";
import { TaskPool } from "./pool.ts";
import { ObjectNotFoundError } from "./ports/object-store.ts";
import { fetchBlocks } from "./restore.ts";
import { readSegmentFooter } from "./segment.ts";
import { openVolumeIndex, type VolumeIndex } from "./volume-index.ts";

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
 * Verify: structural (every index run readable and checksummed, every ref resolves to an existing
 * segment whose footer agrees with it) and, for `readData` of the segments, every referenced block
 * re-read and re-hashed. Reports problems; does not throw for damage it finds.
 */
export async function verifyGeneration(repo: Repo, options: VerifyOptions = {}): Promise<VerifyReport> {
  const problems: VerifyProblem[] = [];
  let manifest: GenerationManifest | undefined;
  try {
    manifest =
      options.generation !== undefined
        ? await readManifest(repo, options.generation)
        : await readCommittedManifest(repo);
  } catch (error) {
    const key =
      options.generation !== undefined ? keys.generation(repo, options.generation) : keys.head(repo);
    problems.push({ kind: "manifest", key, message: message(error) });
  }
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
  let segmentsReadData = 0;
  let blocksReHashed = 0;
  let indexEntries = 0;
  const volumes = manifest.volumes.filter(
    (v) => !options.volumeIds || options.volumeIds.includes(v.volumeId),
  );
  const opened: Array<{ volumeId: string; indexKey: string; index: VolumeIndex }> = [];
  let bound = 0;
  for (const v of volumes) {
    try {
      const index = await openVolumeIndex(repo, v.volumeId, v.indexVersionId ?? undefined);
      opened.push({ volumeId: v.volumeId, indexKey: v.indexKey, index });
      bound += index.readers.reduce((n, r) => n + r.entryCount, 0);
      // Dedup runs (group-wide dedup reads them): trailer, directory and Bloom filter must check out.
      const dedup = index.root.dedup;
      for (const d of dedup ? [dedup.base, ...dedup.deltas] : []) {
        if (!d) continue;
        try {
          await HashRunReader.open(repo.store, d.key, d.bytes);
          BloomFilter.decode((await repo.store.get(d.bloomKey)).body, d.bloomKey);
        } catch (error) {
          const key = (error as { key?: string }).key ?? d.key;
          problems.push({ kind: "dedup", key, volumeId: v.volumeId, message: message(error) });
        }
      }
    } catch (error) {
      const key = (error as { key?: string }).key ?? v.indexKey;
      problems.push({ kind: "index", key, volumeId: v.volumeId, message: message(error) });
    }
  }
  // Refs are grouped by segment in memory; big groups are checked in passes over a partition of the
  // segment ids each, so memory stays at about `maxRefsInMemory` refs.
  const passes = Math.max(1, Math.ceil(bound / (options.maxRefsInMemory ?? 400_000)));
  const failed = new Set<string>();
  let segmentCount = 0;
  for (let pass = 0; pass < passes; pass++) {
    const bySegment = new Map<string, Array<IndexEntry & { volumeId: string }>>();
    for (const o of opened) {
      if (failed.has(o.volumeId)) continue;
      try {
        const n = await o.index.scan((batch) => {
          for (const e of batch) {
            if (e.ref.codec === Codec.zero) continue;
            if (passes > 1 && Number.parseInt(e.ref.segment!.slice(0, 8), 16) % passes !== pass) continue;
            let list = bySegment.get(e.ref.segment!);
            if (!list) {
              list = [];
              bySegment.set(e.ref.segment!, list);
            }
            list.push({ ...e, volumeId: o.volumeId });
          }
        });
        if (pass === 0) indexEntries += n;
      } catch (error) {
        failed.add(o.volumeId);
        const key = (error as { key?: string }).key ?? o.indexKey;
        problems.push({ kind: "index", key, volumeId: o.volumeId, message: message(error) });
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
    problems,
  };

  async function checkSegments(
    bySegment: Map<string, Array<IndexEntry & { volumeId: string }>>,
  ): Promise<void> {
    const pool = new TaskPool(options.concurrency ?? 8);
    for (const [segmentId, refs] of bySegment) {
      await pool.run(async () => {
        const key = keys.segment(repo, segmentId);
        let footerOk = false;
        try {
          const footer = await readSegmentFooter(repo.store, key);
          const byOffset = new Map(footer.entries.map((f) => [f.offset, f]));
          footerOk = true;
          if (footer.segmentId !== segmentId) {
            problems.push({ kind: "segment", key, message: `footer names segment ${footer.segmentId}` });
            footerOk = false;
          }
          for (const e of refs) {
            const f = byOffset.get(e.ref.offset);
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
                block: e.block,
                message: `index ref (offset ${e.ref.offset}, length ${e.ref.length}, sha256 ${toHex(e.ref.sha256)}) has no matching footer entry`,
              });
            }
          }
        } catch (error) {
          problems.push({
            kind: error instanceof ObjectNotFoundError ? "missing-segment" : "segment",
            key,
            volumeId: refs[0]?.volumeId,
            block: refs[0]?.block,
            message: `${message(error)} (referenced by ${refs.length} block(s))`,
          } as VerifyProblem);
        }
        if (footerOk && selected(segmentId, fraction, salt)) {
          segmentsReadData++;
          try {
            await fetchBlocks(
              repo,
              refs,
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
