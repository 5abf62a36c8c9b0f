import { createHash } from "node:crypto";
import { CorruptObjectError, UnsupportedFormatError } from "../errors.ts";
import { equalBytes, toHex } from "./bytes.ts";

/*
 * Bloom filter over SHA-256 block hashes (docs/format.md, "Dedup runs"). The keys are already
 * uniform, so the k bit positions come from double hashing two words of the key:
 *   h1 = u32 LE at key[0..4], h2 = u32 LE at key[4..8] | 1, bit_i = (h1 + i·h2) mod bits.
 * Object: "CGMBLOOM"[8] major:u16 minor:u16 k:u32 bits:u64 sha256[32] bitset[ceil(bits/8)]
 * (bit b is byte b>>3, mask 1<<(b&7)); the checksum covers the first 24 bytes and the bitset, and is
 * what the dedup run's pointer pins (`bloomSha256`).
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
    dv.setUint16(8, 2, true);
    dv.setUint16(10, 0, true);
    dv.setUint32(12, this.k, true);
    dv.setBigUint64(16, BigInt(this.bits), true);
    out.set(createHash("sha256").update(out.subarray(0, 24)).update(this.bitset).digest(), 24);
    out.set(this.bitset, HEAD);
    return out;
  }

  /** The checksum of an encoded filter (hex), as a pointer pins it. */
  static checksumOf(encoded: Uint8Array): string {
    return toHex(encoded.subarray(24, HEAD));
  }

  static decode(bytes: Uint8Array, key: string, expectedSha256?: string): BloomFilter {
    if (bytes.byteLength < HEAD || !equalBytes(bytes.subarray(0, 8), BLOOM_MAGIC)) {
      throw new CorruptObjectError(key, undefined, "bloom filter magic is not CGMBLOOM");
    }
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const major = dv.getUint16(8, true);
    if (major !== 2)
      throw new UnsupportedFormatError(key, `bloom ${major}.${dv.getUint16(10, true)}`, "bloom 2.x");
    const k = dv.getUint32(12, true);
    const bits = Number(dv.getBigUint64(16, true));
    const bitset = bytes.slice(HEAD);
    const digest = createHash("sha256").update(bytes.subarray(0, 24)).update(bitset).digest();
    if (!equalBytes(digest, bytes.subarray(24, HEAD))) {
      throw new CorruptObjectError(key, undefined, "bloom filter fails its SHA-256 check");
    }
    if (expectedSha256 !== undefined && toHex(digest) !== expectedSha256) {
      throw new CorruptObjectError(key, undefined, "bloom filter is not the one its dedup run pins");
    }
    if (bitset.byteLength !== Math.ceil(bits / 8) || bits < 64 || k < 1 || k > 64) {
      throw new CorruptObjectError(key, undefined, "bloom filter header is inconsistent");
    }
    return new BloomFilter(bits, k, bitset);
  }
}
