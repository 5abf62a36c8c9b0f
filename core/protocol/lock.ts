import { z } from "zod";
import { InvalidArgumentError, LockLostError, RunIdReusedError } from "../errors.ts";
import { readHead } from "../format/generation.ts";
import { assertRunId, keys, type Repo } from "../format/layout.ts";
import { decodeMetadata, encodeMetadata } from "../format/metadata.ts";
import { ObjectNotFoundError, PreconditionFailedError } from "../ports/object-store.ts";
import type { RunState } from "../ports/run-status.ts";

const LockSchema = z.object({
  format: z.literal("cgmirror.lock"),
  version: z.string(),
  group: z.string(),
  runId: z.string(),
  fencing: z.number().int().positive(),
  acquiredAt: z.string(),
  expiresAt: z.string(),
  released: z.boolean(),
});
export type LockRecord = z.infer<typeof LockSchema>;

export interface LockLease {
  readonly runId: string;
  /** Strictly increases with every acquisition of the group's lock. */
  readonly fencing: number;
  readonly etag: string;
  readonly expiresAt: string;
}

export type AcquireResult =
  | {
      readonly acquired: true;
      readonly lease: LockLease;
      /**
       * The run that held the lock before, when it ended without releasing it (its lease expired, or
       * its execution is no longer running): Recover finishes or reverts what it wrote.
       */
      readonly takenOverFrom: string | undefined;
      /** Why the previous holder's lock was taken over, when it was. */
      readonly takeover?: "expired" | "holderEnded";
    }
  | { readonly acquired: false; readonly holderRunId: string; readonly expiresAt: string };

/** The group's lock object (checked), or undefined when there is none. */
export async function readLock(repo: Repo): Promise<{ record: LockRecord; etag: string } | undefined> {
  const key = keys.lock(repo);
  try {
    const got = await repo.store.get(key);
    return {
      record: decodeMetadata(got.body, "cgmirror.lock", LockSchema, key, got.versionId),
      etag: got.etag,
    };
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return undefined;
    throw error;
  }
}

/** The fencing number HEAD carries, or 0 (HEAD absent or unreadable: Recover will stop on that). */
async function headFencing(repo: Repo): Promise<number> {
  try {
    return (await readHead(repo))?.head.fence.fencing ?? 0;
  } catch {
    return 0;
  }
}

export interface AcquireOptions {
  readonly runId: string;
  readonly ttlMs: number;
  readonly now?: Date;
  /**
   * Whether the holder of a live lock is still running (core/ports/run-status.ts). A holder that has
   * `ended` without releasing is taken over at once; `running` and `unknown` keep its lease.
   * @default every holder is `unknown`: a live lock is only taken over once it expired
   */
  readonly holderState?: (runId: string) => Promise<RunState>;
}

/**
 * AcquireLock: creates `locks/<group>` with If-None-Match: *, or takes over a released or expired
 * lock, or the live lock of a run that has ended, with If-Match on its ETag (fencing + 1, so the new
 * holder fences the old one out: docs/format.md §9). A live lock of another run gives `acquired: false`
 * (the run is skipped, not failed). Idempotent for the same run id.
 */
export async function acquireLock(repo: Repo, options: AcquireOptions): Promise<AcquireResult> {
  assertRunId(options.runId);
  if (!(options.ttlMs > 0))
    throw new InvalidArgumentError(`expected a positive lock ttlMs, got ${options.ttlMs}`);
  const key = keys.lock(repo);
  const now = options.now ?? new Date();
  const expiresAt = new Date(now.getTime() + options.ttlMs).toISOString();
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await readLock(repo);
    if (current?.record.released && current.record.runId === options.runId) {
      throw new RunIdReusedError(options.runId, "the group's lock was taken and released under it");
    }
    if (current && !current.record.released && current.record.runId === options.runId) {
      const { fencing, runId } = current.record;
      return {
        acquired: true,
        lease: { runId, fencing, etag: current.etag, expiresAt: current.record.expiresAt },
        takenOverFrom: undefined,
      };
    }
    let takeover: "expired" | "holderEnded" | undefined;
    if (current && !current.record.released) {
      if (Date.parse(current.record.expiresAt) <= now.getTime()) takeover = "expired";
      else if ((await options.holderState?.(current.record.runId)) === "ended") takeover = "holderEnded";
      else return { acquired: false, holderRunId: current.record.runId, expiresAt: current.record.expiresAt };
    }
    // Fencing numbers only grow, even if the lock object was deleted: HEAD carries the newest one.
    const fencing = Math.max(current?.record.fencing ?? 0, await headFencing(repo)) + 1;
    const body = encodeMetadata("cgmirror.lock", {
      group: repo.group,
      runId: options.runId,
      fencing,
      acquiredAt: now.toISOString(),
      expiresAt,
      released: false,
    });
    try {
      const put = await repo.store.put(key, body, current ? { ifMatch: current.etag } : { ifNoneMatch: "*" });
      const takenOverFrom = current && !current.record.released ? current.record.runId : undefined;
      return {
        acquired: true,
        lease: { runId: options.runId, fencing, etag: put.etag, expiresAt },
        takenOverFrom,
        ...(takeover ? { takeover } : {}),
      };
    } catch (error) {
      if (!(error instanceof PreconditionFailedError)) throw error;
      // Someone else wrote the lock between our read and write: read again and decide.
    }
  }
  const current = await readLock(repo);
  return {
    acquired: false,
    holderRunId: current?.record.runId ?? "(unknown)",
    expiresAt: current?.record.expiresAt ?? "",
  };
}

/** Throws LockLostError unless `lease` still holds the lock (same run, same fencing, not released). */
export async function assertLockHeld(repo: Repo, lease: LockLease, now: Date = new Date()): Promise<void> {
  const current = await readLock(repo);
  const key = keys.lock(repo);
  if (!current) throw new LockLostError(key, "the lock object is gone");
  const r = current.record;
  if (r.runId !== lease.runId || r.fencing !== lease.fencing || r.released) {
    throw new LockLostError(
      key,
      `it is now held by run ${r.runId} (fencing ${r.fencing}, released ${r.released})`,
    );
  }
  if (Date.parse(r.expiresAt) <= now.getTime()) throw new LockLostError(key, `it expired at ${r.expiresAt}`);
}

/** Extends the lease. @throws LockLostError when another run took the lock over. */
export async function renewLock(
  repo: Repo,
  lease: LockLease,
  ttlMs: number,
  now: Date = new Date(),
): Promise<LockLease> {
  const current = await readLock(repo);
  const key = keys.lock(repo);
  if (
    !current ||
    current.record.runId !== lease.runId ||
    current.record.fencing !== lease.fencing ||
    current.record.released
  ) {
    throw new LockLostError(key, "another run holds it now");
  }
  const expiresAt = new Date(now.getTime() + ttlMs).toISOString();
  const body = encodeMetadata("cgmirror.lock", { ...current.record, expiresAt });
  try {
    const put = await repo.store.put(key, body, { ifMatch: current.etag });
    return { ...lease, etag: put.etag, expiresAt };
  } catch (error) {
    if (error instanceof PreconditionFailedError)
      throw new LockLostError(key, "it changed while renewing", { cause: error });
    throw error;
  }
}

/**
 * ReleaseLock: marks the lock released (keeps the object so the fencing number keeps increasing).
 * Idempotent; does nothing when another run holds the lock now.
 */
export async function releaseLock(repo: Repo, lease: Pick<LockLease, "runId" | "fencing">): Promise<boolean> {
  const current = await readLock(repo);
  if (!current || current.record.runId !== lease.runId || current.record.fencing !== lease.fencing)
    return false;
  if (current.record.released) return true;
  const body = encodeMetadata("cgmirror.lock", { ...current.record, released: true });
  try {
    await repo.store.put(keys.lock(repo), body, { ifMatch: current.etag });
    return true;
  } catch (error) {
    if (!(error instanceof PreconditionFailedError)) throw error;
    // An SDK retry of a write that landed also ends here: look again.
    const now = await readLock(repo);
    return now?.record.runId === lease.runId && now.record.fencing === lease.fencing && now.record.released;
  }
}
