import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { TokenBucket } from "../token-bucket.ts";

describe("TokenBucket", () => {
  it("GIVEN a full bucket WHEN taking capacity+1 tokens at one instant THEN exactly capacity succeed", () => {
    const b = new TokenBucket(10, 10, 0);
    const taken = Array.from({ length: 11 }, () => b.tryTake(0)).filter(Boolean).length;
    expect(taken).toBe(10);
  });

  it("GIVEN an empty bucket WHEN 100 ms pass at 10/s THEN one token is available again", () => {
    const b = new TokenBucket(10, 10, 0);
    for (let i = 0; i < 10; i++) b.tryTake(0);
    expect(b.tryTake(50)).toBe(false);
    expect(b.tryTake(100)).toBe(true);
    expect(b.tryTake(100)).toBe(false);
  });

  it("GIVEN a long idle time THEN tokens never exceed capacity", () => {
    const b = new TokenBucket(5, 3, 0);
    expect(b.available(1_000_000)).toBe(3);
  });

  it("GIVEN a refund THEN the token can be taken again, but not beyond capacity", () => {
    const b = new TokenBucket(1, 1, 0);
    expect(b.tryTake(0)).toBe(true);
    b.refund();
    expect(b.tryTake(0)).toBe(true);
    b.refund();
    b.refund();
    expect(b.available(0)).toBe(1);
  });

  it("fails to construct with a rate <= 0 or a capacity < 1", () => {
    expect(() => new TokenBucket(0, 1, 0)).toThrow(TypeError);
    expect(() => new TokenBucket(1, 0.5, 0)).toThrow(TypeError);
  });

  it("GIVEN any request pattern THEN admitted requests over a span never exceed capacity + rate * span", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2000 }),
        fc.integer({ min: 1, max: 50 }),
        fc.array(fc.integer({ min: 0, max: 50 }), { minLength: 1, maxLength: 300 }),
        (rate, capacity, gaps) => {
          const b = new TokenBucket(rate, capacity, 0);
          let t = 0;
          let admitted = 0;
          for (const g of gaps) {
            t += g;
            if (b.tryTake(t)) admitted++;
          }
          expect(admitted).toBeLessThanOrEqual(capacity + (rate * t) / 1000 + 1e-9);
        },
      ),
    );
  });
});
