import { equalBytes, sha256 } from "./bytes.ts";
import { CorruptObjectError, UnsupportedFormatError } from "./errors.ts";

/*
 * Bloom filter over SHA-256 block hashes (docs/format.md, "Dedup runs"). The keys are already
 * uniform, so the k bit positions come from double hashing two words of the key:
 *   h1 = u32 LE at key[0..4], h2 = u32 LE at key[4..8] | 1, bit_i = (h1 + i·h2) mod bits.
 * Object: "CGMBLOOM"[8] major:u16 minor:u16 k:u32 bits:u64 sha256(bitset)[32] bitset[ceil(bits/8)]
 * (bit b is byte b>>3, mask 1<<(b&7)).
 */
export const BLOOM_MAGIC = new TextEncoder().encode("CGMBLOOM");
const HEAD = 56;

export class BloomFilter {
  readonly bits: number;
  readonly k: number;
  readonly bitset: Uint8Array;

  constructor(bits: number, k: number, bitset?: Uint8Array) {
    this.bits = Math.max(64, Math.ceil(bits));
    this.k = k;
    this.bitset = bitset ?? new Uint8Array(Math.ceil(this.bits / 8));
  }

  /** About 0.1 % false positives: 14 bits per entry, 10 probes. */
  static forEntries(n: number): BloomFilter {
    return new BloomFilter(Math.max(64, n * 14), 10);
  }

  #positions(key: Uint8Array, visit: (bit: number) => boolean): boolean {
    const dv = new DataView(key.buffer, key.byteOffset, 8);
    const h1 = dv.getUint32(0, true);
    const h2 = (dv.getUint32(4, true) | 1) >>> 0;
    for (let i = 0; i < this.k; i++) {
      const bit = (h1 + i * h2) % this.bits; // < 2^36: exact in a double
      if (!visit(bit)) return false;
    }
    return true;
  }

  add(key: Uint8Array): void {
    this.#positions(key, (b) => {
      this.bitset[b >> 3]! |= 1 << (b & 7);
      return true;
    });
  }

  mayContain(key: Uint8Array): boolean {
    return this.#positions(key, (b) => (this.bitset[b >> 3]! & (1 << (b & 7))) !== 0);
  }

  encode(): Uint8Array {
    const out = new Uint8Array(HEAD + this.bitset.byteLength);
    const dv = new DataView(out.buffer);
    out.set(BLOOM_MAGIC, 0);
    dv.setUint16(8, 1, true);
    dv.setUint16(10, 0, true);
    dv.setUint32(12, this.k, true);
    dv.setBigUint64(16, BigInt(this.bits), true);
    out.set(sha256(this.bitset), 24);
    out.set(this.bitset, HEAD);
    return out;
  }

  static decode(bytes: Uint8Array, key: string): BloomFilter {
    if (bytes.byteLength < HEAD || !equalBytes(bytes.subarray(0, 8), BLOOM_MAGIC)) {
      throw new CorruptObjectError(key, undefined, "bloom filter magic is not CGMBLOOM");
    }
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const major = dv.getUint16(8, true);
    if (major !== 1)
      throw new UnsupportedFormatError(key, `bloom ${major}.${dv.getUint16(10, true)}`, "bloom 1.x");
    const k = dv.getUint32(12, true);
    const bits = Number(dv.getBigUint64(16, true));
    const bitset = bytes.slice(HEAD);
    if (bitset.byteLength !== Math.ceil(bits / 8) || !equalBytes(sha256(bitset), bytes.subarray(24, 56))) {
      throw new CorruptObjectError(key, undefined, "bloom filter fails its SHA-256 check");
    }
    return new BloomFilter(bits, k, bitset);
  }
}
