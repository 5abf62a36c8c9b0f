import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BLOCK_SIZE, isAllZero } from "#core/bytes.ts";
import { Codec, decodeBlock, encodeBlock } from "#core/codec.ts";
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
