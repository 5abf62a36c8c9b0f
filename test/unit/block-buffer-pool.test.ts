import { describe, expect, it } from "vitest";
import { BlockBufferPool } from "#adapters/block-buffer-pool.ts";

describe("BlockBufferPool", () => {
  it("GIVEN a released buffer THEN the next take reuses it, and a second release does nothing", () => {
    const pool = new BlockBufferPool(16, 4);
    const a = pool.take();
    const release = pool.releaser(a);
    release();
    release();
    expect(pool.free).toBe(1);
    expect(pool.take()).toBe(a);
    expect(pool.take()).not.toBe(a);
    expect(pool.allocated).toBe(2);
  });

  it("GIVEN more returns than maxFree THEN the pool keeps maxFree", () => {
    const pool = new BlockBufferPool(16, 2);
    const bs = [pool.take(), pool.take(), pool.take()];
    for (const b of bs) pool.give(b);
    expect(pool.free).toBe(2);
  });

  it("fails for a size below 1 or a negative maxFree", () => {
    expect(() => new BlockBufferPool(0, 1)).toThrow(TypeError);
    expect(() => new BlockBufferPool(8, -1)).toThrow(TypeError);
  });
});
