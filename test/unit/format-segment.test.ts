import { crc32 } from "node:zlib";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { ZERO_REF } from "#core/format/block-ref.ts";
import { BLOCK_SIZE, sha256 } from "#core/format/bytes.ts";
import { Codec } from "#core/format/codec.ts";
import { createRepo, keys } from "#core/format/layout.ts";
import {
  encodeSegmentTail,
  openStoredBlock,
  parseSegmentFooter,
  parseSegmentTrailer,
  readSegmentFooter,
  SEGMENT_TRAILER_BYTES,
  SegmentWriter,
} from "#core/format/segment.ts";
import type { ObjectStore, PutOptions } from "#core/ports/object-store.ts";
import { makeBlock } from "../support/blocks.ts";

const repo = () => createRepo({ store: new MemoryObjectStore(), prefix: "g", group: "g" });

describe("segment footer", () => {
  it("GIVEN random footer entries WHEN encoded and parsed THEN they round-trip", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            sha256: fc.uint8Array({ minLength: 32, maxLength: 32 }),
            length: fc.integer({ min: 1, max: BLOCK_SIZE }),
            codec: fc.constantFrom(Codec.raw, Codec.zstd, Codec.gzip, Codec.brotli),
          }),
          { maxLength: 50 },
        ),
        (blocks) => {
          // Stored blocks lie back to back: each offset is the sum of the lengths before it.
          let dataLength = 0;
          const entries = blocks.map((b) => {
            const e = { ...b, offset: dataLength };
            dataLength += b.length;
            return e;
          });
          const tail = encodeSegmentTail("ab".repeat(16), dataLength, entries);
          const size = dataLength + tail.byteLength;
          const trailer = parseSegmentTrailer(
            tail.subarray(tail.byteLength - SEGMENT_TRAILER_BYTES),
            "k",
            size,
          );
          const footer = parseSegmentFooter(tail.subarray(0, trailer.footerLength), "k", trailer);
          expect(footer.segmentId).toBe("ab".repeat(16));
          expect(footer.entries.map((e) => ({ ...e, sha256: Buffer.from(e.sha256) }))).toEqual(
            entries.map((e) => ({ ...e, sha256: Buffer.from(e.sha256) })),
          );
        },
      ),
      { numRuns: 50 },
    );
  });

  it("fails with the key named when a footer byte is flipped", () => {
    const tail = encodeSegmentTail("cd".repeat(16), 10, [
      { sha256: new Uint8Array(32), offset: 0, length: 10, codec: 0 },
    ]);
    tail[3]! ^= 0xff;
    const trailer = parseSegmentTrailer(
      tail.subarray(tail.byteLength - SEGMENT_TRAILER_BYTES),
      "seg/key",
      10 + tail.byteLength,
    );
    expect(() => parseSegmentFooter(tail.subarray(0, trailer.footerLength), "seg/key", trailer)).toThrow(
      /seg\/key is corrupt.*footer and trailer fail their SHA-256/,
    );
  });

  it("fails with an unsupported-format error for an unknown major version", () => {
    const tail = encodeSegmentTail("cd".repeat(16), 0, []);
    const t = tail.subarray(tail.byteLength - SEGMENT_TRAILER_BYTES);
    new DataView(t.buffer, t.byteOffset).setUint16(8, 9, true);
    expect(() => parseSegmentTrailer(t, "seg/x", tail.byteLength)).toThrow(
      /UnsupportedFormat|format segment 9\.0/,
    );
  });
});

describe("SegmentWriter", () => {
  it("GIVEN zero, duplicate and distinct blocks WHEN written THEN zeros are not stored, duplicates once, and every ref reads back", async () => {
    const r = repo();
    const w = new SegmentWriter({
      repo: r,
      targetBytes: 3 * BLOCK_SIZE,
      allowSmallSegments: true,
      compression: "zstd",
    });
    const blocks = [
      makeBlock({ kind: "text", seed: 1 }),
      makeBlock({ kind: "zero", seed: 0 }),
      makeBlock({ kind: "noise", seed: 2 }),
      makeBlock({ kind: "text", seed: 1 }),
      makeBlock({ kind: "noise", seed: 3 }),
      makeBlock({ kind: "noise", seed: 4 }),
      makeBlock({ kind: "noise", seed: 5 }),
    ];
    const refs = [];
    for (const b of blocks) refs.push(await w.add(b, sha256(b)));
    const segments = await w.close();
    expect(refs[1]).toBe(ZERO_REF);
    expect(refs[3]).toEqual(refs[0]);
    expect(w.stats).toMatchObject({ blocks: 7, zeroBlocks: 1, dedupedBlocks: 1, storedBlocks: 5 });
    expect(segments.length).toBe(2);
    expect(refs[0]!.codec).toBe(Codec.zstd);
    expect(refs[2]!.codec).toBe(Codec.raw);
    for (const [i, ref] of refs.entries()) {
      if (ref.segment === null) continue;
      const key = keys.segment(r, ref.segment);
      const got = await r.store.get(key, { range: { start: ref.offset, end: ref.offset + ref.length } });
      expect(Buffer.from(openStoredBlock(key, ref, got.body, i)).equals(Buffer.from(blocks[i]!))).toBe(true);
      const footer = await readSegmentFooter(r.store, key);
      expect(footer.entries.some((e) => e.offset === ref.offset && e.length === ref.length)).toBe(true);
    }
  });

  it("GIVEN a caller that reuses one Buffer for every incompressible block THEN each stored block keeps its own bytes", async () => {
    const r = repo();
    const w = new SegmentWriter({
      repo: r,
      targetBytes: 8 * BLOCK_SIZE,
      allowSmallSegments: true,
      compression: "none",
    });
    const reused = Buffer.alloc(BLOCK_SIZE);
    const originals: Buffer[] = [];
    const refs = [];
    for (let i = 0; i < 3; i++) {
      Buffer.from(makeBlock({ kind: "noise", seed: 40 + i })).copy(reused);
      originals.push(Buffer.from(reused));
      refs.push(await w.add(reused, sha256(reused)));
    }
    await w.close();
    for (const [i, ref] of refs.entries()) {
      const key = keys.segment(r, ref.segment!);
      const got = await r.store.get(key, { range: { start: ref.offset, end: ref.offset + ref.length } });
      expect(Buffer.from(openStoredBlock(key, ref, got.body, i)).equals(originals[i]!)).toBe(true);
    }
  });

  it("GIVEN segments larger than the part size WHEN written THEN they go up as multipart and read back", async () => {
    const r = repo();
    const w = new SegmentWriter({
      repo: r,
      targetBytes: 12 * BLOCK_SIZE,
      allowSmallSegments: true,
      partBytes: 5 * 1024 * 1024,
      compression: "none",
    });
    const blocks = Array.from({ length: 12 }, (_, i) => makeBlock({ kind: "noise", seed: 100 + i }));
    const refs = [];
    for (const b of blocks) refs.push(await w.add(b));
    const [seg] = await w.close();
    const footer = await readSegmentFooter(r.store, seg!.key);
    expect(footer.entries.length).toBe(12);
    expect(seg!.bytes).toBe((await r.store.head(seg!.key))!.size);
  });

  it("fails when the source checksum does not match the block", async () => {
    const w = new SegmentWriter({ repo: repo() });
    await expect(w.add(makeBlock({ kind: "text", seed: 1 }), new Uint8Array(32))).rejects.toThrow(
      /source checksum/,
    );
  });

  it("fails for a segment target outside 8–128 MiB", () => {
    expect(() => new SegmentWriter({ repo: repo(), targetBytes: 1024 })).toThrow(/8–128 MiB/);
  });

  it("fails to read a block whose stored bytes were flipped, naming the segment", async () => {
    const r = repo();
    const w = new SegmentWriter({ repo: r, compression: "none" });
    const b = makeBlock({ kind: "noise", seed: 9 });
    const ref = await w.add(b);
    await w.close();
    const stored = b.slice();
    stored[100]! ^= 1;
    expect(() => openStoredBlock("segments/x.seg", ref, stored, 5)).toThrow(
      /block 5 read from segments\/x\.seg fails its SHA-256/,
    );
  });

  it("GIVEN a segment WHEN uploaded THEN the PUT carries the CRC-32 of the whole object and no SHA-256", async () => {
    const store = new MemoryObjectStore();
    const puts: { body: Uint8Array; options: PutOptions | undefined }[] = [];
    const recording: ObjectStore = Object.assign(Object.create(store) as ObjectStore, {
      put: (k: string, b: Uint8Array, o?: PutOptions) => {
        puts.push({ body: Buffer.from(b), options: o });
        return store.put(k, b, o);
      },
    });
    const r = createRepo({ store: recording, prefix: "g", group: "g" });
    const w = new SegmentWriter({ repo: r, targetBytes: 2 * BLOCK_SIZE, allowSmallSegments: true });
    await w.add(makeBlock({ kind: "text", seed: 3 }));
    await w.add(makeBlock({ kind: "noise", seed: 4 }));
    await w.add(makeBlock({ kind: "noise", seed: 5 }));
    const segments = await w.close();
    expect(segments.length).toBe(1);
    expect(puts.length).toBe(1);
    for (const p of puts) {
      expect(p.options?.checksumSha256).toBeUndefined();
      expect(Buffer.from(p.options!.checksumCrc32!).readUInt32BE(0)).toBe(crc32(p.body));
    }
  });
  it("GIVEN a store that reads bodies only when the PUT completes THEN reused segment buffers never mix segments", async () => {
    const store = new MemoryObjectStore();
    const slow: ObjectStore = Object.assign(Object.create(store) as ObjectStore, {
      put: async (k: string, b: Uint8Array, o?: PutOptions) => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        return store.put(k, b, o);
      },
    });
    const r = createRepo({ store: slow, prefix: "g", group: "g" });
    const w = new SegmentWriter({
      repo: r,
      targetBytes: 2 * BLOCK_SIZE,
      allowSmallSegments: true,
      compression: "zstd",
    });
    const blocks = Array.from({ length: 11 }, (_, i) =>
      makeBlock({ kind: i % 3 === 0 ? "text" : "noise", seed: 200 + i }),
    );
    const refs = [];
    for (const b of blocks) refs.push(await w.add(b, sha256(b)));
    const segments = await w.close();
    expect(segments.length).toBe(4);
    for (const [i, ref] of refs.entries()) {
      const key = keys.segment(r, ref.segment!);
      const got = await store.get(key, { range: { start: ref.offset, end: ref.offset + ref.length } });
      expect(Buffer.from(openStoredBlock(key, ref, got.body, i)).equals(Buffer.from(blocks[i]!))).toBe(true);
    }
    for (const seg of segments)
      expect((await readSegmentFooter(store, seg.key)).entries.length).toBe(seg.blocks);
  });
  it("GIVEN a run of incompressible blocks THEN compression attempts thin out and resume when a probed block shrinks", async () => {
    const r = repo();
    const w = new SegmentWriter({
      repo: r,
      targetBytes: 8 * 1024 * 1024,
      compression: "zstd",
      compressionProbe: { streak: 2, every: 3 },
    });
    const kinds = ["noise", "noise", "text", "text", "text", "noise", "text"] as const;
    const refs = [];
    for (const [i, kind] of kinds.entries()) refs.push(await w.add(makeBlock({ kind, seed: 300 + i })));
    await w.close();
    // noise, noise (random-looking: no attempt, two misses = the streak) → text skipped, text skipped
    // → text probed and compressed → all tried again (the last noise is again judged random).
    expect(refs.map((x) => x.codec)).toEqual([
      Codec.raw,
      Codec.raw,
      Codec.raw,
      Codec.raw,
      Codec.zstd,
      Codec.raw,
      Codec.zstd,
    ]);
    // 2 thinned by the probe + 3 noise blocks judged random.
    expect(w.stats.compressionSkipped).toBe(5);
  });
});
