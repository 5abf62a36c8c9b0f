import { createCipheriv, createHash, hash } from "node:crypto";
import { fractionThreshold, hash4 } from "./hash.ts";

/**
 * Synthetic block sets: which indices a snapshot wrote and what those blocks contain are pure
 * functions of (seed, block index, generation), so a 16 TiB volume costs no memory and listing it
 * is a linear scan of a cheap hash predicate.
 */

export const BLOCK_SIZE = 524288;
const PAGE = 4096;
const PAGES_PER_BLOCK = BLOCK_SIZE / PAGE; // 128
const POOL_PAGES = 256; // 1 MiB pool of random pages per seed

const SALT_MEMBER = 0x6d656d62;
const SALT_ZERO = 0x7a65726f;
const SALT_COMPRESSIBLE = 0x636f6d70;
const SALT_LAYOUT = 0x6c61796f;

export interface SyntheticParams {
  /** Lineage seed (uint32). */
  readonly seed: number;
  /** Generation of the snapshot in its lineage: 0 for a root, parent's + 1 otherwise. */
  readonly generation: number;
  /** Fraction of the volume's indices this snapshot wrote (a root's written, a child's changed). */
  readonly fraction: number;
  /** Fraction of written blocks that are all zeros. */
  readonly zeroFraction: number;
  /** Fraction of written blocks that compress about 4:1. */
  readonly compressibleFraction: number;
}

const poolCache = new Map<number, Buffer>();

function pool(seed: number): Buffer {
  let p = poolCache.get(seed);
  if (p === undefined) {
    const key = createHash("sha256").update(`cgmirror-synthetic-pool:${seed}`).digest();
    const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
    p = Buffer.concat([cipher.update(Buffer.alloc(POOL_PAGES * PAGE)), cipher.final()]);
    poolCache.set(seed, p);
  }
  return p;
}

const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);
const ZERO_CHECKSUM = hash("sha256", ZERO_BLOCK, "base64");

export class SyntheticBlocks {
  readonly kind = "synthetic";
  readonly params: SyntheticParams;
  readonly #threshold: number;
  readonly #zeroThreshold: number;
  readonly #compressibleThreshold: number;

  constructor(params: SyntheticParams) {
    if (!Number.isInteger(params.seed) || params.seed < 0 || params.seed > 0xffffffff) {
      throw new TypeError(`seed must be an integer in [0, 2^32), got ${params.seed}`);
    }
    if (!Number.isInteger(params.generation) || params.generation < 0) {
      throw new TypeError(`generation must be an integer >= 0, got ${params.generation}`);
    }
    this.params = params;
    this.#threshold = fractionThreshold(params.fraction);
    this.#zeroThreshold = fractionThreshold(params.zeroFraction);
    this.#compressibleThreshold = fractionThreshold(params.compressibleFraction);
  }

  /** Whether this snapshot wrote block `index` (the lineage predicate). */
  has(index: number): boolean {
    return hash4(this.params.seed, index, this.params.generation, SALT_MEMBER) < this.#threshold;
  }

  /** Counts written indices in [start, end) — for tests and stats. */
  count(start: number, end: number): number {
    let n = 0;
    const { seed, generation } = this.params;
    const t = this.#threshold;
    for (let i = start; i < end; i++) if (hash4(seed, i, generation, SALT_MEMBER) < t) n++;
    return n;
  }

  isZero(index: number): boolean {
    return hash4(this.params.seed, index, this.params.generation, SALT_ZERO) < this.#zeroThreshold;
  }

  isCompressible(index: number): boolean {
    return (
      hash4(this.params.seed, index, this.params.generation, SALT_COMPRESSIBLE) < this.#compressibleThreshold
    );
  }

  /**
   * The block's content: 128 pages of 4 KiB, each a distinct page of a per-seed random pool, each
   * stamped with (seed, generation, index, page) so every block is unique. Compressible blocks keep
   * 32 random pages and fill the rest with a repeated text pattern.
   */
  content(index: number, target?: Buffer): { data: Buffer; checksum: string } {
    if (this.isZero(index)) return { data: ZERO_BLOCK, checksum: ZERO_CHECKSUM };
    const { seed, generation } = this.params;
    const src = pool(seed);
    const data = target ?? Buffer.allocUnsafe(BLOCK_SIZE);
    const first = hash4(seed, index, generation, SALT_LAYOUT) % POOL_PAGES;
    const randomPages = this.isCompressible(index) ? PAGES_PER_BLOCK / 4 : PAGES_PER_BLOCK;
    for (let p = 0; p < randomPages; p++) {
      const from = ((first + p) % POOL_PAGES) * PAGE;
      src.copy(data, p * PAGE, from, from + PAGE);
      const at = p * PAGE;
      data.writeUInt32BE(seed, at);
      data.writeUInt32BE(generation, at + 4);
      data.writeUInt32BE(index, at + 8);
      data.writeUInt32BE(p, at + 12);
    }
    if (randomPages < PAGES_PER_BLOCK) {
      const text = Buffer.from(`cgmirror synthetic block ${seed}/${generation}/${index} `);
      data.fill(text, randomPages * PAGE);
    }
    return { data, checksum: hash("sha256", data, "base64") };
  }
}

/** Derives a uint32 seed from any string or number. */
export function seedOf(value: string | number): number {
  if (typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 0xffffffff) return value;
  return createHash("sha256").update(String(value)).digest().readUInt32BE(0);
}
