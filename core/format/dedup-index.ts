import type { BlockRef } from "./block-ref.ts";
import type { BloomFilter } from "./bloom.ts";
import { toHex } from "./bytes.ts";
import { openHashRunRef, readBloomRef } from "./dedup-runs.ts";
import { type RetiredSegments, readRetiredSegments } from "./gc-state.ts";
import { type GenerationManifest, readCommittedManifest } from "./generation.ts";
import type { HashPage, HashRunReader } from "./hash-run.ts";
import { keys, type Repo } from "./layout.ts";
import type { DedupLookup } from "./segment.ts";
import { readVolumeIndexRoot } from "./volume-index.ts";

/*
 * Group-wide dedup lookup over the committed generation's dedup runs (core/format/dedup-runs.ts), plus one
 * attempt's own durable blocks (DedupSession).
 */

interface OpenRun {
  readonly reader: HashRunReader;
  readonly bloom: BloomFilter;
}

export interface GroupDedupStats {
  lookups: number;
  hits: number;
  bloomPositives: number;
  pagesRead: number;
}

/**
 * Group-wide dedup over what is **committed**: hash → ref over every block stored by the committed
 * generation's volumes (their dedup runs, each with a Bloom filter; every run and filter checked
 * against the root's pins). Read-only and immutable while a run holds the group, so a Lambda
 * container may keep it across invocations of one run. Blocks this attempt stored are added by a
 * `session()`, which one attempt owns and drops: nothing a failed attempt kept in memory is reused.
 */
export class GroupDedup implements DedupLookup {
  readonly #runs: readonly OpenRun[];
  readonly #retired: RetiredSegments;
  readonly #cache = new Map<string, Promise<HashPage>>();
  readonly stats: GroupDedupStats = { lookups: 0, hits: 0, bloomPositives: 0, pagesRead: 0 };

  private constructor(runs: readonly OpenRun[], retired: RetiredSegments) {
    this.#runs = runs;
    this.#retired = retired;
  }

  /**
   * Opens the dedup runs of every volume of `manifest` (default: the committed generation) and the
   * retired-segment set (blocks in retired segments are never dedup targets: prune deleted or repacked
   * them, §10.2).
   */
  static async open(repo: Repo, manifest?: GenerationManifest): Promise<GroupDedup> {
    const { retired } = await readRetiredSegments(repo);
    const m = manifest ?? (await readCommittedManifest(repo));
    if (!m) return new GroupDedup([], retired);
    const runs: OpenRun[] = [];
    for (const v of m.volumes) {
      const { root } = await readVolumeIndexRoot(repo, v.volumeId, v.index);
      const from = keys.volumeIndex(repo, v.volumeId);
      const refs = root.dedup ? [...(root.dedup.base ? [root.dedup.base] : []), ...root.dedup.deltas] : [];
      for (const r of refs.reverse()) {
        const reader = await openHashRunRef(repo, r, from);
        runs.push({ reader, bloom: await readBloomRef(repo, r, from) });
      }
    }
    return new GroupDedup(runs, retired);
  }

  get runCount(): number {
    return this.#runs.length;
  }

  /** A lookup for one attempt: the committed blocks plus what this attempt recorded (durable only). */
  session(): DedupSession {
    return new DedupSession(this);
  }

  /** Looks up committed blocks only. */
  async lookup(hashes: readonly Uint8Array[]): Promise<(BlockRef | undefined)[]> {
    return Promise.all(hashes.map((h) => this.lookupCommitted(h)));
  }

  async lookupCommitted(hash: Uint8Array): Promise<BlockRef | undefined> {
    this.stats.lookups++;
    for (const [n, run] of this.#runs.entries()) {
      if (!run.bloom.mayContain(hash)) continue;
      this.stats.bloomPositives++;
      const p = run.reader.pageFor(hash);
      if (p < 0) continue;
      const cacheKey = `${n}:${p}`;
      let page = this.#cache.get(cacheKey);
      if (!page) {
        this.stats.pagesRead++;
        page = run.reader.readPage(p);
        this.#cache.set(cacheKey, page);
        // A failed read is not cached: the next lookup reads the page again.
        page.catch(() => this.#cache.delete(cacheKey));
        if (this.#cache.size > 64) this.#cache.delete(this.#cache.keys().next().value!);
      }
      const loaded = await page;
      const i = loaded.find(hash);
      if (i >= 0) {
        const ref = loaded.ref(i);
        if (this.#retired.has(ref.segment)) continue; // an older run may name a live copy
        this.stats.hits++;
        return ref;
      }
    }
    return undefined;
  }
}

/**
 * One attempt's dedup: committed blocks (GroupDedup) plus the blocks this attempt's SegmentWriter
 * recorded, which it does only once their segment upload was confirmed. Create one per attempt; never
 * share it with a retry.
 */
export class DedupSession implements DedupLookup {
  readonly #group: GroupDedup;
  readonly #durable = new Map<string, BlockRef>();

  constructor(group: GroupDedup) {
    this.#group = group;
  }

  get recorded(): number {
    return this.#durable.size;
  }

  async lookup(hashes: readonly Uint8Array[]): Promise<(BlockRef | undefined)[]> {
    return Promise.all(
      hashes.map(async (h) => {
        const local = this.#durable.get(toHex(h));
        if (local) {
          this.#group.stats.lookups++;
          this.#group.stats.hits++;
          return local;
        }
        return this.#group.lookupCommitted(h);
      }),
    );
  }

  record(hash: Uint8Array, ref: BlockRef): void {
    this.#durable.set(toHex(hash), ref);
  }
}
