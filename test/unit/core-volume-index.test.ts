import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import type { BlockRef } from "#core/format/block-ref.ts";
import { ZERO_REF } from "#core/format/block-ref.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { Codec } from "#core/format/codec.ts";
import { writeRun } from "#core/format/index-run.ts";
import { createRepo } from "#core/format/layout.ts";
import {
  DEFAULT_COMPACTION,
  openVolumeIndex,
  planCompaction,
  prepareVolume,
  type RunRef,
} from "#core/format/volume-index.ts";

const run = (bytes: number): RunRef => ({ key: `k${bytes}`, entries: bytes, bytes, sha256: "0".repeat(64) });

function fakeRef(seed: number): BlockRef {
  const sha = new Uint8Array(32);
  sha[0] = seed & 0xff;
  sha[1] = seed >> 8;
  return { segment: "ab".repeat(16), offset: seed * 10, length: 10, codec: Codec.raw, sha256: sha };
}

describe("compaction policy", () => {
  it("GIVEN no base WHEN a delta arrives THEN it becomes the base", () => {
    expect(planCompaction(null, [run(10)])).toEqual({ kind: "full" });
  });

  it("GIVEN deltas above half the base WHEN planned THEN everything merges into a new base", () => {
    expect(planCompaction(run(100), [run(30), run(21)])).toEqual({ kind: "full" });
  });

  it("GIVEN equal-sized deltas WHEN planned THEN they merge like a binary counter", () => {
    expect(planCompaction(run(1000), [run(10), run(10)])).toEqual({ kind: "deltas", from: 0 });
    expect(planCompaction(run(1000), [run(40), run(10)])).toEqual({ kind: "deltas", from: 1 });
  });

  it("GIVEN any sequence of equal deltas WHEN simulated THEN deltas stay within the bound and their total within half the base", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 400 }), fc.integer({ min: 1, max: 50 }), (gens, d) => {
        let base = run(10_000);
        let deltas: RunRef[] = [];
        let written = 0;
        for (let g = 0; g < gens; g++) {
          deltas.push(run(d));
          written += d;
          const plan = planCompaction(base, deltas);
          if (plan.kind === "full") {
            base = run(base.bytes + deltas.reduce((s, x) => s + x.bytes, 0));
            written += base.bytes;
            deltas = [];
          } else if (plan.from < deltas.length - 1) {
            const merged = run(deltas.slice(plan.from).reduce((s, x) => s + x.bytes, 0));
            written += merged.bytes;
            deltas = [...deltas.slice(0, plan.from), merged];
          }
          expect(deltas.length).toBeLessThanOrEqual(DEFAULT_COMPACTION.maxDeltas);
          expect(deltas.reduce((s, x) => s + x.bytes, 0)).toBeLessThanOrEqual(
            base.bytes * DEFAULT_COMPACTION.maxDeltaRatio,
          );
        }
        return written >= 0;
      }),
    );
  });
});

describe("prepareVolume", () => {
  it("GIVEN random change sets over many generations WHEN prepared THEN lookup and scan equal the model", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.array(fc.tuple(fc.integer({ min: 0, max: 199 }), fc.integer({ min: 0, max: 60_000 })), {
            maxLength: 30,
          }),
          {
            minLength: 1,
            maxLength: 25,
          },
        ),
        async (gens) => {
          const store = new MemoryObjectStore();
          const repo = createRepo({ store, prefix: "", group: "g" });
          const model = new Map<number, number>();
          let prev: { versionId: string | null; sha256: string } | null = null;
          for (const [g, changes] of gens.entries()) {
            const m = new Map(changes);
            const entries = [...m.entries()]
              .sort((a, b) => a[0] - b[0])
              .map(([block, seed]) => ({ block, ref: seed % 7 === 0 ? ZERO_REF : fakeRef(seed) }));
            for (const [b, s] of m) model.set(b, s % 7 === 0 ? -1 : s);
            const shard = await writeRun(store, `runs/r${g}/shard.run`, entries, { pageEntries: 5 });
            const p = await prepareVolume(repo, {
              volumeId: "vol-1",
              runId: `r${g}`,
              fencing: g + 1,
              generation: g + 1,
              sizeBytes: 200 * BLOCK_SIZE,
              changes: [shard],
              previous: prev,
              runOptions: { pageEntries: 5 },
            });
            prev = { versionId: p.versionId ?? null, sha256: p.sha256 };
            expect(p.root.deltas.length).toBeLessThanOrEqual(DEFAULT_COMPACTION.maxDeltas);
          }
          const index = await openVolumeIndex(repo, "vol-1", prev ?? undefined);
          const seen = new Map<number, number>();
          await index.scan((batch) => {
            for (const e of batch) seen.set(e.block, e.ref.codec === Codec.zero ? -1 : e.ref.offset / 10);
          }, 7);
          expect(seen).toEqual(model);
          for (const [b, s] of [...model].slice(0, 10)) {
            const ref = await index.lookup(b);
            expect(ref?.codec === Codec.zero ? -1 : ref!.offset / 10).toBe(s);
          }
          expect(await index.lookup(500)).toBeUndefined();
        },
      ),
      { numRuns: 25 },
    );
  });

  it("GIVEN the same run prepares twice THEN the second call returns the same version (idempotent)", async () => {
    const store = new MemoryObjectStore();
    const repo = createRepo({ store, prefix: "x", group: "g" });
    const shard = await writeRun(store, "x/runs/r1/s.run", [{ block: 1, ref: fakeRef(1) }]);
    const opts = {
      volumeId: "vol-1",
      runId: "r1",
      fencing: 1,
      generation: 1,
      sizeBytes: 4 * BLOCK_SIZE,
      changes: [shard],
      previous: null,
    };
    const a = await prepareVolume(repo, opts);
    const b = await prepareVolume(repo, opts);
    expect(b).toMatchObject({ versionId: a.versionId, reused: true });
  });

  it("fails for a volume size that is not whole blocks", async () => {
    const repo = createRepo({ store: new MemoryObjectStore(), prefix: "x", group: "g" });
    await expect(
      prepareVolume(repo, {
        volumeId: "vol-1",
        runId: "r",
        fencing: 1,
        generation: 1,
        sizeBytes: 1000,
        changes: [],
        previous: null,
      }),
    ).rejects.toThrow(/whole 512 KiB blocks/);
  });
});
