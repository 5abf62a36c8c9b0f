import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import type { BlockRef, IndexEntry } from "#core/format/block-ref.ts";
import { ZERO_REF } from "#core/format/block-ref.ts";
import { Codec } from "#core/format/codec.ts";
import { IndexRunReader, mergeRuns, RUN_TRAILER_BYTES, writeRun } from "#core/format/index-run.ts";

const refArb: fc.Arbitrary<BlockRef> = fc.oneof(
  fc.constant(ZERO_REF),
  fc.record({
    segment: fc.constantFrom("aa".repeat(16), "bb".repeat(16), "cc".repeat(16)),
    offset: fc.integer({ min: 0, max: 0xffffffff }),
    length: fc.integer({ min: 1, max: 524288 }),
    codec: fc.constantFrom(Codec.raw, Codec.zstd),
    sha256: fc.uint8Array({ minLength: 32, maxLength: 32 }),
  }),
);

const entriesArb = fc
  .array(fc.tuple(fc.integer({ min: 0, max: 5000 }), refArb), { maxLength: 300 })
  .map((pairs) => {
    const m = new Map(pairs);
    return [...m.entries()].sort((a, b) => a[0] - b[0]).map(([block, ref]) => ({ block, ref }));
  });

function norm(entries: readonly IndexEntry[]) {
  return entries.map((e) => ({
    block: e.block,
    ref: { ...e.ref, sha256: Buffer.from(e.ref.sha256).toString("hex") },
  }));
}

async function readAll(store: MemoryObjectStore, key: string): Promise<IndexEntry[]> {
  const r = await IndexRunReader.open(store, key);
  const out: IndexEntry[] = [];
  await mergeRuns([r], (p, i) => {
    out.push(p.entry(i));
  });
  return out;
}

describe("index runs", () => {
  it("GIVEN sorted entries WHEN written with small pages and read back THEN they round-trip and point lookups work", async () => {
    await fc.assert(
      fc.asyncProperty(entriesArb, fc.integer({ min: 1, max: 40 }), async (entries, pageEntries) => {
        const store = new MemoryObjectStore();
        const info = await writeRun(store, "r.run", entries, { pageEntries });
        expect(info.entries).toBe(entries.length);
        expect(norm(await readAll(store, "r.run"))).toEqual(norm(entries));
        const reader = await IndexRunReader.open(store, "r.run", { bytes: info.bytes });
        for (const e of entries.slice(0, 5)) {
          const page = await reader.readPage(reader.pageFor(e.block));
          expect(page.find(e.block)).toBeGreaterThanOrEqual(0);
        }
      }),
      { numRuns: 40 },
    );
  });

  it("GIVEN several runs WHEN merged THEN each block takes the newest run's ref", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(entriesArb, { minLength: 1, maxLength: 4 }), async (runs) => {
        const store = new MemoryObjectStore();
        const readers = [];
        const expected = new Map<number, BlockRef>();
        for (const [i, entries] of runs.entries()) {
          await writeRun(store, `r${i}.run`, entries, { pageEntries: 7 });
          readers.push(await IndexRunReader.open(store, `r${i}.run`));
          for (const e of entries) expected.set(e.block, e.ref);
        }
        const merged: IndexEntry[] = [];
        await mergeRuns(readers, (p, i) => {
          merged.push(p.entry(i));
        });
        const want = [...expected.entries()]
          .sort((a, b) => a[0] - b[0])
          .map(([block, ref]) => ({ block, ref }));
        expect(norm(merged)).toEqual(norm(want));
      }),
      { numRuns: 40 },
    );
  });

  it("fails on a truncated run, naming the key", async () => {
    const store = new MemoryObjectStore();
    const entries = Array.from({ length: 100 }, (_, i) => ({ block: i, ref: ZERO_REF }));
    const info = await writeRun(store, "v/runs/x.run", entries, { pageEntries: 10 });
    store.corrupt("v/runs/x.run", (b) => b.subarray(0, b.byteLength - 10));
    await expect(IndexRunReader.open(store, "v/runs/x.run", { bytes: info.bytes })).rejects.toThrow(
      /v\/runs\/x\.run.*is corrupt or truncated/,
    );
    await expect(IndexRunReader.open(store, "v/runs/x.run")).rejects.toThrow(/CGMIRUN|corrupt/);
  });

  it("fails on a flipped byte in a page, naming the key and page", async () => {
    const store = new MemoryObjectStore();
    const entries = Array.from({ length: 100 }, (_, i) => ({ block: i * 3, ref: ZERO_REF }));
    await writeRun(store, "k.run", entries, { pageEntries: 10 });
    store.corrupt("k.run", (b) => {
      b[200]! ^= 0x40;
      return b;
    });
    const reader = await IndexRunReader.open(store, "k.run");
    await expect(reader.readPage(0)).rejects.toThrow(
      /k\.run \(version \w+\) is corrupt.*page 0 fails its SHA-256/,
    );
  });

  it("fails with an unsupported-format error on an unknown major version", async () => {
    const store = new MemoryObjectStore();
    await writeRun(store, "k.run", [{ block: 1, ref: ZERO_REF }]);
    store.corrupt("k.run", (b) => {
      new DataView(b.buffer, b.byteOffset).setUint16(b.byteLength - RUN_TRAILER_BYTES + 8, 3, true);
      return b;
    });
    await expect(IndexRunReader.open(store, "k.run")).rejects.toThrow(/index run 3\.0.*Upgrade cgmirror/);
  });

  it("fails when entries are not strictly ascending", async () => {
    await expect(
      writeRun(new MemoryObjectStore(), "k.run", [
        { block: 2, ref: ZERO_REF },
        { block: 2, ref: ZERO_REF },
      ]),
    ).rejects.toThrow(/strictly ascending/);
  });
});
