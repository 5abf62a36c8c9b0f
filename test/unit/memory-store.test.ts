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
