import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { sha256, toHex } from "#core/format/bytes.ts";
import { HashRunReader, mergeHashRuns } from "#core/format/hash-run.ts";
import { IndexRunReader, mergeRuns } from "#core/format/index-run.ts";
import {
  dedupEntries,
  FIXTURE_DIR,
  type FixtureManifestEntry,
  fixtureKey,
  indexEntries,
  RUN_FIXTURE_CASES,
  type RunFixtureCase,
  writeFixtureRun,
} from "../support/run-fixtures.ts";

/*
 * The on-bucket bytes of index runs and dedup runs are the format (docs/format.md §4): the committed
 * fixtures under test/fixtures/runs/ were written from fixed inputs before the two runs shared one page
 * codec, and every later writer must produce them byte for byte and every reader must read them.
 */
const manifest = JSON.parse(readFileSync(join(FIXTURE_DIR, "manifest.json"), "utf8")) as Record<
  string,
  FixtureManifestEntry
>;

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** About 20 entries spread over the run, for point lookups. */
const sample = <T>(all: readonly T[]): T[] =>
  all.filter((_, i) => i % Math.max(1, Math.floor(all.length / 20)) === 0);

/** Entry-by-entry equality that stays fast for 90,000 entries and names the first difference. */
function expectSameEntries(got: readonly unknown[], want: readonly unknown[]) {
  const a = got.map((e) => JSON.stringify(e));
  const b = want.map((e) => JSON.stringify(e));
  const first = a.findIndex((line, i) => line !== b[i]);
  expect(first === -1 ? "" : `entry ${first}: ${a[first]} != ${b[first]}`).toBe("");
  expect(a.length).toBe(b.length);
}

async function readBack(c: RunFixtureCase, bytes: Uint8Array, expected: FixtureManifestEntry) {
  const store = new MemoryObjectStore();
  const key = fixtureKey(c);
  await store.put(key, bytes);
  const pin = { bytes: expected.bytes, sha256: String(expected.info.sha256) };
  if (c.kind === "index") {
    const reader = await IndexRunReader.open(store, key, pin);
    expect(reader.entryCount).toBe(c.count);
    const got: { block: number; ref: unknown }[] = [];
    await mergeRuns([reader], (page, i) => {
      const e = page.entry(i);
      got.push({ block: e.block, ref: { ...e.ref, sha256: hex(e.ref.sha256) } });
    });
    const want = indexEntries(c.seed, c.count, c.segments).map((e) => ({
      block: e.block,
      ref: { ...e.ref, sha256: hex(e.ref.sha256) },
    }));
    expectSameEntries(got, want);
    for (const e of sample(want)) {
      const p = reader.pageFor(e.block);
      expect(p).toBeGreaterThanOrEqual(0);
      const page = await reader.readPage(p);
      expect(page.find(e.block)).toBeGreaterThanOrEqual(0);
    }
  } else {
    const reader = await HashRunReader.open(store, key, pin);
    expect(reader.entryCount).toBe(dedupEntries(c.seed, c.count, c.segments).length);
    const got: { hash: string; ref: unknown }[] = [];
    await mergeHashRuns([reader], (page, i) => {
      const r = page.ref(i);
      got.push({ hash: hex(page.key(i)), ref: { ...r, sha256: hex(r.sha256) } });
    });
    const want = dedupEntries(c.seed, c.count, c.segments).map((e) => ({
      hash: hex(e.hash),
      ref: { ...e.ref, sha256: hex(e.ref.sha256) },
    }));
    expectSameEntries(got, want);
    for (const e of sample(want)) {
      const h = Buffer.from(e.hash, "hex");
      const p = reader.pageFor(h);
      expect(p).toBeGreaterThanOrEqual(0);
      expect((await reader.readPage(p)).find(h)).toBeGreaterThanOrEqual(0);
    }
  }
}

describe("index-run and dedup-run bytes against committed fixtures", () => {
  it("has a fixture for every case", () => {
    expect(Object.keys(manifest).sort()).toEqual(RUN_FIXTURE_CASES.map((c) => c.name).sort());
  });

  for (const c of RUN_FIXTURE_CASES) {
    it(`GIVEN the fixed inputs of ${c.name} WHEN written THEN the object, its store calls and the returned info equal the fixture`, async () => {
      const expected = manifest[c.name]!;
      const run = await writeFixtureRun(c);
      expect(run.bytes.byteLength).toBe(expected.bytes);
      expect(toHex(sha256(run.bytes))).toBe(expected.sha256);
      expect(run.info).toEqual(expected.info);
      expect(run.calls).toEqual(expected.calls);
      if (expected.file) {
        const file = readFileSync(join(FIXTURE_DIR, expected.file));
        expect(Buffer.compare(Buffer.from(run.bytes), file)).toBe(0);
      }
    });

    it(`GIVEN the committed bytes of ${c.name} WHEN read THEN the fixed inputs come back`, async () => {
      const expected = manifest[c.name]!;
      const bytes = expected.file
        ? new Uint8Array(readFileSync(join(FIXTURE_DIR, expected.file)))
        : (await writeFixtureRun(c)).bytes;
      expect(toHex(sha256(bytes))).toBe(expected.sha256);
      await readBack(c, bytes, expected);
    });
  }

  it("keeps the fixture files it names", () => {
    for (const e of Object.values(manifest))
      if (e.file) expect(existsSync(join(FIXTURE_DIR, e.file))).toBe(true);
  });
});
