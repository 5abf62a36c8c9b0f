/**
 * local/compare.ts: the image compare behind every "restores exactly" check finds the first differing
 * byte wherever it is (in a written region, in a hole, past the first read chunk, in a tail that is
 * not block-aligned), the same through O_DIRECT as through the page cache.
 */
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { firstDifference } from "#local/compare.ts";

const MiB = 1024 * 1024;
let dir: string;
let n = 0;

/** A sparse file of `size` bytes with `writes` (offset → bytes) in it. */
async function image(size: number, writes: Array<[number, Buffer]> = []): Promise<string> {
  const path = join(dir, `img-${n++}`);
  const fh = await open(path, "w");
  try {
    await fh.truncate(size);
    for (const [at, bytes] of writes) await fh.write(bytes, 0, bytes.length, at);
  } finally {
    await fh.close();
  }
  return path;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "cgm-compare-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe.each([
  { mode: "O_DIRECT where available", direct: true },
  { mode: "page cache", direct: false },
])("firstDifference ($mode)", ({ direct }) => {
  const cmp = (a: string, b: string) => firstDifference(a, b, { direct });

  it("GIVEN two sparse images with the same written bytes THEN they are identical (-1)", async () => {
    const data = Buffer.alloc(3000, 7);
    const a = await image(64 * MiB, [[20 * MiB + 5, data]]);
    const b = await image(64 * MiB, [[20 * MiB + 5, data]]);
    expect(await cmp(a, b)).toBe(-1);
  });

  it("GIVEN one byte changed in a written region past the first chunk THEN its offset is returned", async () => {
    const data = Buffer.alloc(3000, 7);
    const changed = Buffer.from(data);
    changed[1234] = 8;
    const a = await image(64 * MiB, [[20 * MiB + 5, data]]);
    const b = await image(64 * MiB, [[20 * MiB + 5, changed]]);
    expect(await cmp(a, b)).toBe(20 * MiB + 5 + 1234);
  });

  it("GIVEN a byte written where the other image has a hole THEN its offset is returned", async () => {
    const a = await image(64 * MiB);
    const b = await image(64 * MiB, [[63 * MiB + 17, Buffer.from([1])]]);
    expect(await cmp(a, b)).toBe(63 * MiB + 17);
    expect(await cmp(b, a)).toBe(63 * MiB + 17);
  });

  it("GIVEN a zero byte written over a hole THEN the images are still identical (holes read as zeros)", async () => {
    const a = await image(16 * MiB);
    const b = await image(16 * MiB, [[5 * MiB, Buffer.alloc(4096)]]);
    expect(await cmp(a, b)).toBe(-1);
  });

  it("GIVEN sizes that are not block-aligned THEN the tail is compared to the last byte", async () => {
    const size = 9 * MiB + 333;
    const a = await image(size, [[size - 1, Buffer.from([5])]]);
    const b = await image(size, [[size - 1, Buffer.from([6])]]);
    const c = await image(size, [[size - 1, Buffer.from([5])]]);
    expect(await cmp(a, b)).toBe(size - 1);
    expect(await cmp(a, c)).toBe(-1);
  });

  it("GIVEN one image a prefix of the other THEN the shorter one's size is returned", async () => {
    const a = await image(10 * MiB);
    const b = await image(10 * MiB + 1);
    expect(await cmp(a, b)).toBe(10 * MiB);
    expect(await cmp(b, a)).toBe(10 * MiB);
  });

  it("GIVEN a missing file THEN it fails naming it", async () => {
    const a = await image(MiB);
    await expect(cmp(a, join(dir, "missing.img"))).rejects.toThrow(/missing\.img/);
  });
});
