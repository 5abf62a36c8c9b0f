/**
 * fetchBlocks / restoreVolume: every block is checked just before it is handed over, the handovers of
 * a range stay one at a time and in order while the next block is checked, and a damaged block or a
 * failed handover fails the read with the first error (nothing after it handed over, no unhandled
 * rejection, no image left behind). Ranges are read into the hash pool's buffers: a buffer is reused
 * only once every block of its range was handed over and whatever a handover kept is released; a range
 * whose buffer went down with a hash thread is read again.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { BlockIntegrityError } from "#core/errors.ts";
import type { IndexEntry } from "#core/format/block-ref.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { readCommittedManifest } from "#core/format/generation.ts";
import { createRepo, keys, type Repo } from "#core/format/layout.ts";
import { openVolumeIndex } from "#core/format/volume-index.ts";
import { writeGeneration } from "#core/protocol/write-generation.ts";
import { fetchBlocks, restoreVolume, SegmentFooters } from "#core/restore/restore.ts";
import { HashThreadLostError, Sha256Pool } from "#core/util/hash-pool.ts";

const BLOCKS = 24;
const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** A committed generation of one volume whose every block is distinct random data. */
async function setup(compression: "none" | "zstd") {
  const store = new MemoryObjectStore();
  const repo: Repo = createRepo({ store, prefix: "r", group: "g" });
  const content = new Map<number, Buffer>();
  const blocks = Array.from({ length: BLOCKS }, (_, i) => {
    // Half random (incompressible), half repeated: zstd really compresses the blocks it stores.
    const data = Buffer.concat([randomBytes(BLOCK_SIZE / 2), Buffer.alloc(BLOCK_SIZE / 2, i + 1)]);
    content.set(i, data);
    return { block: i, data };
  });
  await writeGeneration(repo, {
    runId: "fill",
    volumes: [{ volumeId: "vol-1", sizeBytes: (BLOCKS + 8) * BLOCK_SIZE, blocks }],
    segments: { compression },
  });
  const manifest = (await readCommittedManifest(repo))!;
  const index = await openVolumeIndex(repo, "vol-1", manifest.volumes[0]!.index);
  const entries: IndexEntry[] = [];
  await index.scan((b) => {
    entries.push(...b);
  });
  return { store, repo, manifest, entries, content };
}

/** Rewrites the segment holding `entry` with one byte of its stored block flipped. */
async function damage(store: MemoryObjectStore, repo: Repo, entry: IndexEntry): Promise<void> {
  const key = keys.segment(repo, entry.ref.segment!);
  const body = Buffer.from((await store.get(key)).body);
  body[entry.ref.offset + Math.floor(entry.ref.length / 2)]! ^= 0x01;
  await store.put(key, body);
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("fetchBlocks", () => {
  for (const compression of ["none", "zstd"] as const) {
    it(`GIVEN ${compression} blocks and a slow handover WHEN read THEN every block arrives checked, in range order, one handover at a time`, async () => {
      const { repo, entries, content } = await setup(compression);
      let pending = 0;
      let maxPending = 0;
      const seen: number[] = [];
      const stats = await fetchBlocks(
        repo,
        entries,
        async (block, raw) => {
          pending++;
          maxPending = Math.max(maxPending, pending);
          expect(sha(raw), `block ${block}`).toBe(sha(content.get(block)!));
          seen.push(block);
          await new Promise((r) => setTimeout(r, 2));
          pending--;
        },
        { concurrency: 1, maxRangeBytes: 4 * BLOCK_SIZE },
        undefined,
        new SegmentFooters(repo),
      );
      expect(maxPending).toBe(1);
      expect(seen).toEqual(entries.map((e) => e.block)); // one range at a time: the index order
      expect(stats.blocks).toBe(BLOCKS);
    });
  }

  it("GIVEN a damaged block in the middle of a range WHEN read THEN the blocks before it are handed over and finished, none after, and the error names it", async () => {
    const { store, repo, entries } = await setup("none");
    const bad = entries[5]!;
    await damage(store, repo, bad);
    const handed: number[] = [];
    const finished: number[] = [];
    const error = await fetchBlocks(
      repo,
      entries,
      async (block) => {
        handed.push(block);
        await new Promise((r) => setTimeout(r, 5));
        finished.push(block);
      },
      { concurrency: 1, maxRangeBytes: 8 * BLOCK_SIZE },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BlockIntegrityError);
    expect((error as BlockIntegrityError).blockIndex).toBe(bad.block);
    expect(handed).toEqual(entries.slice(0, 5).map((e) => e.block));
    expect(finished).toEqual(handed);
  });

  for (const compression of ["none", "zstd"] as const) {
    it(`GIVEN ${compression} blocks, one damaged, and checkDigests "receiver" WHEN read THEN every block is handed over unhashed, and verify throws BlockIntegrityError for the damaged one only`, async () => {
      const { store, repo, entries, content } = await setup(compression);
      const bad = entries[5]!;
      await damage(store, repo, bad);
      const verdicts = new Map<number, unknown>();
      const intact: number[] = [];
      for (const hashPool of [null, new Sha256Pool(1)]) {
        verdicts.clear();
        intact.length = 0;
        const stats = await fetchBlocks(
          repo,
          entries,
          (block, raw, _ref, _keep, verify) => {
            if (sha(raw) === sha(content.get(block)!)) intact.push(block);
            try {
              verify();
              verdicts.set(block, "sound");
            } catch (error) {
              verdicts.set(block, error);
            }
          },
          { concurrency: 2, maxRangeBytes: 4 * BLOCK_SIZE, checkDigests: "receiver", hashPool },
          undefined,
          new SegmentFooters(repo),
        );
        hashPool?.close();
        expect(stats.blocks).toBe(BLOCKS);
        if (compression === "none") {
          // stored raw: the flipped byte reaches the receiver (whose write would refuse it)
          expect(intact).toHaveLength(BLOCKS - 1);
          expect(intact).not.toContain(bad.block);
        }
        for (const e of entries) {
          if (e.block === bad.block) {
            expect(verdicts.get(e.block)).toBeInstanceOf(BlockIntegrityError);
            expect((verdicts.get(e.block) as BlockIntegrityError).blockIndex).toBe(bad.block);
          } else expect(verdicts.get(e.block), `block ${e.block}`).toBe("sound");
        }
      }
    });
  }

  it("GIVEN a handover that fails WHEN read THEN that error is thrown, nothing after it in the range is handed over", async () => {
    const { repo, entries } = await setup("zstd");
    const handed: number[] = [];
    const error = await fetchBlocks(
      repo,
      entries,
      async (block) => {
        handed.push(block);
        await new Promise((r) => setTimeout(r, 1));
        if (block === entries[2]!.block) throw new Error("disk full");
      },
      { concurrency: 1, maxRangeBytes: 8 * BLOCK_SIZE },
    ).catch((e: unknown) => e);
    expect((error as Error).message).toBe("disk full");
    expect(handed).toEqual(entries.slice(0, 3).map((e) => e.block));
  });
});

describe("fetchBlocks buffers", () => {
  const hashPool = new Sha256Pool(1);
  afterAll(() => hashPool.close());
  const RANGE = 4 * BLOCK_SIZE; // 24 blocks: 6 ranges

  it("GIVEN handovers that keep nothing WHEN ranges are read one after another THEN later ranges read into buffers earlier ones gave back", async () => {
    const { repo, entries, content } = await setup("none");
    const made = hashPool.buffersMade;
    let blocks = 0;
    await fetchBlocks(
      repo,
      entries,
      (block, raw) => {
        expect(sha(raw), `block ${block}`).toBe(sha(content.get(block)!));
        blocks++;
      },
      { concurrency: 1, maxRangeBytes: RANGE, hashPool },
    );
    expect(blocks).toBe(BLOCKS);
    expect(hashPool.buffersMade - made).toBeLessThan(BLOCKS / 4);
  });

  it("GIVEN handovers that keep every block until later WHEN more ranges are read THEN no kept block changes, and its buffer is reused only once released", async () => {
    const { repo, entries, content } = await setup("none");
    const kept: Array<{ block: number; raw: Uint8Array }> = [];
    const releases: Array<() => void> = [];
    await fetchBlocks(
      repo,
      entries,
      (block, raw, _ref, keep) => {
        kept.push({ block, raw });
        keep(new Promise<void>((r) => releases.push(r)));
      },
      { concurrency: 1, maxRangeBytes: RANGE, hashPool },
    );
    expect(kept).toHaveLength(BLOCKS);
    for (const k of kept) expect(sha(k.raw), `kept block ${k.block}`).toBe(sha(content.get(k.block)!));
    const held = new Set(kept.map((k) => k.raw.buffer));
    expect(held.size).toBe(BLOCKS / 4); // one buffer per range, none shared while kept
    for (const release of releases) release();
    await new Promise((r) => setTimeout(r, 10));
    const made = hashPool.buffersMade;
    await fetchBlocks(repo, entries, () => {}, { concurrency: 1, maxRangeBytes: RANGE, hashPool });
    expect(hashPool.buffersMade).toBe(made); // the released buffers serve every later range
  });

  it("GIVEN a hash thread that dies holding ranges' buffers WHEN read THEN those ranges are read again and every block still arrives checked", async () => {
    const { repo, entries, content } = await setup("none");
    /** Every other range's buffer is lost the way a dying thread loses it: moved away, never back. */
    class Dying extends Sha256Pool {
      calls = 0;
      override digestMoved(view: Uint8Array, spans: ReadonlyArray<readonly [number, number]>) {
        if (this.calls++ % 2 === 1) return super.digestMoved(view, spans);
        structuredClone(view.buffer, { transfer: [view.buffer as ArrayBuffer] }); // detached here
        return Promise.reject(new HashThreadLostError());
      }
    }
    const dying = new Dying(1);
    const seen = new Set<number>();
    const stats = await fetchBlocks(
      repo,
      entries,
      (block, raw) => {
        expect(sha(raw), `block ${block}`).toBe(sha(content.get(block)!));
        seen.add(block);
      },
      { concurrency: 3, maxRangeBytes: RANGE, hashPool: dying },
    );
    await dying.close();
    expect(seen.size).toBe(BLOCKS);
    expect(dying.calls).toBe(BLOCKS / 4); // once per range: the lost half is read again, hashed here
    expect(stats.requests).toBe(BLOCKS / 4 + BLOCKS / 4 / 2);
  });

  for (const threads of [true, false]) {
    it(`GIVEN a damaged block WHEN read ${threads ? "with hash threads" : "hashing on the calling thread"} THEN it is refused, naming the block`, async () => {
      const { store, repo, entries } = await setup("none");
      await damage(store, repo, entries[9]!);
      const error = await fetchBlocks(repo, entries, () => {}, {
        concurrency: 2,
        maxRangeBytes: RANGE,
        hashPool: threads ? hashPool : null,
      }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(BlockIntegrityError);
      expect((error as BlockIntegrityError).blockIndex).toBe(entries[9]!.block);
    });
  }
});

describe("restoreVolume", () => {
  it("GIVEN a damaged block WHEN restored over an existing image THEN it fails naming the block and leaves the old image and no partial file", async () => {
    const { store, repo, manifest, entries } = await setup("none");
    const dir = await mkdtemp(join(tmpdir(), "cgm-restore-fetch-"));
    dirs.push(dir);
    const path = join(dir, "vol-1.img");
    await writeFile(path, "the old image");
    await damage(store, repo, entries[BLOCKS - 3]!);
    const error = await restoreVolume(repo, { volumeId: "vol-1", manifest, path }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BlockIntegrityError);
    expect((error as BlockIntegrityError).blockIndex).toBe(entries[BLOCKS - 3]!.block);
    expect(await readFile(path, "utf8")).toBe("the old image");
    expect(await readdir(dir)).toEqual(["vol-1.img"]);
  });

  it("GIVEN two restores of one volume to one path at once WHEN both finish THEN the image is exact and no partial file is left", async () => {
    const { repo, manifest, content } = await setup("zstd");
    const dir = await mkdtemp(join(tmpdir(), "cgm-restore-fetch-"));
    dirs.push(dir);
    const path = join(dir, "vol-1.img");
    const [a, b] = await Promise.all([
      restoreVolume(repo, { volumeId: "vol-1", manifest, path, concurrency: 3 }),
      restoreVolume(repo, { volumeId: "vol-1", manifest, path, concurrency: 5 }),
    ]);
    expect(a.dataBlocks).toBe(BLOCKS);
    expect(b.dataBlocks).toBe(BLOCKS);
    const image = await readFile(path);
    expect(image.byteLength).toBe((BLOCKS + 8) * BLOCK_SIZE);
    for (const [block, data] of content) {
      expect(sha(image.subarray(block * BLOCK_SIZE, (block + 1) * BLOCK_SIZE)), `block ${block}`).toBe(
        sha(data),
      );
    }
    expect(sha(image.subarray(BLOCKS * BLOCK_SIZE))).toBe(sha(Buffer.alloc(8 * BLOCK_SIZE)));
    expect(await readdir(dir)).toEqual(["vol-1.img"]);
  });
});
