import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import type { BlockRef } from "#core/format/block-ref.ts";
import { BloomFilter } from "#core/format/bloom.ts";
import { BLOCK_SIZE, sha256 } from "#core/format/bytes.ts";
import { Codec } from "#core/format/codec.ts";
import { GroupDedup } from "#core/format/dedup-index.ts";
import { buildDedupDelta, openHashRunRef } from "#core/format/dedup-runs.ts";
import { compareKeys, HashRunReader, HashRunWriter, mergeHashRuns } from "#core/format/hash-run.ts";
import { writeRun } from "#core/format/index-run.ts";
import { createRepo, keys } from "#core/format/layout.ts";
import { readVolumeIndexRoot } from "#core/format/volume-index.ts";
import { writeGeneration } from "#core/protocol/write-generation.ts";
import { restoreGroup } from "#core/restore/restore.ts";
import { expectImage, makeBlock, VolumeModel } from "../support/blocks.ts";
import { SMALL, withTmp } from "../support/repo-scenarios.ts";

const hashArb = fc.uint8Array({ minLength: 32, maxLength: 32 });
const refOf = (h: Uint8Array, n: number): BlockRef => ({
  segment: (n % 3).toString(16).padStart(32, "0"),
  offset: n,
  length: 9,
  codec: Codec.zstd,
  sha256: h,
});

describe("Bloom filter", () => {
  it("GIVEN added hashes WHEN queried after an encode/decode round trip THEN none is missed", () => {
    fc.assert(
      fc.property(fc.array(hashArb, { maxLength: 200 }), (keys) => {
        const b = BloomFilter.forEntries(keys.length);
        for (const k of keys) b.add(k);
        const back = BloomFilter.decode(b.encode(), "k.bloom");
        for (const k of keys) expect(back.mayContain(k)).toBe(true);
      }),
    );
  });

  it("GIVEN 10,000 entries WHEN probing absent hashes THEN false positives stay under 1 %", () => {
    const b = BloomFilter.forEntries(10_000);
    for (let i = 0; i < 10_000; i++) b.add(sha256(new TextEncoder().encode(`in-${i}`)));
    let fp = 0;
    for (let i = 0; i < 5_000; i++) if (b.mayContain(sha256(new TextEncoder().encode(`out-${i}`)))) fp++;
    expect(fp / 5_000).toBeLessThan(0.01);
  });

  it("fails with the key named on a damaged filter", () => {
    const bytes = BloomFilter.forEntries(10).encode();
    bytes[bytes.length - 1]! ^= 1;
    expect(() => BloomFilter.decode(bytes, "v/runs/x.run.bloom")).toThrow(
      /v\/runs\/x\.run\.bloom is corrupt/,
    );
  });
});

describe("dedup runs", () => {
  it("GIVEN sorted hash entries in several runs WHEN merged THEN every hash appears once, newest ref winning", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uniqueArray(hashArb, { maxLength: 60, comparator: (a, b) => compareKeys(a, b) === 0 }), {
          minLength: 1,
          maxLength: 3,
        }),
        async (runs) => {
          const store = new MemoryObjectStore();
          const readers = [];
          const want = new Map<string, number>();
          for (const [r, hashes] of runs.entries()) {
            const sorted = [...hashes].sort(compareKeys);
            const w = new HashRunWriter(store, `r${r}.run`, { pageEntries: 7 });
            for (const h of sorted) {
              await w.append(h, refOf(h, r));
              want.set(Buffer.from(h).toString("hex"), r);
            }
            const info = await w.finish();
            readers.push(await HashRunReader.open(store, info.key, { bytes: info.bytes }));
          }
          const got = new Map<string, number>();
          await mergeHashRuns(readers, (page, i) => {
            got.set(Buffer.from(page.key(i)).toString("hex"), page.offsets[i]!);
          });
          expect(got).toEqual(want);
        },
      ),
      { numRuns: 30 },
    );
  });

  it("GIVEN a block delta with zero refs and repeated contents WHEN its dedup delta is built in chunks of any size THEN it equals the one-chunk build, and the scratch chunks are gone", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.option(fc.integer({ min: 0, max: 40 }), { nil: undefined }), { maxLength: 120 }),
        fc.integer({ min: 1, max: 9 }),
        async (contents, chunkEntries) => {
          const store = new MemoryObjectStore();
          const repo = createRepo({ store, prefix: "p", group: "g" });
          // Block i: a zero ref (undefined) or stored content number n (equal n, equal hash).
          const entries = contents.map((n, block) => ({
            block,
            ref:
              n === undefined
                ? { segment: null, offset: 0, length: 0, codec: Codec.zero, sha256: new Uint8Array(32) }
                : refOf(sha256(new Uint8Array([n])), block),
          }));
          const delta = await writeRun(store, "p/volumes/v/delta.run", entries, { pageEntries: 7 });
          const read = async (chunks: number, key: string) => {
            const ref = await buildDedupDelta(repo, delta, key, `p/runs/r/scratch-${chunks}/`, chunks);
            if (!ref) return null;
            const out: string[] = [];
            await mergeHashRuns([await openHashRunRef(repo, ref, key)], (page, i) => {
              out.push(`${Buffer.from(page.key(i)).toString("hex")}@${page.offsets[i]}`);
            });
            return out;
          };
          // Each content once, with the ref of a block that holds it (which of equal blocks is free).
          const valid = (out: string[] | null) => {
            const hashes = (out ?? []).map((line) => {
              const [hash, block] = line.split("@") as [string, string];
              const n = contents[Number(block)];
              expect(n, line).not.toBeUndefined();
              expect(Buffer.from(sha256(new Uint8Array([n!]))).toString("hex")).toBe(hash);
              return hash;
            });
            expect(new Set(hashes).size).toBe(hashes.length);
            return hashes;
          };
          // A delta that fits one chunk is written once: no scratch chunk.
          const scratch: string[] = [];
          store.beforeOperation = (op, key) => {
            if (key.includes("/scratch-1000/")) scratch.push(`${op} ${key}`);
          };
          const whole = valid(await read(1_000, "p/volumes/v/whole.run"));
          store.beforeOperation = undefined;
          expect(scratch).toEqual([]);
          expect(valid(await read(chunkEntries, "p/volumes/v/chunked.run"))).toEqual(whole);
          expect(whole.length).toBe(new Set(contents.filter((n) => n !== undefined)).size);
          const left: string[] = [];
          for await (const o of store.list("p/runs/")) left.push(o.key);
          expect(left).toEqual([]);
        },
      ),
      { numRuns: 40 },
    );
  });

  it("GIVEN a block stored by one volume WHEN a later generation writes it to another volume THEN it is referenced, not uploaded", async () => {
    const store = new MemoryObjectStore();
    const repo = createRepo({ store, prefix: "d", group: "g" });
    const shared = makeBlock({ kind: "noise", seed: 4242 });
    const a = new VolumeModel(4);
    const b = new VolumeModel(4);
    a.write(1, shared);
    await writeGeneration(repo, {
      runId: "r1",
      volumes: [
        { volumeId: "vol-a", sizeBytes: 4 * BLOCK_SIZE, blocks: [{ block: 1, data: shared }] },
        { volumeId: "vol-b", sizeBytes: 4 * BLOCK_SIZE, blocks: [] },
      ],
      ...SMALL,
    });
    const root = (await readVolumeIndexRoot(repo, "vol-a")).root;
    expect(root.dedup?.base?.entries).toBe(1);
    b.write(3, shared);
    const g2 = await writeGeneration(repo, {
      runId: "r2",
      volumes: [{ volumeId: "vol-b", sizeBytes: 4 * BLOCK_SIZE, blocks: [{ block: 3, data: shared }] }],
      ...SMALL,
    });
    expect(g2.shards[0]!.stats).toMatchObject({ storedBlocks: 0, dedupedBlocks: 1 });
    expect(g2.dedup.hits).toBe(1);
    const dedup = await GroupDedup.open(repo);
    expect(dedup.runCount).toBeGreaterThanOrEqual(1);
    expect((await dedup.lookup([makeBlock({ kind: "noise", seed: 1 }).subarray(0, 32)]))[0]).toBeUndefined();
    await withTmp(async (dir) => {
      await restoreGroup(repo, { directory: dir });
      await expectImage(join(dir, "vol-a.img"), a);
      await expectImage(join(dir, "vol-b.img"), b);
    });
  });
});

describe("verify of dedup runs", () => {
  it("fails verification, naming the object, when a Bloom filter is damaged", async () => {
    const store = new MemoryObjectStore();
    const repo = createRepo({ store, prefix: "v", group: "g" });
    await writeGeneration(repo, {
      runId: "r1",
      volumes: [
        {
          volumeId: "vol-a",
          sizeBytes: 4 * BLOCK_SIZE,
          blocks: [{ block: 0, data: makeBlock({ kind: "text", seed: 3 }) }],
        },
      ],
      ...SMALL,
    });
    const bloomKey = keys.resolve(
      repo,
      (await readVolumeIndexRoot(repo, "vol-a")).root.dedup!.base!.bloomKey,
      "test",
    );
    store.corrupt(bloomKey, (b) => {
      b[b.length - 1]! ^= 0x80;
      return b;
    });
    const { verifyGeneration } = await import("#core/restore/verify.ts");
    const report = await verifyGeneration(repo);
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([expect.objectContaining({ kind: "dedup", key: bloomKey })]);
  });
});
