/**
 * Fixed-input index runs and dedup runs whose on-bucket bytes are committed under
 * test/fixtures/runs/ (test/unit/format-run-fixtures.test.ts compares today's writer against them and
 * reads them back). The bytes were written by the code before the columnar page codec was shared
 * (core/format/columnar-run.ts); a change that alters one byte of a run fails that test.
 *
 * Regenerate only on a deliberate format change: `node test/support/run-fixtures.ts --write`
 * then `npx biome format --write test/fixtures/runs`.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import type { BlockRef, IndexEntry } from "#core/format/block-ref.ts";
import { sha256, toHex } from "#core/format/bytes.ts";
import { Codec, type CodecId } from "#core/format/codec.ts";
import { compareKeys, HashRunWriter } from "#core/format/hash-run.ts";
import { IndexRunWriter, type IndexRunWriterOptions } from "#core/format/index-run.ts";
import type {
  MultipartUpload,
  MultipartUploadOptions,
  PutOptions,
  PutResult,
} from "#core/ports/object-store.ts";

export const FIXTURE_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "runs");

/** One store call a writer made, as the fixture manifest records it. */
export type RecordedCall =
  | {
      readonly op: "put";
      readonly bytes: number;
      readonly metadata: Record<string, string>;
      readonly checksum: boolean;
    }
  | { readonly op: "multipart"; readonly parts: number[]; readonly metadata: Record<string, string> };

/**
 * A memory store that records how a run reached it (one PUT, or a multipart upload with its part
 * sizes) and accepts parts below S3's 5 MiB minimum, so small fixtures can exercise the multipart path.
 */
export class RecordingStore extends MemoryObjectStore {
  readonly calls: RecordedCall[] = [];

  override async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    this.calls.push({
      op: "put",
      bytes: body.byteLength,
      metadata: { ...options.metadata },
      checksum: options.checksumSha256 !== undefined && toHex(options.checksumSha256) === toHex(sha256(body)),
    });
    return super.put(key, body, options);
  }

  override async createMultipartUpload(
    key: string,
    options: MultipartUploadOptions = {},
  ): Promise<MultipartUpload> {
    const parts = new Map<number, Uint8Array>();
    return {
      key,
      uploadPart: async (n, body) => {
        parts.set(n, new Uint8Array(body));
      },
      complete: async () => {
        const numbers = [...parts.keys()].sort((a, b) => a - b);
        const list = numbers.map((n) => parts.get(n)!);
        this.calls.push({
          op: "multipart",
          parts: list.map((p) => p.byteLength),
          metadata: { ...options.metadata },
        });
        return super.put(key, Buffer.concat(list), options.metadata ? { metadata: options.metadata } : {});
      },
      abort: async () => {
        parts.clear();
      },
    };
  }
}

/** mulberry32: a tiny seeded generator, so the inputs are the same on every machine. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bytes32(next: () => number): Uint8Array {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = Math.floor(next() * 256);
  return out;
}

const STORED_CODECS: readonly CodecId[] = [Codec.raw, Codec.zstd, Codec.brotli, Codec.gzip];

function segmentId(n: number): string {
  return n.toString(16).padStart(32, "0");
}

/** Strictly ascending blocks with gaps; about one in five is a zero ref. */
export function indexEntries(seed: number, count: number, segments: number): IndexEntry[] {
  const next = prng(seed);
  const out: IndexEntry[] = [];
  let block = Math.floor(next() * 100);
  for (let i = 0; i < count; i++) {
    const hash = bytes32(next);
    const ref: BlockRef =
      next() < 0.2
        ? { segment: null, offset: 0, length: 0, codec: Codec.zero, sha256: hash }
        : {
            segment: segmentId(segments <= 0 ? i : Math.floor(next() * segments)),
            offset: Math.floor(next() * 0xffffffff),
            length: 1 + Math.floor(next() * 524_288),
            codec: STORED_CODECS[Math.floor(next() * STORED_CODECS.length)]!,
            sha256: hash,
          };
    out.push({ block, ref });
    block += 1 + Math.floor(next() * 5);
  }
  const last = out.at(-1);
  if (last && last.block > 0xffffffff) throw new Error("fixture blocks overflow u32");
  return out;
}

/** Distinct hashes in ascending order, each with a stored ref (`segments` 0: a new segment per entry). */
export function dedupEntries(
  seed: number,
  count: number,
  segments: number,
): { hash: Uint8Array; ref: BlockRef }[] {
  const next = prng(seed);
  const hashes: Uint8Array[] = [];
  for (let i = 0; i < count; i++) hashes.push(bytes32(next));
  hashes.sort(compareKeys);
  const unique = hashes.filter((h, i) => i === 0 || compareKeys(hashes[i - 1]!, h) !== 0);
  return unique.map((hash, i) => ({
    hash,
    ref: {
      segment: segmentId(segments <= 0 ? i : Math.floor(next() * segments)),
      offset: Math.floor(next() * 0xffffffff),
      length: 1 + Math.floor(next() * 524_288),
      codec: STORED_CODECS[Math.floor(next() * STORED_CODECS.length)]!,
      sha256: hash,
    },
  }));
}

export interface RunFixtureCase {
  readonly name: string;
  readonly kind: "index" | "dedup";
  /** "bytes": the whole object is committed (and read back); "sha256": too large, only its digest. */
  readonly keep: "bytes" | "sha256";
  readonly seed: number;
  readonly count: number;
  /** How many distinct segments the refs draw from; 0: a new segment for every entry. */
  readonly segments: number;
  readonly pageEntries?: number;
  readonly partBytes?: number;
  readonly metadata?: Readonly<Record<string, string>>;
}

export const RUN_FIXTURE_CASES: readonly RunFixtureCase[] = [
  { name: "index-empty", kind: "index", keep: "bytes", seed: 1, count: 0, segments: 1 },
  { name: "index-one-page", kind: "index", keep: "bytes", seed: 2, count: 40, segments: 3 },
  {
    name: "index-pages-multipart",
    kind: "index",
    keep: "bytes",
    seed: 3,
    count: 700,
    segments: 9,
    pageEntries: 64,
    partBytes: 5000,
    metadata: { "cgmirror-volume": "vol-0fixture" },
  },
  { name: "index-page-of-one", kind: "index", keep: "bytes", seed: 4, count: 5, segments: 2, pageEntries: 1 },
  // 65,534 distinct segments fill a page's segment table: the page closes early.
  {
    name: "index-segment-table-full",
    kind: "index",
    keep: "sha256",
    seed: 5,
    count: 90_000,
    segments: 0,
    pageEntries: 1_000_000,
  },
  { name: "dedup-empty", kind: "dedup", keep: "bytes", seed: 11, count: 0, segments: 1 },
  { name: "dedup-one-page", kind: "dedup", keep: "bytes", seed: 12, count: 40, segments: 3 },
  {
    name: "dedup-pages-multipart",
    kind: "dedup",
    keep: "bytes",
    seed: 13,
    count: 500,
    segments: 7,
    pageEntries: 32,
    partBytes: 3000,
  },
  {
    name: "dedup-page-of-one",
    kind: "dedup",
    keep: "bytes",
    seed: 14,
    count: 5,
    segments: 2,
    pageEntries: 1,
  },
  {
    name: "dedup-segment-table-full",
    kind: "dedup",
    keep: "sha256",
    seed: 15,
    count: 70_000,
    segments: 0,
    pageEntries: 100_000,
  },
];

export interface WrittenRun {
  readonly bytes: Uint8Array;
  readonly info: Record<string, string | number>;
  readonly calls: RecordedCall[];
}

export const fixtureKey = (c: RunFixtureCase): string =>
  `fixture/${c.name}.${c.kind === "index" ? "run" : "dedup"}`;

/** Writes one case with today's writers into a recording store and returns what reached the store. */
export async function writeFixtureRun(c: RunFixtureCase): Promise<WrittenRun> {
  const store = new RecordingStore();
  const key = fixtureKey(c);
  let info: Record<string, string | number>;
  if (c.kind === "index") {
    const options: IndexRunWriterOptions = {
      ...(c.pageEntries ? { pageEntries: c.pageEntries } : {}),
      ...(c.partBytes ? { partBytes: c.partBytes } : {}),
      ...(c.metadata ? { metadata: c.metadata } : {}),
    };
    const w = new IndexRunWriter(store, key, options);
    for (const e of indexEntries(c.seed, c.count, c.segments)) await w.append(e.block, e.ref);
    info = { ...(await w.finish()) };
  } else {
    const w = new HashRunWriter(store, key, {
      ...(c.pageEntries ? { pageEntries: c.pageEntries } : {}),
      ...(c.partBytes ? { partBytes: c.partBytes } : {}),
    });
    for (const e of dedupEntries(c.seed, c.count, c.segments)) await w.append(e.hash, e.ref);
    info = { ...(await w.finish()) };
  }
  const bytes = (await store.get(key)).body;
  return { bytes, info, calls: store.calls };
}

export interface FixtureManifestEntry {
  readonly sha256: string;
  readonly bytes: number;
  readonly info: Record<string, string | number>;
  readonly calls: RecordedCall[];
  readonly file?: string;
}

async function writeFixtures(): Promise<void> {
  mkdirSync(FIXTURE_DIR, { recursive: true });
  const manifest: Record<string, FixtureManifestEntry> = {};
  for (const c of RUN_FIXTURE_CASES) {
    const run = await writeFixtureRun(c);
    const file = c.keep === "bytes" ? `${c.name}.bin` : undefined;
    if (file) writeFileSync(join(FIXTURE_DIR, file), run.bytes);
    manifest[c.name] = {
      sha256: toHex(sha256(run.bytes)),
      bytes: run.bytes.byteLength,
      info: run.info,
      calls: run.calls,
      ...(file ? { file } : {}),
    };
  }
  writeFileSync(join(FIXTURE_DIR, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  console.log(`wrote ${RUN_FIXTURE_CASES.length} run fixtures to ${FIXTURE_DIR}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv.includes("--write")) {
  await writeFixtures();
}
