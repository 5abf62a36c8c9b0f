/**
 * The objects that say what is committed (docs/format.md §5–§6): HEAD (the only mutable pointer, and
 * the fence), commit records (one per committed generation) and generation manifests. Readers reach a
 * generation only through what HEAD or a commit record pins: a key, a SHA-256 and a version id.
 */
import { z } from "zod";
import { CorruptObjectError, GenerationNotFoundError } from "../errors.ts";
import { ObjectNotFoundError, type ObjectStore } from "../ports/object-store.ts";
import { generationName, keys, parseManifestName, type Repo } from "./layout.ts";
import { encodeMetadata, openMetadata, Sha256Hex, sealMetadata } from "./metadata.ts";

/** Where an immutable metadata object is: its key (relative to the repository), SHA-256 and version. */
export const PointerSchema = z.object({
  /** Relative to the repository prefix (docs/format.md §2). */
  key: z.string().min(1),
  /** Authoritative: the object's sealed SHA-256 (metadata.ts). */
  sha256: Sha256Hex,
  /** Where the object was written; a locator only (a copy that changed version ids is found by SHA-256). */
  versionId: z.string().nullable(),
});
export type Pointer = z.infer<typeof PointerSchema>;

const VolumeStatsSchema = z
  .object({
    changedBlocks: z.number().int().nonnegative(),
    storedBlocks: z.number().int().nonnegative(),
    zeroBlocks: z.number().int().nonnegative(),
    dedupedBlocks: z.number().int().nonnegative(),
    storedBytes: z.number().int().nonnegative(),
    indexBytesWritten: z.number().int().nonnegative(),
  })
  .partial()
  .loose();

const ManifestVolumeSchema = z.object({
  volumeId: z.string(),
  /** Authoritative volume size (the index root repeats it; readers cross-check). */
  sizeBytes: z.number().int().nonnegative(),
  sourceSnapshotId: z.string().nullable(),
  /** The version of `volumes/<volumeId>/index` this generation uses: pinned by SHA-256. */
  index: z.object({ versionId: z.string().nullable(), sha256: Sha256Hex }),
  stats: VolumeStatsSchema,
});
export type ManifestVolume = z.infer<typeof ManifestVolumeSchema>;

const ManifestSchema = z.object({
  group: z.string(),
  generation: z.number().int().positive(),
  /** The generation this one was committed on top of (its manifest's SHA-256), null for the first. */
  previous: z.object({ generation: z.number().int().positive(), sha256: Sha256Hex }).nullable(),
  runId: z.string(),
  /** The fencing number of the run that wrote it (part of its key). */
  fencing: z.number().int().positive(),
  pointInTime: z.string(),
  /** When the manifest was written, just before HEAD moved. */
  createdAt: z.string(),
  volumes: z.array(ManifestVolumeSchema),
  stats: z
    .object({
      coordinationMs: z.number().nonnegative(),
      durationMs: z.number().nonnegative(),
    })
    .partial()
    .loose(),
});
export type GenerationManifest = z.infer<typeof ManifestSchema>;

const CommitSchema = z.object({
  /** The generation's manifest. */
  manifest: PointerSchema,
  runId: z.string(),
  /** Fencing number of the committing run. */
  fencing: z.number().int().positive(),
  committedAt: z.string(),
});
export type CommitInfo = z.infer<typeof CommitSchema>;

const FenceSchema = z.object({
  /** The fencing number of the run that holds the group now (strictly increasing). */
  fencing: z.number().int().positive(),
  runId: z.string(),
  at: z.string(),
});
export type Fence = z.infer<typeof FenceSchema>;

const HeadSchema = z.object({
  group: z.string(),
  /** The committed generation; 0 before the first commit. */
  generation: z.number().int().nonnegative(),
  /** What committed `generation` (null while it is 0). */
  commit: CommitSchema.nullable(),
  /** The newest run that took the group: a stale run's conditional write of HEAD fails. */
  fence: FenceSchema,
});
export type Head = z.infer<typeof HeadSchema>;

const CommitRecordSchema = CommitSchema.extend({
  group: z.string(),
  generation: z.number().int().positive(),
});
export type CommitRecord = z.infer<typeof CommitRecordSchema>;

export interface HeadState {
  readonly head: Head;
  readonly etag: string;
  readonly versionId: string | undefined;
}

export function encodeHead(body: Head): Uint8Array {
  return encodeMetadata("cgmirror.head", body);
}

export function sealManifest(body: GenerationManifest): { bytes: Uint8Array; sha256: string } {
  return sealMetadata("cgmirror.generation", body);
}

export function sealCommitRecord(body: CommitRecord): { bytes: Uint8Array; sha256: string } {
  return sealMetadata("cgmirror.commit", body);
}

/** Checks a HEAD's fields against each other and the repository. */
function checkHead(repo: Repo, head: Head, key: string, versionId: string | undefined): void {
  const bad = (detail: string) => new CorruptObjectError(key, versionId, detail);
  if (head.group !== repo.group) throw bad(`it belongs to group ${head.group}, not ${repo.group}`);
  if ((head.generation === 0) !== (head.commit === null)) {
    throw bad(`generation ${head.generation} and its commit do not agree`);
  }
  if (head.commit) {
    const expected = keys.relative(repo, keys.manifest(repo, head.generation, head.commit.fencing));
    if (head.commit.manifest.key !== expected) {
      throw bad(
        `it names manifest ${head.commit.manifest.key} for generation ${head.generation} (expected ${expected})`,
      );
    }
  }
}

/** The repository's HEAD, or undefined when there is no current HEAD object (absent or delete-marked). */
export async function readHead(repo: Repo): Promise<HeadState | undefined> {
  const key = keys.head(repo);
  let got: Awaited<ReturnType<ObjectStore["get"]>>;
  try {
    got = await repo.store.get(key);
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return undefined;
    throw error;
  }
  const head = openMetadata(got.body, "cgmirror.head", HeadSchema, key, got.versionId).value;
  checkHead(repo, head, key, got.versionId);
  return { head, etag: got.etag, versionId: got.versionId };
}

/** Decodes one stored version of HEAD (repair reads HEAD's history). */
export function decodeHead(repo: Repo, bytes: Uint8Array, versionId?: string): Head {
  const key = keys.head(repo);
  const head = openMetadata(bytes, "cgmirror.head", HeadSchema, key, versionId).value;
  checkHead(repo, head, key, versionId);
  return head;
}

/**
 * Reads one exact version of an object a pointer pins: by version id, and when that version is gone
 * or is not the pinned bytes, by SHA-256 among the key's versions (a copy that changed version ids).
 * `open` checks the bytes against the pin and throws when they are not it.
 */
export async function getPinned<T>(
  store: ObjectStore,
  key: string,
  versionId: string | null | undefined,
  open: (body: Uint8Array, versionId: string | undefined) => T,
): Promise<{ value: T; versionId: string | undefined; etag: string }> {
  let first: unknown;
  if (versionId) {
    try {
      const got = await store.get(key, { versionId });
      return { value: open(got.body, got.versionId), versionId: got.versionId, etag: got.etag };
    } catch (error) {
      if (!(error instanceof ObjectNotFoundError) && !(error instanceof CorruptObjectError)) throw error;
      first = error;
    }
  }
  for await (const v of store.listVersions(key)) {
    if (v.key !== key || v.isDeleteMarker || v.versionId === versionId) continue;
    try {
      const got = await store.get(key, { versionId: v.versionId });
      return { value: open(got.body, got.versionId), versionId: got.versionId, etag: got.etag };
    } catch (error) {
      if (!(error instanceof ObjectNotFoundError) && !(error instanceof CorruptObjectError)) throw error;
      first ??= error;
    }
  }
  throw first ?? new ObjectNotFoundError(key, versionId ?? undefined);
}

/** Opens a manifest's bytes (seal, and the pinned SHA-256 when given); returns it and its SHA-256. */
export function openManifest(
  bytes: Uint8Array,
  key: string,
  versionId: string | undefined,
  expectedSha256?: string,
): { value: GenerationManifest; sha256: string } {
  return openMetadata(bytes, "cgmirror.generation", ManifestSchema, key, versionId, expectedSha256);
}

/** Reads the manifest a pointer pins and checks it describes `generation` of this group. */
export async function readPinnedManifest(
  repo: Repo,
  pointer: Pointer,
  generation: number,
  from: string,
): Promise<GenerationManifest> {
  const key = keys.resolve(repo, pointer.key, from);
  const { value } = await getPinned(repo.store, key, pointer.versionId, (body, versionId) => {
    const m = openManifest(body, key, versionId, pointer.sha256).value;
    const name = parseManifestName(key.slice(keys.generationsPrefix(repo).length));
    if (m.generation !== generation || m.group !== repo.group || name?.fencing !== m.fencing) {
      throw new CorruptObjectError(
        key,
        versionId,
        `it describes generation ${m.generation} of group ${m.group} (fencing ${m.fencing}); ${from} expects generation ${generation} of ${repo.group}`,
      );
    }
    return m;
  });
  return value;
}

/** The manifest HEAD names (the committed generation), or undefined before the first commit. */
export async function readCommittedManifest(repo: Repo): Promise<GenerationManifest | undefined> {
  const state = await readHead(repo);
  if (!state?.head.commit) return undefined;
  return readPinnedManifest(repo, state.head.commit.manifest, state.head.generation, keys.head(repo));
}

/** A committed generation's record, or undefined when there is none (never written, or pruned). */
export async function readCommitRecord(repo: Repo, generation: number): Promise<CommitRecord | undefined> {
  const key = keys.commit(repo, generation);
  let got: Awaited<ReturnType<ObjectStore["get"]>>;
  try {
    got = await repo.store.get(key);
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return undefined;
    throw error;
  }
  const record = openMetadata(got.body, "cgmirror.commit", CommitRecordSchema, key, got.versionId).value;
  const expected = keys.relative(repo, keys.manifest(repo, generation, record.fencing));
  if (record.generation !== generation || record.group !== repo.group || record.manifest.key !== expected) {
    throw new CorruptObjectError(
      key,
      got.versionId,
      `it records generation ${record.generation} of ${record.group} with manifest ${record.manifest.key}`,
    );
  }
  return record;
}

/** Generation numbers that have a commit record, ascending (optionally only those after `after`). */
export async function listCommitRecords(repo: Repo, after?: number): Promise<number[]> {
  const prefix = keys.commitsPrefix(repo);
  const out: number[] = [];
  const startAfter = after !== undefined && after > 0 ? keys.commit(repo, after) : undefined;
  for await (const o of repo.store.list(prefix, startAfter ? { startAfter } : {})) {
    const m = /^(\d{10})\.json$/.exec(o.key.slice(prefix.length));
    if (m) out.push(Number(m[1]));
  }
  return out.sort((a, b) => a - b);
}

/** Every committed generation still recorded (commit records and HEAD's), ascending. */
export async function listGenerations(repo: Repo): Promise<number[]> {
  const [head, records] = await Promise.all([readHead(repo), listCommitRecords(repo)]);
  const all = new Set(records);
  if (head && head.head.generation > 0) all.add(head.head.generation);
  return [...all].sort((a, b) => a - b);
}

/**
 * The manifest of a committed generation: through HEAD when it is HEAD's, else through its commit
 * record. Never by listing manifests (a run that died before moving HEAD leaves one that was never
 * committed).
 * @throws GenerationNotFoundError naming the generations that exist
 */
export async function readGeneration(repo: Repo, generation: number): Promise<GenerationManifest> {
  const state = await readHead(repo);
  if (state?.head.commit && state.head.generation === generation) {
    return readPinnedManifest(repo, state.head.commit.manifest, generation, keys.head(repo));
  }
  const record = await readCommitRecord(repo, generation);
  if (record) return readPinnedManifest(repo, record.manifest, generation, keys.commit(repo, generation));
  throw new GenerationNotFoundError(repo.group, generation, await listGenerations(repo));
}

/** `generations/<n>-` key prefix of one generation's manifests (one per run that prepared it). */
export function manifestPrefixOf(repo: Repo, generation: number): string {
  return `${keys.generationsPrefix(repo)}${generationName(generation)}-`;
}
