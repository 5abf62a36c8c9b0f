/**
 * RunGuard: does this run still hold its group? Transfer asks before each segment upload
 * (SegmentWriter `beforeUpload`, core/format/segment.ts), so a Transfer invocation that keeps running after its run lost the
 * group (another run took the lock over with a higher fencing number, or the run's lock was released
 * after a Revert) stops writing segments: it fails with LockLostError instead.
 *
 * This check saves storage, not correctness: a stale run can never commit (HEAD is fenced,
 * core/protocol/commit.ts), and whatever a zombie still uploads between a check and its upload is referenced by
 * nothing and is collected by prune (docs/operations.md, "Reverted runs and their segments").
 *
 * One GET of the lock object per check; a positive answer is reused for `maxAgeMs` (segments are tens
 * of MiB, so this is one small GET per second or so of a busy Transfer), a negative one for ever.
 */
import { LockLostError } from "../errors.ts";
import { keys, type Repo } from "../format/layout.ts";
import { readLock } from "./lock.ts";

export interface RunGuardOptions {
  /** The clock the lock's `expiresAt` is compared with (ms since the epoch). @default Date.now */
  readonly now?: () => number;
  /** How long a positive check is trusted (ms, in `now`'s units). 0 reads the lock every time. @default 1000 */
  readonly maxAgeMs?: number;
}

export class RunGuard {
  readonly #repo: Repo;
  readonly #runId: string;
  readonly #now: () => number;
  readonly #maxAgeMs: number;
  /** The fencing number the lock carried for this run at the first check. */
  #fencing: number | undefined;
  #checkedAt = Number.NEGATIVE_INFINITY;
  #lost: LockLostError | undefined;
  #pending: Promise<void> | undefined;
  /** Lock reads made (for tests and logs). */
  reads = 0;

  constructor(repo: Repo, runId: string, options: RunGuardOptions = {}) {
    this.#repo = repo;
    this.#runId = runId;
    this.#now = options.now ?? Date.now;
    this.#maxAgeMs = Math.max(0, options.maxAgeMs ?? 1000);
  }

  /** Resolves when the run holds the group; throws LockLostError (for ever after) when it does not. */
  async check(): Promise<void> {
    if (this.#lost) throw this.#lost;
    if (this.#maxAgeMs > 0 && this.#now() - this.#checkedAt < this.#maxAgeMs) return;
    // Concurrent callers share one read.
    this.#pending ??= this.#read().finally(() => {
      this.#pending = undefined;
    });
    await this.#pending;
  }

  async #read(): Promise<void> {
    const key = keys.lock(this.#repo);
    this.reads++;
    const at = this.#now();
    const lock = await readLock(this.#repo);
    const r = lock?.record;
    let why: string | undefined;
    if (!r) why = "the lock object is gone";
    else if (r.runId !== this.#runId) why = `run ${r.runId} (fencing ${r.fencing}) holds the group now`;
    else if (r.released) why = "this run released the group (it ended: committed or reverted)";
    else if (this.#fencing !== undefined && r.fencing !== this.#fencing)
      why = `the lock now carries fencing ${r.fencing}, this run had ${this.#fencing}`;
    else if (Date.parse(r.expiresAt) <= at) why = `this run's lease expired at ${r.expiresAt}`;
    if (why !== undefined) {
      this.#lost = new LockLostError(key, `${why} (run ${this.#runId} stops writing segments)`);
      throw this.#lost;
    }
    this.#fencing ??= r!.fencing;
    this.#checkedAt = at;
  }
}
