import { crc32 } from "node:zlib";
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";

describe("MemoryObjectStore checksums", () => {
  const crcOf = (b: Uint8Array) => {
    const out = new Uint8Array(4);
    new DataView(out.buffer).setUint32(0, crc32(b), false);
    return out;
  };

  it("GIVEN the body's CRC-32 WHEN put THEN the object is stored", async () => {
    const m = new MemoryObjectStore();
    const body = new Uint8Array(10).fill(1);
    await m.put("k", body, { checksumCrc32: crcOf(body) });
    expect((await m.get("k")).body).toEqual(body);
  });

  it("fails with BadDigest when the CRC-32 does not match, and stores nothing", async () => {
    const m = new MemoryObjectStore();
    const body = new Uint8Array(10).fill(1);
    const wrong = crcOf(body);
    wrong[3]! ^= 1;
    await expect(m.put("k", body, { checksumCrc32: wrong })).rejects.toThrow(/BadDigest/);
    expect(await m.head("k")).toBeUndefined();
  });
});

describe("MemoryObjectStore get into a given buffer", () => {
  it("GIVEN a buffer to read a range into WHEN read THEN the body is a view of its start with those bytes, and the stored object is not changed by writes to it", async () => {
    const m = new MemoryObjectStore();
    const body = Uint8Array.from({ length: 100 }, (_, i) => i);
    await m.put("k", body);
    const into = new Uint8Array(64);
    const got = await m.get("k", { range: { start: 10, end: 30 }, into: () => into });
    expect(got.body.buffer).toBe(into.buffer);
    expect([...got.body]).toEqual([...body.subarray(10, 30)]);
    into.fill(0);
    expect([...(await m.get("k", { range: { start: 10, end: 30 } })).body]).toEqual([
      ...body.subarray(10, 30),
    ]);
  });

  it("GIVEN a buffer smaller than the body WHEN read THEN it fails naming the key and the sizes", async () => {
    const m = new MemoryObjectStore();
    await m.put("k", new Uint8Array(10));
    await expect(m.get("k", { into: () => new Uint8Array(9) })).rejects.toThrow(
      "get k: the buffer given for the body is 9 bytes, not 10",
    );
  });
});
