/**
 * Run records (docs/format.md §13): a small sealed JSON object per finished run under `history/`,
 * written by ReleaseLock (committed runs), Revert (reverted runs) and Recover (a run that died and was
 * finished by the next one). They are what `cgmirror runs`, `status` and `report` show; nothing a
 * restore, verify, repair or commit reads ever depends on them, and writing one never fails a run.
 *
 * Key: `history/<10-digit fencing>-<runId>.json`. Fencing numbers only grow, so keys list in the order
 * runs took the group; a run has one fencing number, so a retried task finds its record and keeps it
 * (create-only, If-None-Match: *).
 */
import { z } from "zod";
import { keys, type Repo } from "../format/layout.ts";
import { encodeMetadata, openMetadata } from "../format/metadata.ts";
import { ObjectNotFoundError, PreconditionFailedError } from "../ports/object-store.ts";

export const RUN_OUTCOMES = ["committed", "reverted", "recovered"] as const;

const RunRecordSchema = z.object({
  group: z.string(),
  runId: z.string(),
  fencing: z.number().int().positive(),
  /**
   * committed: the run committed `generation`; reverted: it failed and reverted (HEAD stayed at
   * `headGeneration`); recovered: it died (timed out, aborted, crashed) and the next run's Recover
   * finished it (`recoveredAs` says how).
   */
  outcome: z.enum(RUN_OUTCOMES),
  recoveredAs: z.enum(["committed", "reverted"]).optional(),
  startedAt: z.string().nullable(),
  endedAt: z.string(),
  durationMs: z.number().nonnegative().nullable(),
  generation: z.number().int().positive().nullable(),
  headGeneration: z.number().int().nonnegative().nullable(),
  changedBlocks: z.number().int().nonnegative().nullable(),
  storedBytes: z.number().int().nonnegative().nullable(),
  coordinationMs: z.number().nonnegative().nullable(),
  pointInTime: z.string().nullable(),
  error: z.string().nullable(),
  cause: z.string().nullable(),
});
export type RunRecord = z.infer<typeof RunRecordSchema>;

/** The longest cause kept (the execution keeps the whole text). */
const MAX_CAUSE = 2000;

export type RunRecordInput = Omit<
  RunRecord,
  | "recoveredAs"
  | "startedAt"
  | "durationMs"
  | "generation"
  | "headGeneration"
  | "changedBlocks"
  | "storedBytes"
  | "coordinationMs"
  | "pointInTime"
  | "error"
  | "cause"
> &
  Partial<RunRecord>;

/**
 * Writes a run's record once. Returns false when it already exists (a retried task). Callers treat any
 * error as a warning: a run never fails because its record could not be written.
 */
export async function writeRunRecord(repo: Repo, input: RunRecordInput): Promise<boolean> {
  const startedAt = input.startedAt ?? null;
  const record: RunRecord = {
    group: input.group,
    runId: input.runId,
    fencing: input.fencing,
    outcome: input.outcome,
    ...(input.recoveredAs ? { recoveredAs: input.recoveredAs } : {}),
    startedAt,
    endedAt: input.endedAt,
    durationMs:
      input.durationMs ?? (startedAt ? Math.max(0, Date.parse(input.endedAt) - Date.parse(startedAt)) : null),
    generation: input.generation ?? null,
    headGeneration: input.headGeneration ?? null,
    changedBlocks: input.changedBlocks ?? null,
    storedBytes: input.storedBytes ?? null,
    coordinationMs: input.coordinationMs ?? null,
    pointInTime: input.pointInTime ?? null,
    error: input.error ?? null,
    cause: input.cause ? input.cause.slice(0, MAX_CAUSE) : null,
  };
  try {
    await repo.store.put(
      keys.history(repo, input.fencing, input.runId),
      encodeMetadata("cgmirror.run-record", record),
      {
        ifNoneMatch: "*",
        contentType: "application/json",
      },
    );
    return true;
  } catch (error) {
    if (error instanceof PreconditionFailedError) return false;
    throw error;
  }
}

/** Run records, oldest first (optionally only the newest `limit`). Unreadable records are reported, not fatal. */
export async function listRunRecords(
  repo: Repo,
  options: { limit?: number } = {},
): Promise<{ records: RunRecord[]; unreadable: string[] }> {
  const prefix = keys.historyPrefix(repo);
  const names: string[] = [];
  for await (const o of repo.store.list(prefix)) names.push(o.key);
  names.sort();
  const chosen = options.limit !== undefined ? names.slice(-options.limit) : names;
  const unreadable: string[] = [];
  const records = await Promise.all(
    chosen.map(async (key) => {
      try {
        const got = await repo.store.get(key);
        return openMetadata(got.body, "cgmirror.run-record", RunRecordSchema, key, got.versionId).value;
      } catch (error) {
        if (!(error instanceof ObjectNotFoundError)) unreadable.push(`${key}: ${(error as Error).message}`);
        return undefined;
      }
    }),
  );
  return { records: records.filter((r): r is RunRecord => r !== undefined), unreadable };
}
