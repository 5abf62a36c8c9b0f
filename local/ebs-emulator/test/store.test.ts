import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EbsStore, type SnapshotRecord, scanUnion } from "../store.ts";

const VOLUME_BLOCKS = 2048; // 1 GiB

/** One lineage step: a parent (index into earlier snapshots, or -1 for a root) and writes index -> tag. */
const stepArb = fc.record({
  parent: fc.integer({ min: -1, max: 6 }),
  writes: fc.dictionary(fc.integer({ min: 0, max: 40 }).map(String), fc.integer({ min: 0, max: 3 }), {
    maxKeys: 8,
  }),
});

function content(tag: number, index: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(tag, 0);
  b.writeUInt32BE(index, 4);
  return b;
}

async function build(steps: { parent: number; writes: Record<string, number> }[]) {
  const store = await EbsStore.open({ ownerId: "123456789012", now: Date.now });
  const recs: SnapshotRecord[] = [];
  const volumes: Map<number, string>[] = []; // model: index -> checksum
  const written: Set<number>[] = [];
  const parents: number[] = [];
  for (const step of steps) {
    const p = step.parent >= 0 && step.parent < recs.length ? step.parent : -1;
    const { rec } = await store.startSnapshot({
      VolumeSize: 1,
      ParentSnapshotId: p >= 0 ? recs[p]?.id : undefined,
    });
    const vol = new Map(p >= 0 ? volumes[p] : []);
    const own = new Set<number>();
    for (const [k, tag] of Object.entries(step.writes)) {
      const i = Number(k);
      const checksum = `${tag}`; // identical tags = identical content
      await store.putBlock(rec, i, content(tag, i), checksum);
      vol.set(i, checksum);
      own.add(i);
    }
    await store.complete(rec);
    recs.push(rec);
    volumes.push(vol);
    written.push(own);
    parents.push(p);
  }
  return { store, recs, volumes, written, parents };
}

function listAll(members: Parameters<typeof scanUnion>[0]): number[] {
  const out: number[] = [];
  let next = 0;
  while (next < VOLUME_BLOCKS) {
    const page: number[] = [];
    next = scanUnion(members, next, Math.min(VOLUME_BLOCKS, next + 700), 100, page);
    out.push(...page);
  }
  return out;
}

describe("EbsStore lineage", () => {
  it("GIVEN random lineages THEN every snapshot lists and reads exactly its modelled volume", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 7 }), async (steps) => {
        const { store, recs, volumes } = await build(steps);
        recs.forEach((rec, k) => {
          const model = volumes[k] as Map<number, string>;
          expect(listAll(store.chain(rec))).toEqual([...model.keys()].sort((a, b) => a - b));
          for (const [i, checksum] of model) {
            const owner = store.owner(rec, i) as SnapshotRecord;
            expect(store.read(owner, i).checksum).toBe(checksum);
          }
        });
      }),
      { numRuns: 60 },
    );
  });

  it("GIVEN random pairs of one lineage THEN changed blocks cover every difference and are exactly the writes between them", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(stepArb, { minLength: 2, maxLength: 7 }),
        fc.nat(),
        fc.nat(),
        async (steps, x, y) => {
          const { store, recs, volumes, written, parents } = await build(steps);
          const first = x % recs.length;
          const second = y % recs.length;
          const path = store.changedPath(recs[first] as SnapshotRecord, recs[second] as SnapshotRecord);
          const ancestors = (k: number): number[] => {
            const out: number[] = [];
            for (let s = k; s >= 0; s = parents[s] as number) out.push(s);
            return out;
          };
          const a1 = ancestors(first);
          const a2 = ancestors(second);
          const common = a2.find((s) => a1.includes(s));
          if (common === undefined) {
            expect(path).toBeUndefined();
            return;
          }
          const expected = new Set<number>();
          for (const s of [...a1.slice(0, a1.indexOf(common)), ...a2.slice(0, a2.indexOf(common))]) {
            for (const i of written[s] as Set<number>) expected.add(i);
          }
          const changed = listAll(path ?? []);
          expect(changed).toEqual([...expected].sort((a, b) => a - b));
          const v1 = volumes[first] as Map<number, string>;
          const v2 = volumes[second] as Map<number, string>;
          for (const i of new Set([...v1.keys(), ...v2.keys()])) {
            if (v1.get(i) !== v2.get(i))
              expect(expected.has(i), `index ${i} differs but is not listed`).toBe(true);
          }
        },
      ),
      { numRuns: 80 },
    );
  });
});
