import type { BlockRef } from "../format/block-ref.ts";
import { toHex } from "../format/bytes.ts";
import type { DedupLookup } from "../format/segment.ts";

/**
 * Dedup by hash within one process (e.g. one Lambda run, or all volumes of `writeGeneration`):
 * remembers every block a SegmentWriter stored. Share one instance between writers that run one
 * after another; a ref is only safe to hand out once the writer that stored it has closed.
 * Memory: ~150 bytes per stored block.
 */
export class MemoryDedup implements DedupLookup {
  readonly #refs = new Map<string, BlockRef>();

  get size(): number {
    return this.#refs.size;
  }

  async lookup(hashes: readonly Uint8Array[]): Promise<(BlockRef | undefined)[]> {
    return hashes.map((h) => this.#refs.get(toHex(h)));
  }

  record(hash: Uint8Array, ref: BlockRef): void {
    this.#refs.set(toHex(hash), ref);
  }
}
