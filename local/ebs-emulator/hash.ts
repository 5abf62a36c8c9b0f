/** Small, fast, non-cryptographic 32-bit hashing used for predicates and token MACs. */

/** murmur3 fmix32 finalizer. */
export function fmix32(h: number): number {
  let x = h | 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Hash of four 32-bit integers, uniform over [0, 2^32). */
export function hash4(a: number, b: number, c: number, d: number): number {
  let h = fmix32(a ^ 0x9e3779b9);
  h = fmix32(h ^ Math.imul(b | 0, 0xcc9e2d51));
  h = fmix32(h ^ Math.imul(c | 0, 0x1b873593));
  h = fmix32(h ^ Math.imul(d | 0, 0xe6546b64));
  return h;
}

/** Keyed hash of a byte range (murmur3-like), uniform over [0, 2^32). */
export function hashBytes(key: number, bytes: Uint8Array, start: number, end: number): number {
  let h = key | 0;
  for (let i = start; i < end; i++) {
    h = Math.imul(h ^ (bytes[i] as number), 0x01000193);
    h ^= h >>> 15;
  }
  return fmix32(h ^ (end - start));
}

/** Threshold for `hash < threshold` that is true with probability `fraction` (0..1). */
export function fractionThreshold(fraction: number): number {
  if (!(fraction >= 0 && fraction <= 1)) {
    throw new TypeError(`a fraction must be a number in [0, 1], got ${fraction}`);
  }
  return Math.round(fraction * 4294967296);
}
