import { hash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EbsFaultConfigError, faultsFromEnv } from "../faults.ts";
import { StoredBlocks, scanUnion } from "../store.ts";
import { BLOCK_SIZE, SyntheticBlocks } from "../synthetic.ts";

const synth = (
  fraction: number,
  generation = 0,
  extra: Partial<ConstructorParameters<typeof SyntheticBlocks>[0]> = {},
) =>
  new SyntheticBlocks({ seed: 42, generation, fraction, zeroFraction: 0, compressibleFraction: 0, ...extra });

const stored = (indices: number[]): StoredBlocks => {
  const s = new StoredBlocks();
  for (const i of indices) s.map.set(i, "x");
  s.seal();
  return s;
};

describe("SyntheticBlocks", () => {
  it("GIVEN a fraction WHEN counting 1M indices THEN the share written is close to it", () => {
    const n = synth(0.1).count(0, 1_000_000);
    expect(n).toBeGreaterThan(99_000);
    expect(n).toBeLessThan(101_000);
  });

  it("GIVEN fraction 0 and 1 THEN nothing / everything is written", () => {
    expect(synth(0).count(0, 10_000)).toBe(0);
    expect(synth(1).count(0, 10_000)).toBe(10_000);
  });

  it("GIVEN the same (seed, index, generation) THEN content and checksum are identical and the checksum is SHA-256", () => {
    const a = synth(1).content(123);
    const b = synth(1).content(123);
    expect(a.data.length).toBe(BLOCK_SIZE);
    expect(a.data.equals(b.data)).toBe(true);
    expect(a.checksum).toBe(hash("sha256", a.data, "base64"));
  });

  it("GIVEN another index or generation THEN the content differs", () => {
    const base = synth(1).content(5).checksum;
    expect(synth(1).content(6).checksum).not.toBe(base);
    expect(synth(1, 1).content(5).checksum).not.toBe(base);
  });

  it("GIVEN zeroFraction 1 THEN blocks are all zeros", () => {
    const c = synth(1, 0, { zeroFraction: 1 }).content(9);
    expect(c.data.every((b) => b === 0)).toBe(true);
  });

  it("GIVEN compressibleFraction 1 THEN most of the block is a repeated pattern", () => {
    const c = synth(1, 0, { compressibleFraction: 1 }).content(9);
    expect(c.data.subarray(BLOCK_SIZE / 2, BLOCK_SIZE / 2 + 64).toString("latin1")).toContain(
      "cgmirror synthetic",
    );
  });

  it("fails to construct with a fraction outside [0, 1]", () => {
    expect(() => synth(1.5)).toThrow(TypeError);
  });
});

describe("scanUnion", () => {
  it("GIVEN stored and synthetic members THEN it yields the sorted union, page by page, without gaps or repeats", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 4999 }), { maxLength: 200 }),
        fc.uniqueArray(fc.integer({ min: 0, max: 4999 }), { maxLength: 200 }),
        fc.boolean(),
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 1, max: 3000 }),
        (a, b, withSynth, max, window) => {
          const members = [stored(a), stored(b), ...(withSynth ? [synth(0.02)] : [])];
          const expected = new Set([...a, ...b]);
          if (withSynth) for (let i = 0; i < 5000; i++) if (synth(0.02).has(i)) expected.add(i);
          const got: number[] = [];
          let next = 0;
          while (next < 5000) {
            const page: number[] = [];
            const after = scanUnion(members, next, Math.min(5000, next + window), max, page);
            expect(after).toBeGreaterThan(next);
            got.push(...page);
            next = after;
          }
          expect(got).toEqual([...expected].sort((x, y) => x - y));
        },
      ),
    );
  });
});

describe("faultsFromEnv", () => {
  it("GIVEN CGM_EBS_* variables THEN it reads numbers and lists", () => {
    expect(
      faultsFromEnv({
        CGM_EBS_LATENCY_MS: "5",
        CGM_EBS_ERROR_OPERATIONS: "GetSnapshotBlock, PutSnapshotBlock",
        CGM_EBS_LIST_RPS_PER_ACCOUNT: "50",
      }),
    ).toEqual({
      latencyMs: 5,
      errorOperations: ["GetSnapshotBlock", "PutSnapshotBlock"],
      listRpsPerAccount: 50,
    });
  });

  it("fails on a non-numeric or out-of-range value, naming the variable", () => {
    expect(() => faultsFromEnv({ CGM_EBS_LATENCY_MS: "soon" })).toThrow(/CGM_EBS_LATENCY_MS/);
    expect(() => faultsFromEnv({ CGM_EBS_ERROR_RATE: "2" })).toThrow(EbsFaultConfigError);
    expect(() => faultsFromEnv({ CGM_EBS_ERROR_OPERATIONS: "DeleteVolume" })).toThrow(/errorOperations/);
  });
});
