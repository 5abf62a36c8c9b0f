import { z } from "zod";
import { CorruptObjectError } from "./errors.ts";
import { keys, type Repo } from "./layout.ts";
import { decodeMetadata, encodeMetadata } from "./metadata.ts";
import { ObjectNotFoundError } from "./ports/object-store.ts";

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
  sizeBytes: z.number().int().nonnegative(),
  sourceSnapshotId: z.string().nullable(),
  indexKey: z.string(),
  indexVersionId: z.string().nullable(),
  stats: VolumeStatsSchema,
});
export type ManifestVolume = z.infer<typeof ManifestVolumeSchema>;

const ManifestSchema = z.object({
  format: z.literal("cgmirror.generation"),
  version: z.string(),
  group: z.string(),
  generation: z.number().int().positive(),
  previousGeneration: z.number().int().positive().nullable(),
  runId: z.string(),
  fencing: z.number().int().nonnegative().nullable(),
  pointInTime: z.string(),
  committedAt: z.string(),
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

const HeadSchema = z.object({
  format: z.literal("cgmirror.head"),
  version: z.string(),
  group: z.string(),
  generation: z.number().int().positive(),
  manifestKey: z.string(),
  manifestVersionId: z.string().nullable(),
  runId: z.string(),
  committedAt: z.string(),
});
export type Head = z.infer<typeof HeadSchema>;

export interface HeadState {
  readonly head: Head;
  readonly etag: string;
  readonly versionId: string | undefined;
}

/** The committed HEAD, or undefined for an empty repository. */
export async function readHead(repo: Repo): Promise<HeadState | undefined> {
  const key = keys.head(repo);
  try {
    const got = await repo.store.get(key);
    const head = decodeMetadata(got.body, "cgmirror.head", HeadSchema, key, got.versionId);
    return { head, etag: got.etag, versionId: got.versionId };
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return undefined;
    throw error;
  }
}

export function encodeHead(body: Omit<Head, "format" | "version">): Uint8Array {
  return encodeMetadata("cgmirror.head", body);
}

export function encodeManifest(body: Omit<GenerationManifest, "format" | "version">): Uint8Array {
  return encodeMetadata("cgmirror.generation", body);
}

export function decodeManifest(bytes: Uint8Array, key: string, versionId?: string): GenerationManifest {
  return decodeMetadata(bytes, "cgmirror.generation", ManifestSchema, key, versionId);
}

/** Reads a generation manifest (optionally an exact version, as HEAD names it). */
export async function readManifest(
  repo: Repo,
  generation: number,
  versionId?: string,
): Promise<GenerationManifest> {
  const key = keys.generation(repo, generation);
  const got = await repo.store.get(key, versionId ? { versionId } : {});
  const manifest = decodeManifest(got.body, key, got.versionId);
  if (manifest.generation !== generation) {
    throw new CorruptObjectError(key, got.versionId, `it describes generation ${manifest.generation}`);
  }
  return manifest;
}

/** The manifest HEAD names (the committed generation), or undefined for an empty repository. */
export async function readCommittedManifest(repo: Repo): Promise<GenerationManifest | undefined> {
  const state = await readHead(repo);
  if (!state) return undefined;
  return readManifest(repo, state.head.generation, state.head.manifestVersionId ?? undefined);
}

/** Generation numbers that have a manifest, ascending (committed or retained; see HEAD for current). */
export async function listGenerations(repo: Repo): Promise<number[]> {
  const prefix = keys.generationsPrefix(repo);
  const out: number[] = [];
  for await (const o of repo.store.list(prefix)) {
    const m = /^(\d{10})\.json$/.exec(o.key.slice(prefix.length));
    if (m) out.push(Number(m[1]));
  }
  return out.sort((a, b) => a - b);
}
