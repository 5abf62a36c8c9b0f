import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BLOCK_SIZE, isAllZero } from "#core/format/bytes.ts";
import {
  Codec,
  CompressionProbe,
  decodeBlock,
  encodeBlock,
  looksIncompressible,
} from "#core/format/codec.ts";
import { makeBlock } from "../support/blocks.ts";

describe("block codecs", () => {
  it("GIVEN any block and any compression WHEN encoded and decoded THEN the raw bytes come back and never grow", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("zero", "text", "noise" as const),
        fc.integer({ min: 0, max: 1 << 30 }),
        fc.constantFrom("none", "zstd", "brotli", "gzip" as const),
        (kind, seed, choice) => {
          const raw = makeBlock({ kind: kind as "zero" | "text" | "noise", seed });
          const { codec, data } = encodeBlock(raw, choice);
          expect(data.byteLength).toBeLessThanOrEqual(raw.byteLength);
          expect(Buffer.from(decodeBlock(codec, data, BLOCK_SIZE)).equals(Buffer.from(raw))).toBe(true);
        },
      ),
      { numRuns: 30 },
    );
  });

  it("GIVEN incompressible noise WHEN compressed THEN it is stored raw", () => {
    const { codec } = encodeBlock(makeBlock({ kind: "noise", seed: 7 }), "zstd");
    expect(codec).toBe(Codec.raw);
  });

  it("GIVEN incompressible noise WHEN compressed THEN the give-up leaves Error.stackTraceLimit as it was", () => {
    const before = Error.stackTraceLimit;
    for (const choice of ["zstd", "brotli", "gzip"] as const) {
      expect(encodeBlock(makeBlock({ kind: "noise", seed: 8 }), choice).codec).toBe(Codec.raw);
    }
    expect(Error.stackTraceLimit).toBe(before);
  });

  it("fails to encode with an unknown compression, naming it", () => {
    expect(() => encodeBlock(new Uint8Array(16), "lz4" as never)).toThrow(
      /none\|zstd\|brotli\|gzip, got lz4/,
    );
  });

  it("fails to decode an unknown codec", () => {
    expect(() => decodeBlock(9, new Uint8Array(4), BLOCK_SIZE)).toThrow(/unknown block codec 9/);
  });

  it("GIVEN a block with one non-zero byte WHEN checked THEN it is not all zero", () => {
    const b = new Uint8Array(BLOCK_SIZE);
    expect(isAllZero(b)).toBe(true);
    b[BLOCK_SIZE - 1] = 1;
    expect(isAllZero(b)).toBe(false);
  });
});

describe("looksIncompressible", () => {
  it("GIVEN noise (encrypted or compressed data) THEN it looks incompressible, and zstd-1 indeed does not shrink it", () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const raw = makeBlock({ kind: "noise", seed });
      expect(looksIncompressible(raw)).toBe(true);
      expect(encodeBlock(raw, "zstd").codec).toBe(Codec.raw);
    }
  });

  it("GIVEN compressible kinds of block THEN none looks incompressible", () => {
    const rng = (seed: number) => () => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed >>> 24;
    };
    const r = rng(9);
    const text = makeBlock({ kind: "text", seed: 11 });
    // Random bytes in the first half, zeros in the second (a half-written block).
    const halfRandom = new Uint8Array(BLOCK_SIZE);
    for (let i = 0; i < BLOCK_SIZE / 2; i++) halfRandom[i] = r();
    // One random KiB repeated: byte counts near uniform, but zstd finds the repeats.
    const repeated = new Uint8Array(BLOCK_SIZE);
    for (let i = 0; i < 1024; i++) repeated[i] = r();
    for (let i = 1024; i < BLOCK_SIZE; i++) repeated[i] = repeated[i - 1024]!;
    // Random bytes with a quarter of them set to zero (sparse data).
    const sparse = new Uint8Array(BLOCK_SIZE);
    for (let i = 0; i < BLOCK_SIZE; i++) sparse[i] = i % 4 === 0 ? 0 : r();
    for (const [name, raw] of Object.entries({ text, halfRandom, repeated, sparse })) {
      expect(looksIncompressible(raw), name).toBe(false);
      expect(encodeBlock(raw, "zstd").codec, name).toBe(Codec.zstd);
    }
  });

  it("GIVEN a block under 32 KiB THEN it is never judged (always attempted)", () => {
    const small = makeBlock({ kind: "noise", seed: 3 }).subarray(0, 16 * 1024);
    expect(looksIncompressible(small)).toBe(false);
  });
});

describe("CompressionProbe", () => {
  /** Runs the probe over outcomes (true = the block would shrink); returns which blocks were tried. */
  function tried(probe: CompressionProbe, shrinks: readonly boolean[]): boolean[] {
    return shrinks.map((s) => {
      if (!probe.shouldTry()) return false;
      probe.record(s);
      return true;
    });
  }

  it("GIVEN compressible blocks THEN every block is tried", () => {
    expect(tried(new CompressionProbe({ streak: 2, every: 3 }), Array(10).fill(true))).toEqual(
      Array(10).fill(true),
    );
  });

  it("GIVEN a run of incompressible blocks THEN after the streak only every k-th block is tried", () => {
    const probe = new CompressionProbe({ streak: 3, every: 4 });
    const t = tried(probe, Array(14).fill(false));
    // 3 tries make the streak; then blocks 3..5 skipped, 6 tried, 7..9 skipped, 10 tried, …
    expect(t).toEqual([
      true,
      true,
      true,
      false,
      false,
      false,
      true,
      false,
      false,
      false,
      true,
      false,
      false,
      false,
    ]);
    expect(probe.skippedTotal).toBe(9);
  });

  it("GIVEN thinning WHEN a probed block shrinks THEN every block is tried again", () => {
    const probe = new CompressionProbe({ streak: 2, every: 3 });
    const outcomes = [false, false, false, false, true, false, false, false];
    //                 try    try    skip   skip   try(shrinks) try try(2nd miss: streak) skip
    expect(tried(probe, outcomes)).toEqual([true, true, false, false, true, true, true, false]);
  });

  it("GIVEN the same outcomes THEN the decisions are the same (deterministic)", () => {
    fc.assert(
      fc.property(fc.array(fc.boolean(), { maxLength: 200 }), (outcomes) => {
        const a = tried(new CompressionProbe(), outcomes);
        const b = tried(new CompressionProbe(), outcomes);
        expect(a).toEqual(b);
        // Never more than `every - 1` blocks in a row go untried.
        expect(a.join("").includes("false".repeat(8))).toBe(false);
      }),
    );
  });

  it("fails for a streak or period below 1", () => {
    expect(() => new CompressionProbe({ streak: 0 })).toThrow(/streak/);
    expect(() => new CompressionProbe({ every: 0.5 })).toThrow(/every/);
  });
});
