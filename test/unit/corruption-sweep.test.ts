/**
 * Corruption sweep (issue 9, "Beyond these"). A small group (two volumes, three committed generations:
 * a base run with a live delta, merged runs, cross-volume dedup, index root versions that two
 * generations pin) is built once; then every byte of every metadata object a committed generation
 * reaches — HEAD, commit records, manifests, index roots, block index runs, dedup runs, Bloom filters,
 * segment footers and trailers — and sampled bytes of pages, bitsets and block data are flipped one at
 * a time, checked, and flipped back (no rebuild). For every flip:
 *   1. verify of a generation that reaches the object reports a problem, and every problem names the
 *      damaged object; the commit record of HEAD's generation is also refused by the next run's
 *      inspectRepository (HEAD too);
 *   2. the restore path (`readVolume`, through `readMatches` where the manifest must be resolved) of a
 *      generation/volume that reads the object throws an error naming it. Where restore does not read
 *      the object (dedup runs and Bloom filters, which only a backup reads; the commit record of HEAD's
 *      own generation) it returns the exact bytes, and the reader that does use it refuses it
 *      (GroupDedup, the next backup's Transfer; inspectRepository, the next run's fence) or answers
 *      exactly what the undamaged object answers;
 *   3. no read ever returns wrong bytes.
 * A flip in a compressed block that still decodes to the same content (zstd's decoder ignores a few
 * header and padding bits) is told apart by an independent decode: it must restore exactly, and verify
 * has nothing to report, since the block's content is intact.
 *
 * Cost (about 8,000 JSON and 2,500 binary flips, some 1,500 reads of 512 KiB blocks): a flip is
 * checked through one of the generations/volumes that reach the object, in rotation; verify uses
 * readData 1 for JSON objects and block data, and on every SAMPLE-th flip of the binary metadata
 * objects (see `readDataFor`).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BlockRef } from "#core/format/block-ref.ts";
import { BLOCK_SIZE, equalBytes, sha256 } from "#core/format/bytes.ts";
import { Codec, decodeBlock } from "#core/format/codec.ts";
import { GroupDedup, openHashRunRef } from "#core/format/dedup-index.ts";
import {
  type GenerationManifest,
  readCommitRecord,
  readGeneration,
  readHead,
} from "#core/format/generation.ts";
import { keys } from "#core/format/layout.ts";
import { RUN_TRAILER_BYTES } from "#core/format/run-trailer.ts";
import { readSegmentFooter } from "#core/format/segment.ts";
import { openVolumeIndex, readVolumeIndexRoot } from "#core/format/volume-index.ts";
import { inspectRepository } from "#core/protocol/commit.ts";
import { readVolume } from "#core/restore/restore.ts";
import { verifyGeneration } from "#core/restore/verify.ts";
import { blockBytes } from "../support/mem-ebs.ts";
import { type MemGroup, memGroup, readMatches } from "../support/mem-group.ts";
import { runPipeline } from "../support/pipeline.ts";

/** Bloom filter header (core/format/bloom.ts: magic, major, minor, k, bits, sha256) before the bitset. */
const BLOOM_HEAD = 56;
/** Every k-th byte of block data, plus the first FRAME_HEAD bytes (codec frame header) of every block. */
const DATA_STEP = 1009;
const FRAME_HEAD = 6;
/** Every k-th byte of index and dedup pages and of Bloom bitsets. */
const PAGE_STEP = 4;
/**
 * Every k-th flip of a binary metadata object verifies with readData 1 (the others with readData 0:
 * see `readDataFor`), and every k-th flip of an object restore does not read repeats the exact-bytes
 * read (the read trace of the undamaged group already shows restore never touches it).
 */
const SAMPLE = 8;
const RESTORE_SAMPLE = 16;

const VOLUMES = [
  { id: "vol-a", blocks: 6 },
  { id: "vol-b", blocks: 4 },
] as const;

/** What each generation writes (block → content seed; "zero" is a written all-zero block). */
const WRITES: ReadonlyArray<Readonly<Record<string, Readonly<Record<number, string>>>>> = [
  {
    "vol-a": { 0: "a0", 1: "a1", 2: "a2", 3: "zero", 4: "zero", 5: "zero" },
    "vol-b": { 0: "b0", 1: "zero", 2: "zero" },
  },
  // One changed block: a delta run small enough to stay beside vol-a's base; vol-b's root is pinned again.
  { "vol-a": { 1: "a1-2" } },
  // A block vol-a already stores: deduplicated across volumes; vol-b's runs merge; vol-a's root pinned again.
  { "vol-b": { 3: "a2" } },
];

type Kind =
  | "HEAD"
  | "commit record"
  | "manifest"
  | "index root"
  | "block index run"
  | "dedup run"
  | "Bloom filter"
  | "segment footer+trailer"
  | "segment data";

interface Use {
  readonly generation: number;
  readonly volumeId: string;
}

interface Stored {
  readonly key: string;
  readonly versionId: string;
  readonly size: number;
}

interface VolumeObject extends Stored {
  /** The generations/volumes whose index root reaches the object. */
  readonly uses: Use[];
}

interface DedupRun extends VolumeObject {
  readonly bloomKey: string;
  /** Every hash of the run with what GroupDedup answers for it in the undamaged group. */
  readonly lookups: Array<{ hash: Uint8Array; ref: BlockRef | undefined }>;
}

interface SegmentBlock {
  readonly offset: number;
  readonly length: number;
  readonly codec: number;
  readonly sha256: Uint8Array;
  /** Generations/volumes whose index refers to the block (their restore reads it). */
  readonly index: Use[];
  /** Generations/volumes whose dedup runs refer to it (their verify checks it). */
  readonly dedup: Use[];
}

interface Segment extends Stored {
  readonly dataLength: number;
  readonly blocks: SegmentBlock[];
}

interface Catalog {
  readonly headGeneration: number;
  /** The undamaged manifests (restoreGroup resolves the manifest once and reads each volume with it). */
  readonly manifestOf: Map<number, GenerationManifest>;
  readonly head: Stored;
  readonly records: Map<number, Stored>;
  readonly manifests: Map<number, Stored>;
  readonly roots: VolumeObject[];
  readonly rootsWithDeltas: number;
  readonly indexRuns: VolumeObject[];
  readonly dedupRuns: DedupRun[];
  readonly blooms: VolumeObject[];
  readonly segments: Segment[];
  /** `generation:volumeId` → every key readVolume GETs for it in the undamaged group. */
  readonly restoreReads: Map<string, Set<string>>;
}

const counts = new Map<Kind, { flips: number; objects: number; note?: string }>();
let unreferenced: string[] = [];
let g: MemGroup;
let catalog: Catalog;

const useKey = (u: Use) => `${u.generation}:${u.volumeId}`;

function addUse(list: Use[], use: Use): void {
  if (!list.some((u) => useKey(u) === useKey(use))) list.push(use);
}

async function stored(key: string, versionId?: string): Promise<Stored> {
  const h = await g.store.head(key, versionId ? { versionId } : {});
  if (!h) throw new Error(`test setup: ${key} is missing`);
  return { key, versionId: h.versionId!, size: h.size };
}

/** Walks every committed generation and records every object it reaches and who reads it. */
async function buildCatalog(generations: number): Promise<Catalog> {
  const repo = g.repo;
  const head = (await readHead(repo))!;
  const records = new Map<number, Stored>();
  const manifests = new Map<number, Stored>();
  const manifestOf = new Map<number, GenerationManifest>();
  const roots = new Map<string, VolumeObject>();
  const indexRuns = new Map<string, VolumeObject>();
  const blooms = new Map<string, VolumeObject>();
  const dedupRuns = new Map<string, DedupRun>();
  const segments = new Map<string, Segment>();
  const restoreReads = new Map<string, Set<string>>();
  let rootsWithDeltas = 0;
  const object = async (list: Map<string, VolumeObject>, key: string, use: Use, versionId?: string) => {
    const id = `${key}@${versionId ?? ""}`;
    let o = list.get(id);
    if (!o) {
      o = { ...(await stored(key, versionId)), uses: [] };
      list.set(id, o);
    }
    addUse(o.uses, use);
    return o;
  };
  const block = async (ref: BlockRef, use: Use, via: "index" | "dedup") => {
    const key = keys.segment(repo, ref.segment!);
    let s = segments.get(key);
    if (!s) {
      const footer = await readSegmentFooter(g.store, key);
      s = {
        ...(await stored(key)),
        dataLength: footer.dataLength,
        blocks: footer.entries.map((e) => ({ ...e, index: [], dedup: [] })),
      };
      segments.set(key, s);
    }
    const b = s.blocks.find((x) => x.offset === ref.offset);
    if (!b || b.length !== ref.length || !equalBytes(b.sha256, ref.sha256)) {
      throw new Error(`test setup: ${key} has no block at ${ref.offset}`);
    }
    addUse(b[via], use);
  };
  for (let n = 1; n <= generations; n++) {
    const m = await readGeneration(repo, n);
    manifestOf.set(n, m);
    manifests.set(n, await stored(keys.manifest(repo, n, m.fencing)));
    records.set(n, await stored(keys.commit(repo, n)));
    for (const v of m.volumes) {
      const use = { generation: n, volumeId: v.volumeId };
      const rootKey = keys.volumeIndex(repo, v.volumeId);
      const state = await readVolumeIndexRoot(repo, v.volumeId, v.index);
      const root = state.root;
      if (!roots.has(`${rootKey}@${state.versionId}`) && root.deltas.length > 0) rootsWithDeltas++;
      await object(roots, rootKey, use, state.versionId);
      for (const r of [...(root.base ? [root.base] : []), ...root.deltas]) {
        await object(indexRuns, keys.resolve(repo, r.key, rootKey), use);
      }
      for (const d of root.dedup
        ? [...(root.dedup.base ? [root.dedup.base] : []), ...root.dedup.deltas]
        : []) {
        const key = keys.resolve(repo, d.key, rootKey);
        let run = dedupRuns.get(key);
        if (!run) {
          const bloomKey = keys.resolve(repo, d.bloomKey, rootKey);
          run = { ...(await stored(key)), uses: [], bloomKey, lookups: [] };
          dedupRuns.set(key, run);
          const reader = await openHashRunRef(repo, d, rootKey);
          for (let p = 0; p < reader.pageCount; p++) {
            const page = await reader.readPage(p);
            for (let i = 0; i < page.count; i++) run.lookups.push({ hash: page.key(i), ref: page.ref(i) });
          }
        }
        addUse(run.uses, use);
        for (const l of run.lookups) await block(l.ref!, use, "dedup");
        await object(blooms, run.bloomKey, use);
      }
      const index = await openVolumeIndex(repo, v.volumeId, v.index);
      await index.scan(async (batch) => {
        for (const e of batch) if (e.ref.codec !== Codec.zero) await block(e.ref, use, "index");
      });
      // Everything restore reads for this generation and volume.
      const reads = new Set<string>();
      g.store.beforeOperation = (op, key) => {
        if (op === "get") reads.add(key);
      };
      try {
        await readVolume(repo, { manifest: m, volumeId: v.volumeId }, () => {});
      } finally {
        g.store.beforeOperation = undefined;
      }
      restoreReads.set(useKey(use), reads);
    }
  }
  // What the next backup's GroupDedup answers for every hash of the runs HEAD reaches.
  const dedup = await GroupDedup.open(repo);
  for (const run of dedupRuns.values()) {
    if (run.uses.some((u) => u.generation === head.head.generation)) {
      for (const l of run.lookups) l.ref = await dedup.lookupCommitted(l.hash);
    } else {
      run.lookups.length = 0;
    }
  }
  return {
    headGeneration: head.head.generation,
    manifestOf,
    head: await stored(keys.head(repo), head.versionId),
    records,
    manifests,
    roots: [...roots.values()],
    rootsWithDeltas,
    indexRuns: [...indexRuns.values()],
    dedupRuns: [...dedupRuns.values()],
    blooms: [...blooms.values()],
    segments: [...segments.values()],
    restoreReads,
  };
}

// ------------------------------------------------------------------------------------------ checks

type Gap = string | undefined;

/** Flips `mask` into byte `at` of one stored version, runs `check`, and flips it back. */
async function flipped<T>(o: Stored, at: number, mask: number, check: () => Promise<T>): Promise<T> {
  const flip = (b: Uint8Array) => {
    b[at] = b[at]! ^ mask;
    return b;
  };
  g.store.corrupt(o.key, flip, o.versionId);
  try {
    return await check();
  } finally {
    g.store.corrupt(o.key, flip, o.versionId);
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** Sealed JSON metadata (HEAD, commit records, manifests, index roots): its seal covers `version`. */
const SEALED_JSON = /(\/HEAD|\/index|\.json)$/;

/**
 * How `what` reported damage to `key`: it must name the object, and a sealed JSON object whose seal
 * fails is damage, not an unknown format (a flipped version digit must not say "upgrade cgmirror").
 */
function misreported(what: string, key: string, report: string): Gap {
  if (!report.includes(key)) return `${what} does not name ${key}: ${report}`;
  if (SEALED_JSON.test(key) && report.includes("UnsupportedFormatError")) {
    return `${what} calls a damaged sealed object an unsupported format: ${report}`;
  }
  return undefined;
}

/** A reader must throw an error naming `key`. */
async function refuses(what: string, run: () => Promise<unknown>, key: string): Promise<Gap> {
  try {
    await run();
  } catch (error) {
    return misreported(what, key, describeError(error));
  }
  return `${what} accepted it`;
}

/**
 * verify reports at least one problem, and every problem names `key`. With `volumeIds` (an object of
 * some volumes) it verifies the generation's undamaged manifest, as `verify` does once it has read it.
 */
async function verifyNames(
  options: { generation?: number; volumeIds?: string[]; readData?: number },
  key: string,
): Promise<Gap> {
  const what = `verify of generation ${options.generation ?? "HEAD"}${options.volumeIds ? ` [${options.volumeIds.join(",")}]` : ""}`;
  const manifest =
    options.generation !== undefined && options.volumeIds?.length
      ? { manifest: catalog.manifestOf.get(options.generation)! }
      : {};
  let report: Awaited<ReturnType<typeof verifyGeneration>>;
  try {
    report = await verifyGeneration(g.repo, { readData: 1, ...options, ...manifest });
  } catch (error) {
    return `${what} threw: ${describeError(error)}`;
  }
  if (report.problems.length === 0) return `${what} reports nothing`;
  const other = report.problems.filter((p) => p.key !== key);
  if (other.length > 0) return `${what} names ${other.map((p) => `${p.key} (${p.message})`).join("; ")}`;
  return misreported(what, key, report.problems.map((p) => `${p.key}: ${p.message}`).join("; "));
}

/**
 * One volume of a generation through readVolume (restore's every check after restoreGroup resolved the
 * manifest, which the sweep of HEAD, records and manifests covers), compared with its image.
 */
async function readVolumeMatches(generation: number, volumeId: string): Promise<string[]> {
  const m = catalog.manifestOf.get(generation)!;
  const v = m.volumes.find((x) => x.volumeId === volumeId)!;
  const image = g.ebs.image(v.sourceSnapshotId!);
  const expected = (b: number) => {
    const content = image.blocks.get(b) ?? null;
    return content === null || content === "zero" ? ZERO : blockBytes(content);
  };
  const problems: string[] = [];
  const seen = new Set<number>();
  // Compared as handed over (no copies: a sweep reads thousands of 512 KiB blocks).
  await readVolume(g.repo, { manifest: m, volumeId }, (b, raw) => {
    seen.add(b);
    if (b >= image.sizeBlocks) problems.push(`${volumeId} block ${b} beyond the volume`);
    else if (!equalBytes(raw, expected(b)))
      problems.push(`${volumeId} block ${b} differs in generation ${generation}`);
  });
  if (v.sizeBytes !== image.sizeBlocks * BLOCK_SIZE) problems.push(`${volumeId}: size ${v.sizeBytes}`);
  for (let b = 0; b < image.sizeBlocks; b++) {
    if (!seen.has(b) && expected(b) !== ZERO)
      problems.push(`${volumeId} block ${b} is missing in generation ${generation}`);
  }
  return problems;
}

const ZERO = new Uint8Array(BLOCK_SIZE);

/**
 * The restore path of a generation (one volume, or every volume with `readMatches`): when `mustRefuse`
 * it throws naming `key`; otherwise it returns exactly the images' bytes. Never wrong bytes.
 */
async function restoreCheck(
  generation: number | undefined,
  volumeId: string | undefined,
  key: string,
  mustRefuse: boolean,
): Promise<Gap> {
  const what = `restore of generation ${generation ?? "HEAD"}${volumeId ? ` ${volumeId}` : ""}`;
  let diffs: string[];
  try {
    diffs =
      generation !== undefined && volumeId !== undefined
        ? await readVolumeMatches(generation, volumeId)
        : await readMatches(g, generation);
  } catch (error) {
    if (!mustRefuse) return `${what} does not need ${key} but threw: ${describeError(error)}`;
    return misreported(what, key, describeError(error));
  }
  if (diffs.length > 0) return `${what} returned WRONG BYTES: ${diffs.join("; ")}`;
  return mustRefuse ? `${what} succeeded` : undefined;
}

function offsets(start: number, end: number, step = 1): number[] {
  const out: number[] = [];
  for (let at = start; at < end; at += step) out.push(at);
  return out;
}

/** A flip: byte `at` XOR `mask` (a bare number: XOR 0x01). */
type Flip = number | { readonly at: number; readonly mask: number };

/** Applies every flip to `o` in turn; `check(i, at, mask)` returns the gaps of flip `i`. */
async function sweep(
  kind: Kind,
  o: Stored,
  flips: Iterable<Flip>,
  check: (i: number, at: number, mask: number) => Promise<Gap[]>,
  gaps: string[],
): Promise<void> {
  const c = counts.get(kind) ?? { flips: 0, objects: 0 };
  c.objects++;
  let i = 0;
  for (const f of flips) {
    const { at, mask } = typeof f === "number" ? { at: f, mask: 0x01 } : f;
    const found = await flipped(o, at, mask, () => check(i, at, mask));
    const where = `${kind} ${o.key}@${o.versionId} byte ${at}^0x${mask.toString(16).padStart(2, "0")}`;
    for (const x of found) if (x) gaps.push(`${where}: ${x}`);
    i++;
  }
  c.flips += i;
  counts.set(kind, c);
}

function expectNoGaps(gaps: readonly string[]): void {
  expect(gaps.length, `${gaps.length} gap(s):\n${gaps.slice(0, 12).join("\n")}`).toBe(0);
}

/** verify options for one generation and volume. */
function scope(u: Use): { generation: number; volumeIds: string[] } {
  return { generation: u.generation, volumeIds: [u.volumeId] };
}

/**
 * readData for verify of flip `i` of a binary metadata object (runs, filters, footers): 1 on every
 * SAMPLE-th flip, else 0. These objects are checked structurally (readData 0 reads and checks every
 * run, page, filter and footer); readData only adds re-hashing every block, which they do not hold.
 */
function readDataFor(i: number): number {
  return i % SAMPLE === 0 ? 1 : 0;
}

/** Where a run's metadata (directory + trailer) starts: pages | directory | trailer. */
async function runMetadataStart(o: Stored): Promise<number> {
  const body = (await g.store.get(o.key, { versionId: o.versionId })).body;
  const t = new DataView(
    body.buffer,
    body.byteOffset + body.byteLength - RUN_TRAILER_BYTES,
    RUN_TRAILER_BYTES,
  );
  return body.byteLength - RUN_TRAILER_BYTES - t.getUint32(28, true);
}

/**
 * Dedup runs and Bloom filters: verify names them; restore (which never reads them) returns the exact
 * bytes; the next backup's GroupDedup refuses them, or answers exactly as the undamaged run does (a
 * damaged page it never reads cannot mislead it).
 */
async function dedupChecks(o: VolumeObject, run: DedupRun, i: number): Promise<Gap[]> {
  const out: Gap[] = [];
  out.push(await verifyNames({ ...scope(o.uses[i % o.uses.length]!), readData: readDataFor(i) }, o.key));
  if (i % RESTORE_SAMPLE === 0) {
    const u = o.uses[Math.floor(i / RESTORE_SAMPLE) % o.uses.length]!;
    out.push(await restoreCheck(u.generation, u.volumeId, o.key, false));
  }
  if (run.lookups.length > 0) {
    try {
      const dedup = await GroupDedup.open(g.repo, catalog.manifestOf.get(catalog.headGeneration));
      for (const l of run.lookups) {
        const ref = await dedup.lookupCommitted(l.hash);
        const same =
          ref !== undefined &&
          l.ref !== undefined &&
          ref.segment === l.ref.segment &&
          ref.offset === l.ref.offset &&
          ref.length === l.ref.length &&
          ref.codec === l.ref.codec &&
          equalBytes(ref.sha256, l.ref.sha256);
        if (!same) out.push(`GroupDedup answered a WRONG REF for a hash of ${run.key}`);
      }
    } catch (error) {
      if (!describeError(error).includes(o.key)) {
        out.push(`GroupDedup threw without naming ${o.key}: ${describeError(error)}`);
      }
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------- tests

describe("corruption sweep: a flipped byte of any object is reported by verify and refused by restore", () => {
  beforeAll(async () => {
    g = memGroup({ volumes: VOLUMES });
    for (const [i, writes] of WRITES.entries()) {
      for (const [volumeId, blocks] of Object.entries(writes)) {
        for (const [block, content] of Object.entries(blocks)) g.ebs.write(volumeId, Number(block), content);
      }
      expect(await runPipeline(g.deps(), g.config, `run-${i + 1}`)).toMatchObject({
        outcome: "committed",
        generation: i + 1,
      });
    }
    catalog = await buildCatalog(WRITES.length);
  });

  afterAll(() => {
    const parts = [...counts].map(
      ([kind, c]) => `${kind} ${c.flips} flips/${c.objects} objects${c.note ? ` (${c.note})` : ""}`,
    );
    console.log(
      `corruption sweep: ${parts.join(", ")}; not swept: ${unreferenced.length} objects no generation reaches`,
    );
  });

  it("GIVEN three committed generations WHEN the objects they reach are catalogued THEN every stored object a generation reaches is swept, and restore reads roots, block runs and segments but never dedup runs or Bloom filters", async () => {
    const swept = new Set(
      [
        catalog.head,
        ...catalog.records.values(),
        ...catalog.manifests.values(),
        ...catalog.roots,
        ...catalog.indexRuns,
        ...catalog.dedupRuns,
        ...catalog.blooms,
        ...catalog.segments,
      ].map((o) => `${o.key}@${o.versionId}`),
    );
    const others: string[] = [];
    for await (const v of g.store.listVersions(`${g.repo.prefix}/`)) {
      const rel = v.key.slice(g.repo.prefix.length + 1);
      if (
        v.isDeleteMarker ||
        rel.startsWith("locks/") ||
        rel.startsWith("runs/") ||
        rel.startsWith("history/")
      )
        continue; // lock, run scratch, run records (format §13: nothing a restore reads)
      if (rel === "HEAD" && !v.isLatest) continue; // HEAD's history (repair reads it)
      if (!swept.has(`${v.key}@${v.versionId}`)) others.push(rel);
    }
    // Runs that a Prepare wrote and merged away in the same Prepare: no root names them.
    unreferenced = others;
    for (const rel of others)
      expect(rel).toMatch(/^volumes\/vol-[ab]\/runs\/\d{10}-(delta|dedup)-[0-9a-f]+\.run(\.bloom)?$/);
    // The shapes the sweep must cover.
    expect(catalog.rootsWithDeltas).toBeGreaterThan(0);
    expect(catalog.roots.some((r) => r.uses.length > 1)).toBe(true);
    expect(catalog.indexRuns.some((r) => /-base-/.test(r.key))).toBe(true);
    expect(catalog.dedupRuns.some((r) => /-dedup-base-/.test(r.key) && r.lookups.length > 0)).toBe(true);
    const blocks = catalog.segments.flatMap((s) => s.blocks);
    expect(blocks.some((b) => new Set(b.index.map((u) => u.volumeId)).size > 1)).toBe(true); // cross-volume dedup
    expect(blocks.some((b) => b.dedup.some((d) => !b.index.some((x) => useKey(x) === useKey(d))))).toBe(true);
    for (const [use, reads] of catalog.restoreReads) {
      const reaches = (o: VolumeObject) => o.uses.some((x) => useKey(x) === use);
      for (const o of [...catalog.roots, ...catalog.indexRuns].filter(reaches))
        expect(reads).toContain(o.key);
      for (const o of [...catalog.dedupRuns, ...catalog.blooms]) expect(reads).not.toContain(o.key);
      for (const s of catalog.segments) {
        expect(reads.has(s.key)).toBe(s.blocks.some((b) => b.index.some((x) => useKey(x) === use)));
      }
    }
  });

  it("fails every read of HEAD with any byte flipped: the next run's inspectRepository, verify and restore name HEAD", async () => {
    const gaps: string[] = [];
    const key = catalog.head.key;
    await sweep(
      "HEAD",
      catalog.head,
      offsets(0, catalog.head.size),
      async () => [
        await refuses("inspectRepository", () => inspectRepository(g.repo), key),
        await verifyNames({}, key),
        await restoreCheck(undefined, undefined, key, true),
      ],
      gaps,
    );
    expectNoGaps(gaps);
  });

  it("fails every read of a commit record with any byte flipped: its generation is refused naming it, and the record of HEAD's generation stops the next run", async () => {
    const gaps: string[] = [];
    for (const [n, o] of catalog.records) {
      const isHead = n === catalog.headGeneration;
      await sweep(
        "commit record",
        o,
        offsets(0, o.size),
        async (i) => [
          isHead
            ? await refuses(`readCommitRecord(${n})`, () => readCommitRecord(g.repo, n), o.key)
            : undefined,
          // HEAD pins its own generation's manifest: that record is read by the next run's fence (and by
          // restore once HEAD has moved on), so the next run must refuse it and verify must report it.
          isHead ? await refuses("inspectRepository", () => inspectRepository(g.repo), o.key) : undefined,
          await verifyNames({ generation: n, volumeIds: [] }, o.key),
          !isHead || i % (2 * RESTORE_SAMPLE) === 0
            ? await restoreCheck(n, undefined, o.key, !isHead)
            : undefined,
        ],
        gaps,
      );
    }
    expectNoGaps(gaps);
  });

  it("fails every read of a generation manifest with any byte flipped, naming the manifest", async () => {
    const gaps: string[] = [];
    for (const [n, o] of catalog.manifests) {
      await sweep(
        "manifest",
        o,
        offsets(0, o.size),
        async () => [
          await verifyNames({ generation: n }, o.key),
          await restoreCheck(n, undefined, o.key, true),
        ],
        gaps,
      );
    }
    expectNoGaps(gaps);
  });

  it("fails every read of an index root version with any byte flipped, naming the root", async () => {
    const gaps: string[] = [];
    for (const o of catalog.roots) {
      await sweep(
        "index root",
        o,
        offsets(0, o.size),
        async (i) => {
          const u = o.uses[i % o.uses.length]!;
          return [
            await verifyNames(scope(u), o.key),
            await restoreCheck(u.generation, u.volumeId, o.key, true),
          ];
        },
        gaps,
      );
    }
    expectNoGaps(gaps);
  });

  it("fails every read of a block index run with a flipped byte (every directory and trailer byte, sampled pages)", async () => {
    const gaps: string[] = [];
    for (const o of catalog.indexRuns) {
      const meta = await runMetadataStart(o);
      await sweep(
        "block index run",
        o,
        [...offsets(0, meta, PAGE_STEP), ...offsets(meta, o.size)],
        async (i) => {
          const u = o.uses[i % o.uses.length]!;
          return [
            await verifyNames({ ...scope(u), readData: readDataFor(i) }, o.key),
            await restoreCheck(u.generation, u.volumeId, o.key, true),
          ];
        },
        gaps,
      );
    }
    expectNoGaps(gaps);
  });

  it("fails verify and the next backup's dedup of a dedup run with a flipped byte (every directory and trailer byte, sampled pages); restore still reads exactly", async () => {
    const gaps: string[] = [];
    for (const o of catalog.dedupRuns) {
      const meta = await runMetadataStart(o);
      await sweep(
        "dedup run",
        o,
        [...offsets(0, meta, PAGE_STEP), ...offsets(meta, o.size)],
        (i) => dedupChecks(o, o, i),
        gaps,
      );
    }
    expectNoGaps(gaps);
  });

  it("fails verify and the next backup's dedup of a Bloom filter with a flipped byte (every header byte, sampled bitset); restore still reads exactly", async () => {
    const gaps: string[] = [];
    for (const o of catalog.blooms) {
      const run = catalog.dedupRuns.find((r) => r.bloomKey === o.key)!;
      await sweep(
        "Bloom filter",
        o,
        [...offsets(0, BLOOM_HEAD), ...offsets(BLOOM_HEAD, o.size, PAGE_STEP)],
        (i) => dedupChecks(o, run, i),
        gaps,
      );
    }
    expectNoGaps(gaps);
  });

  it("fails every read of a segment whose footer or trailer has a flipped byte", async () => {
    const gaps: string[] = [];
    for (const s of catalog.segments) {
      const restoring: Use[] = [];
      const verifying: Use[] = [];
      for (const b of s.blocks) {
        for (const u of b.index) addUse(restoring, u);
        for (const u of [...b.index, ...b.dedup]) addUse(verifying, u);
      }
      // Restore stops at the damaged footer, after the blocks it read from other segments: most flips
      // are restored through the uses that read the fewest of those, every SAMPLE-th through each use.
      const cost = (u: Use) =>
        catalog.segments
          .filter((x) => x !== s)
          .flatMap((x) => x.blocks)
          .filter((b) => b.index.some((x) => useKey(x) === useKey(u))).length;
      const least = Math.min(...restoring.map(cost));
      const cheap = restoring.filter((u) => cost(u) === least);
      await sweep(
        "segment footer+trailer",
        s,
        offsets(s.dataLength, s.size),
        async (i) => {
          const u = i % SAMPLE === 0 ? restoring[(i / SAMPLE) % restoring.length]! : cheap[i % cheap.length]!;
          return [
            await verifyNames(
              { ...scope(verifying[i % verifying.length]!), readData: readDataFor(i) },
              s.key,
            ),
            await restoreCheck(u.generation, u.volumeId, s.key, true),
          ];
        },
        gaps,
      );
    }
    expectNoGaps(gaps);
  });

  it("fails every read of a block whose stored bytes have a flipped byte (sampled) unless the block still decodes to its content; never wrong bytes", async () => {
    const gaps: string[] = [];
    let benign = 0;
    for (const s of catalog.segments) {
      const body = (await g.store.get(s.key, { versionId: s.versionId })).body;
      const ats = new Set(offsets(0, s.dataLength, DATA_STEP));
      for (const b of s.blocks) for (const at of offsets(b.offset, b.offset + FRAME_HEAD)) ats.add(at);
      // The zstd frame descriptor's unused bit (RFC 8878 §3.1.1.1.1): its decoder ignores it.
      const unused = s.blocks
        .filter((b) => b.codec === Codec.zstd)
        .map((b) => ({ at: b.offset + 4, mask: 0x10 }));
      await sweep(
        "segment data",
        s,
        [...[...ats].sort((x, y) => x - y), ...unused],
        async (i, at, mask) => {
          const b = s.blocks.find((x) => at >= x.offset && at < x.offset + x.length)!;
          // Independently of restore: does the damaged block still decode to its content?
          const damaged = body.slice(b.offset, b.offset + b.length);
          damaged[at - b.offset] = damaged[at - b.offset]! ^ mask;
          let intact = false;
          try {
            const raw = decodeBlock(b.codec, damaged, BLOCK_SIZE);
            intact = raw.byteLength === BLOCK_SIZE && equalBytes(sha256(raw), b.sha256);
          } catch {
            // it does not decode: damage every read must see
          }
          if (intact) benign++;
          const out: Gap[] = [];
          const uses = [...b.index, ...b.dedup];
          const t = scope(uses[i % uses.length]!);
          if (intact) {
            const r = await verifyGeneration(g.repo, { ...t, readData: 1 });
            if (!r.ok) out.push(`verify reports a block that decodes intact: ${JSON.stringify(r.problems)}`);
          } else {
            out.push(await verifyNames(t, s.key));
          }
          const u = b.index[i % b.index.length];
          if (u) out.push(await restoreCheck(u.generation, u.volumeId, s.key, !intact));
          return out;
        },
        gaps,
      );
    }
    const c = counts.get("segment data")!;
    c.note = `${benign} still decode to the block's content`;
    expectNoGaps(gaps);
  });

  it("fails the next backup, naming the run, when a block it stores is in a damaged page of a committed dedup run; HEAD and every generation stay intact", async () => {
    const next = memGroup({ volumes: VOLUMES, from: g });
    const run = catalog.dedupRuns.find((r) =>
      r.lookups.some((l) => equalBytes(l.hash, sha256(blockBytes("a0")))),
    )!;
    expect(run.lookups.length).toBeGreaterThan(0); // HEAD reaches it: GroupDedup consults it
    next.store.corrupt(run.key, (b) => {
      b[20] = b[20]! ^ 0x01; // inside the first page
      return b;
    });
    next.ebs.write("vol-b", 1, "a0"); // content vol-a stores: Transfer looks it up in that page
    const outcome = await runPipeline(next.deps(), next.config, "run-4");
    expect(outcome.outcome).toBe("reverted");
    expect(JSON.stringify(outcome)).toContain(run.key);
    expect((await readHead(next.repo))?.head.generation).toBe(3);
    for (let n = 1; n <= 3; n++) expect(await readMatches(next, n)).toEqual([]);
    const report = await verifyGeneration(next.repo, { readData: 1 });
    expect(report.problems.map((p) => p.key)).toEqual([run.key]);
  });
});
