/**
 * The segments a run wrote, found from its own records, and their deletion when the run is reverted
 * (Revert) or taken over uncommitted (Recover). docs/operations.md, "Reverted runs and their segments".
 *
 * Where a run's segments are recorded (all under `runs/<runId>/`, so this must run before the run's
 * transient files are deleted):
 * - shard summaries `shards/<volume>/<shard>.done.json` (sealed `cgmirror.shard-result`: `segments`),
 * - shard result runs `shards/<volume>/<shard>-<attempt>.run` of attempts that got that far (index
 *   runs: their pages' segment tables), read only when no summary names them,
 * - Transfer checkpoints `checkpoints/…json` (sealed `cgmirror.transfer-checkpoint`: `segments:
 *   [{segmentId, key}]`) and the partial result runs `checkpoints/….run` they pin.
 * A record that fails its check (seal, shape, a key that is not its segment id's) is not trusted:
 * the segments it names are left alone, for prune. Never delete on an ambiguous state.
 *
 * Those records also name segments the run did NOT write (blocks it deduplicated against committed
 * data). A segment is deleted only when its object's metadata names the run (`cgmirror-run-id`,
 * written by the Transfer that uploaded it: core/format/segment.ts): a segment written by another run, or
 * before this metadata existed, is kept. The caller guarantees that no committed generation can
 * reference a segment the run wrote (core/protocol/commit.ts: the run did not commit, and no run that fenced
 * after it committed).
 *
 * What escapes: segments of an attempt that died before recording them (no checkpoint or result yet)
 * and segments a zombie Transfer uploads after this ran. They are referenced by nothing and prune
 * collects them (core/lifecycle/prune.ts, unreferenced segments older than its grace period).
 */
import { z } from "zod";
import { CorruptObjectError, UnsupportedFormatError } from "../errors.ts";
import { IndexRunReader } from "../format/index-run.ts";
import { keys, type Repo } from "../format/layout.ts";
import { decodeMetadata } from "../format/metadata.ts";
import { SEGMENT_RUN_ID_METADATA } from "../format/segment.ts";
import { ObjectNotFoundError, type ObjectVersionRef } from "../ports/object-store.ts";

const SegmentId = z.string().regex(/^[0-9a-f]{32}$/);

const SummarySchema = z.looseObject({
  runId: z.string(),
  run: z.looseObject({ key: z.string() }),
  segments: z.array(SegmentId),
});

const CheckpointSchema = z.looseObject({
  runId: z.string().optional(),
  run: z.looseObject({ key: z.string() }).optional(),
  segments: z.array(z.looseObject({ segmentId: SegmentId, key: z.string() })),
});

export interface RunSegmentRecords {
  /** Segment ids the run's trusted records name (its own and, through dedup, others'). */
  readonly segmentIds: ReadonlySet<string>;
  /** Records that failed their check (keys): the segments they name are left to prune. */
  readonly untrusted: readonly string[];
}

function isDamage(error: unknown): boolean {
  return error instanceof CorruptObjectError || error instanceof UnsupportedFormatError;
}

/** Both spellings a record may use for a run's key: full, and relative to the repository prefix. */
function sameKey(repo: Repo, a: string, full: string): boolean {
  if (a === full) return true;
  try {
    return a === keys.relative(repo, full);
  } catch {
    return false;
  }
}

/** Reads the run's records (see the module comment) and returns the segment ids they name. */
export async function readRunSegmentRecords(repo: Repo, runId: string): Promise<RunSegmentRecords> {
  const ids = new Set<string>();
  const untrusted: string[] = [];
  const runs: string[] = [];
  const covered: string[] = [];
  const base = keys.runPrefix(repo, runId);

  const open = async (key: string, read: (body: Uint8Array, versionId?: string) => void) => {
    try {
      const got = await repo.store.get(key);
      read(got.body, got.versionId);
    } catch (error) {
      if (error instanceof ObjectNotFoundError) return; // deleted since the listing (a concurrent cleanup)
      if (!isDamage(error)) throw error;
      untrusted.push(key);
    }
  };

  for await (const o of repo.store.list(`${base}shards/`)) {
    if (o.key.endsWith(".run")) runs.push(o.key);
    else if (o.key.endsWith(".done.json")) {
      await open(o.key, (body, versionId) => {
        const s = decodeMetadata(body, "cgmirror.shard-result", SummarySchema, o.key, versionId);
        if (s.runId !== runId) {
          throw new CorruptObjectError(o.key, versionId, `it is a summary of run ${s.runId}`);
        }
        for (const id of s.segments) ids.add(id);
        covered.push(s.run.key);
      });
    }
  }
  for await (const o of repo.store.list(`${base}checkpoints/`)) {
    if (o.key.endsWith(".run")) runs.push(o.key);
    else if (o.key.endsWith(".json")) {
      await open(o.key, (body, versionId) => {
        const c = decodeMetadata(body, "cgmirror.transfer-checkpoint", CheckpointSchema, o.key, versionId);
        if (c.runId !== undefined && c.runId !== runId) {
          throw new CorruptObjectError(o.key, versionId, `it is a checkpoint of run ${c.runId}`);
        }
        for (const s of c.segments) {
          if (!sameKey(repo, s.key, keys.segment(repo, s.segmentId))) {
            throw new CorruptObjectError(
              o.key,
              versionId,
              `it names segment ${s.segmentId} at ${JSON.stringify(s.key)}, not at its own key`,
            );
          }
        }
        for (const s of c.segments) ids.add(s.segmentId);
        if (c.run) covered.push(c.run.key);
      });
    }
  }
  // Result runs no summary or checkpoint accounts for: an attempt that wrote its result and stopped.
  for (const key of runs) {
    if (covered.some((c) => sameKey(repo, c, key))) continue;
    try {
      const reader = await IndexRunReader.open(repo.store, key);
      const found: string[] = [];
      for (let p = 0; p < reader.pageCount; p++) found.push(...(await reader.readPage(p)).segTable);
      for (const id of found) ids.add(id);
    } catch (error) {
      if (error instanceof ObjectNotFoundError) continue;
      if (!isDamage(error)) throw error;
      untrusted.push(key);
    }
  }
  return { segmentIds: ids, untrusted };
}

export interface RunSegmentsOutcome {
  /** Segment objects deleted (every version of each). */
  readonly deletedSegments: number;
  readonly deletedVersions: number;
  /** Segments the records name that this run did not write (committed blocks it deduplicated, or
   * segments without run metadata): kept. */
  readonly keptSegments: number;
  /** Records that failed their check: the segments they name were left to prune. */
  readonly untrusted: readonly string[];
  /** Why no segment was even looked at (the run may have committed, or its records are unknown). */
  readonly skipped?: string;
}

export function skippedSegments(reason: string): RunSegmentsOutcome {
  return { deletedSegments: 0, deletedVersions: 0, keptSegments: 0, untrusted: [], skipped: reason };
}

/** Versions deleted per DeleteObjects request (S3's maximum). */
const DELETE_BATCH = 1000;

/**
 * Deletes every segment the run's records name whose object metadata says this run wrote it (all of
 * its versions, DeleteObjects in batches of 1,000). The caller must have proved that no committed
 * generation can reference the run's segments. Idempotent: a retry after a crash finds the records
 * again and skips what is gone. Call it before the run's transient files are deleted.
 */
export async function deleteRunSegments(
  repo: Repo,
  runId: string,
  options: { readonly concurrency?: number } = {},
): Promise<RunSegmentsOutcome> {
  const { segmentIds, untrusted } = await readRunSegmentRecords(repo, runId);
  const doomed: ObjectVersionRef[] = [];
  let deletedSegments = 0;
  let keptSegments = 0;
  // A few requests in flight at once (protocol/ may not import transfer/'s TaskPool).
  const queue = [...segmentIds];
  const worker = async (): Promise<void> => {
    for (let id = queue.pop(); id !== undefined; id = queue.pop()) {
      const key = keys.segment(repo, id);
      const head = await repo.store.head(key);
      if (!head) continue; // gone (an earlier attempt of this cleanup), or never uploaded
      if (head.metadata[SEGMENT_RUN_ID_METADATA] !== runId) {
        keptSegments++;
        continue;
      }
      let found = false;
      for await (const v of repo.store.listVersions(key)) {
        if (v.key !== key) continue;
        doomed.push({ key, versionId: v.versionId });
        found = true;
      }
      if (found) deletedSegments++;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 16) }, worker));
  for (let i = 0; i < doomed.length; i += DELETE_BATCH) {
    await repo.store.deleteVersions(doomed.slice(i, i + DELETE_BATCH));
  }
  return { deletedSegments, deletedVersions: doomed.length, keptSegments, untrusted };
}
