/**
 * Maintenance (forget, prune) holds the group like a backup run does: it takes the group lock and
 * fences HEAD (Recover: `recoverRun`, which also removes what crashed runs with a lower fencing
 * number left), so no backup can run at the same time, and a backup that takes the group over after
 * the lease expired fences HEAD and so stops the maintenance at its next check (docs/format.md §10.2).
 */

import { LockHeldError } from "../errors.ts";
import { keys, type Repo } from "../format/layout.ts";
import { type Lease, type RecoverResult, recoverRun } from "../protocol/commit.ts";
import { acquireLock, type LockLease, releaseLock, renewLock } from "../protocol/lock.ts";

export interface MaintenanceOptions {
  /** The maintenance run's id (names its lock lease), e.g. `prune-2026-11-22T03-00-00Z`. */
  readonly runId: string;
  /** The lock lease. @default 2 hours */
  readonly ttlMs?: number;
  /**
   * The group's volumes (the group config's), whose index versions Recover checks besides the
   * committed manifest's. Without them a crashed run's version of a volume new to the group stays
   * for the next backup run's Recover to delete. @default []
   */
  readonly volumeIds?: readonly string[];
  readonly now?: Date;
}

export interface MaintenanceContext {
  readonly lease: Lease;
  readonly recovered: RecoverResult;
  /** Extends the lock lease by its ttl (long prunes call it between phases). @throws LockLostError */
  renew(): Promise<void>;
}

/** A maintenance run id from a clock: `<kind>-<ISO time without punctuation>-<random>`. */
export function maintenanceRunId(kind: string, now: Date = new Date()): string {
  const t = now
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
  return `${kind}-${t}-${Math.random().toString(16).slice(2, 8)}`;
}

/**
 * Runs `fn` holding the group: acquire the lock (a live lock of another run: LockHeldError, nothing
 * done), Recover (fence HEAD, clean older runs' uncommitted leftovers), `fn`, then release the lock
 * (also when `fn` throws).
 * @throws LockHeldError when another run holds the group
 */
export async function withGroupHeld<T>(
  repo: Repo,
  options: MaintenanceOptions,
  fn: (ctx: MaintenanceContext) => Promise<T>,
): Promise<T> {
  const now = options.now ?? new Date();
  const ttlMs = options.ttlMs ?? 2 * 3_600_000;
  const lock = await acquireLock(repo, { runId: options.runId, ttlMs, now });
  if (!lock.acquired) throw new LockHeldError(keys.lock(repo), lock.holderRunId, lock.expiresAt);
  const lease = { runId: options.runId, fencing: lock.lease.fencing };
  let held: LockLease = lock.lease;
  try {
    const recovered = await recoverRun(repo, {
      ...lease,
      ...(lock.takenOverFrom ? { deadRunId: lock.takenOverFrom } : {}),
      volumeIds: options.volumeIds ?? [],
      now,
    });
    return await fn({
      lease,
      recovered,
      renew: async () => {
        held = await renewLock(repo, held, ttlMs);
      },
    });
  } finally {
    await releaseLock(repo, lease).catch(() => undefined);
  }
}
