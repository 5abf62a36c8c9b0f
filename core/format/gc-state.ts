/**
 * What garbage collection leaves behind for readers and writers (docs/format.md §10.2):
 *
 * - **Retired segments** (`gc/retired-segments`): segment ids that prune deleted or repacked and that
 *   some retained generation's dedup runs still name. A backup never dedups against a retired segment
 *   (GroupDedup skips it), Prepare drops it from the dedup runs it merges, and verify does not count a
 *   dedup ref into it as damage. Written by a fenced prune with If-Match, always *before* the segments
 *   it lists are deleted.
 * - **Relocation records** (`segments/<xx>/<id>.moved`): when prune repacks a mostly-garbage segment,
 *   the blocks retained generations still use are copied into a new segment and the old segment's
 *   record maps each of them (offset, length, codec, SHA-256) to its new place. Index runs keep naming
 *   the old segment; a reader that does not find `<id>.seg` reads `<id>.moved` and follows it (one
 *   hop: records always point at segments that prune wrote and that no index run names).
 */
import { z } from "zod";
import { CorruptObjectError, UnsupportedFormatError } from "../errors.ts";
import { ObjectNotFoundError } from "../ports/object-store.ts";
import { sha256, toHex } from "./bytes.ts";
import { keys, type Repo } from "./layout.ts";
import { decodeMetadata, encodeMetadata, Sha256Hex } from "./metadata.ts";

const SEGMENT_ID = /^[0-9a-f]{32}$/;
const RETIRED_MAGIC = new TextEncoder().encode("CGMRETIR");
const RETIRED_HEAD = 16;

/** The key of the retired-segment set. */
export function retiredSegmentsKey(repo: Repo): string {
  return repo.prefix === "" ? "gc/retired-segments" : `${repo.prefix}/gc/retired-segments`;
}

/** The key of a segment's relocation record (next to where the segment was). */
export function relocationKey(repo: Repo, segmentId: string): string {
  return keys.segment(repo, segmentId).replace(/\.seg$/, ".moved");
}

/**
 * Segment ids that dedup must not use any more, each with HEAD's generation when it was retired: a
 * dedup run written by a later generation cannot name it (backups skip retired segments and Prepare
 * leaves them out of merges), which is how prune knows when an id may leave the set again.
 */
export class RetiredSegments {
  readonly #ids: ReadonlyMap<string, number>;

  constructor(entries: Iterable<readonly [string, number]> = []) {
    this.#ids = new Map(entries);
  }

  has(segmentId: string | null): boolean {
    return segmentId !== null && this.#ids.has(segmentId);
  }

  /** HEAD's generation when the segment was retired. */
  retiredAt(segmentId: string): number | undefined {
    return this.#ids.get(segmentId);
  }

  get size(): number {
    return this.#ids.size;
  }

  /** [id, retiredAt] ascending by id. */
  entries(): Array<[string, number]> {
    return [...this.#ids].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }
}

const RETIRED_ENTRY = 20;

/**
 * Binary encoding: magic `CGMRETIR`, u16 major (2), u16 minor (0), u32 count, then per segment in
 * ascending id order its 16-byte id and u32 retiredAt (HEAD's generation when retired), then the
 * SHA-256 of everything before it.
 */
export function encodeRetiredSegments(entries: Iterable<readonly [string, number]>): Uint8Array {
  const sorted = new RetiredSegments(entries).entries();
  const out = new Uint8Array(RETIRED_HEAD + sorted.length * RETIRED_ENTRY + 32);
  const dv = new DataView(out.buffer);
  out.set(RETIRED_MAGIC, 0);
  dv.setUint16(8, 2, true);
  dv.setUint16(10, 0, true);
  dv.setUint32(12, sorted.length, true);
  sorted.forEach(([id, at], i) => {
    if (!SEGMENT_ID.test(id)) throw new TypeError(`expected a 32-hex-digit segment id, got ${id}`);
    out.set(Buffer.from(id, "hex"), RETIRED_HEAD + i * RETIRED_ENTRY);
    dv.setUint32(RETIRED_HEAD + i * RETIRED_ENTRY + 16, at, true);
  });
  const end = RETIRED_HEAD + sorted.length * RETIRED_ENTRY;
  out.set(sha256(out.subarray(0, end)), end);
  return out;
}

export function decodeRetiredSegments(bytes: Uint8Array, key: string, versionId?: string): RetiredSegments {
  const bad = (detail: string) => new CorruptObjectError(key, versionId, detail);
  if (bytes.byteLength < RETIRED_HEAD + 32 || !Buffer.from(bytes.subarray(0, 8)).equals(RETIRED_MAGIC)) {
    throw bad("it is not a retired-segment set (magic CGMRETIR)");
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = dv.getUint16(8, true);
  if (major !== 2) {
    throw new UnsupportedFormatError(key, `retired-segments ${major}.${dv.getUint16(10, true)}`, "2.x");
  }
  const count = dv.getUint32(12, true);
  const end = RETIRED_HEAD + count * RETIRED_ENTRY;
  if (bytes.byteLength !== end + 32) throw bad(`its length does not match ${count} ids`);
  if (toHex(sha256(bytes.subarray(0, end))) !== toHex(bytes.subarray(end))) {
    throw bad("it fails its SHA-256 check");
  }
  const entries: Array<[string, number]> = [];
  for (let i = 0; i < count; i++) {
    const at = RETIRED_HEAD + i * RETIRED_ENTRY;
    const id = toHex(bytes.subarray(at, at + 16));
    if (i > 0 && id <= entries[i - 1]![0]) throw bad("its ids are not strictly ascending");
    entries.push([id, dv.getUint32(at + 16, true)]);
  }
  return new RetiredSegments(entries);
}

/** The retired-segment set and the ETag it was read at (undefined when there is none yet). */
export async function readRetiredSegments(
  repo: Repo,
): Promise<{ retired: RetiredSegments; etag: string | undefined }> {
  const key = retiredSegmentsKey(repo);
  try {
    const got = await repo.store.get(key);
    return { retired: decodeRetiredSegments(got.body, key, got.versionId), etag: got.etag };
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return { retired: new RetiredSegments(), etag: undefined };
    throw error;
  }
}

/** An identity of the current retired set (its ETag, or "none"): a cache of GroupDedup keys on it. */
export async function retiredSegmentsVersion(repo: Repo): Promise<string> {
  return (await repo.store.head(retiredSegmentsKey(repo)))?.etag ?? "none";
}

/**
 * Writes the retired set conditionally on the ETag it was read at (`undefined`: it must not exist).
 * @throws PreconditionFailedError (core/ports/object-store.ts) when another writer changed it meanwhile
 */
export async function writeRetiredSegments(
  repo: Repo,
  entries: Iterable<readonly [string, number]>,
  readAt: string | undefined,
): Promise<string> {
  const key = retiredSegmentsKey(repo);
  const put = await repo.store.put(key, encodeRetiredSegments(entries), {
    ...(readAt === undefined ? { ifNoneMatch: "*" as const } : { ifMatch: readAt }),
    contentType: "application/octet-stream",
    metadata: { "cgmirror-kind": "retired-segments" },
  });
  return put.etag;
}

// ------------------------------------------------------------------------------ relocation records

const RelocatedBlockSchema = z.object({
  /** Where the block was in the old segment (what index runs name). */
  offset: z.number().int().nonnegative(),
  length: z.number().int().positive(),
  codec: z.number().int().min(0).max(254),
  sha256: Sha256Hex,
  /** The segment that holds it now. */
  segment: z.string().regex(SEGMENT_ID),
  /** Its offset there. */
  at: z.number().int().nonnegative(),
});
export type RelocatedBlock = z.infer<typeof RelocatedBlockSchema>;

const RelocationSchema = z.object({
  segmentId: z.string().regex(SEGMENT_ID),
  /** The prune run that wrote this version, and its fencing number. */
  runId: z.string(),
  fencing: z.number().int().positive(),
  blocks: z.array(RelocatedBlockSchema),
});
export type Relocation = z.infer<typeof RelocationSchema>;

export function encodeRelocation(record: Relocation): Uint8Array {
  return encodeMetadata("cgmirror.relocation", record);
}

/** Reads a segment's relocation record (current version), or undefined when it has none. */
export async function readRelocation(
  repo: Repo,
  segmentId: string,
): Promise<{ record: Relocation; etag: string } | undefined> {
  const key = relocationKey(repo, segmentId);
  let got: Awaited<ReturnType<Repo["store"]["get"]>>;
  try {
    got = await repo.store.get(key);
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return undefined;
    throw error;
  }
  const record = decodeMetadata(got.body, "cgmirror.relocation", RelocationSchema, key, got.versionId);
  if (record.segmentId !== segmentId) {
    throw new CorruptObjectError(key, got.versionId, `it relocates segment ${record.segmentId}`);
  }
  return { record, etag: got.etag };
}

/**
 * Writes a relocation record: create-only when `readAt` is undefined, else If-Match on the ETag read.
 * @throws PreconditionFailedError when another writer changed it meanwhile
 */
export async function writeRelocation(
  repo: Repo,
  record: Relocation,
  readAt: string | undefined,
): Promise<string> {
  const put = await repo.store.put(relocationKey(repo, record.segmentId), encodeRelocation(record), {
    ...(readAt === undefined ? { ifNoneMatch: "*" as const } : { ifMatch: readAt }),
    contentType: "application/json",
  });
  return put.etag;
}
