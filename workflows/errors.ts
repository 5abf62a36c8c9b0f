/**
 * The error-name contract between the task handlers and the state machine.
 *
 * Handlers throw these classes (or map core errors to them, see lambdas/runtime.ts); the workflow
 * uses the same constants in `addRetry` / `addCatch`. Step Functions matches on the error's `name`
 * (the Lambda `errorType`), so every class has a literal `name` and the functions are bundled with
 * `keepNames`. Renaming one is a breaking change of the workflow.
 */

export const Errors = {
  /** A dependency (EBS direct APIs, S3, EC2, SSM) throttled us: retried with long backoff. */
  Throttled: "ThrottledError",
  /** A transient failure (network, 5xx, expired block token): retried. */
  Transient: "TransientError",
  /** The task input does not match its contract (lambdas/contracts.ts). Not retried. */
  InvalidInput: "InvalidInputError",
  /** The group config is invalid (core/config/group-config.ts). Not retried. */
  GroupConfig: "GroupConfigError",
  /** Another live run holds the group lock (only thrown where skipping is impossible). */
  LockHeld: "LockHeldError",
  /** This run lost its lock (expired and taken over): must revert. */
  LockLost: "LockLostError",
  /** HEAD moved under this run: must revert. */
  CommitConflict: "CommitConflictError",
  /**
   * The repository is ambiguous (HEAD missing, delete-marked, rolled back or unreadable): the run
   * stopped before changing anything; `cgmirror repair` explains. Not retried; alarmed.
   */
  RepositoryState: "RepositoryStateError",
  /** The run id (execution name) was used before. Not retried. */
  RunIdReused: "RunIdReusedError",
  /** A volume is smaller than in the committed generation. Not retried. */
  VolumeShrunk: "VolumeShrunkError",
  /** The file systems could not be frozen (or thawed) on every instance. */
  FreezeFailed: "FreezeFailedError",
  /** A snapshot could not be created, or ended in state `error`. */
  SnapshotFailed: "SnapshotFailedError",
  /** Snapshots did not all complete within `snapshots.completionTimeoutMinutes`. */
  SnapshotTimeout: "SnapshotTimeoutError",
  /** A transfer shard failed for a reason other than throttling/transient errors. */
  TransferFailed: "TransferFailedError",
  /** At least one volume failed to prepare (collectAll policy decision). */
  PrepareFailed: "PrepareFailedError",
  /** The group IS committed, but releasing the lock failed (the next run takes the lock over). */
  ReleaseLockFailed: "ReleaseLockFailedError",
  /** The revert itself failed; the next run's Recover finishes it. */
  RevertFailed: "RevertFailedError",
  /** Stored data failed an integrity check (from core). Not retried. */
  CorruptObject: "CorruptObjectError",
  /** A block failed its SHA-256 check (from core). Not retried. */
  BlockIntegrity: "BlockIntegrityError",
  /** The repository was written by a newer major format (from core). Not retried. */
  UnsupportedFormat: "UnsupportedFormatError",
  /** The task is not wired to its implementation yet. Not retried. */
  NotImplemented: "NotImplementedError",
  /** Anything else a handler did not expect. Not retried. */
  Internal: "InternalError",
} as const;

// Thrown by core/protocol/snapshot-group.ts (core cannot depend on workflows); re-exported as part of the contract.
export {
  FreezeFailedError,
  SnapshotFailedError,
  SnapshotTimeoutError,
} from "#core/protocol/snapshot-group.ts";

export type ErrorName = (typeof Errors)[keyof typeof Errors];

/** Error names retried with exponential backoff by every task. */
export const RETRYABLE_ERRORS: readonly ErrorName[] = [Errors.Throttled, Errors.Transient];

export class ThrottledError extends Error {
  override readonly name = "ThrottledError";
}

export class TransientError extends Error {
  override readonly name = "TransientError";
}

export class InvalidInputError extends Error {
  override readonly name = "InvalidInputError";
}

export class TransferFailedError extends Error {
  override readonly name = "TransferFailedError";
}

export class PrepareFailedError extends Error {
  override readonly name = "PrepareFailedError";
}

export class RevertFailedError extends Error {
  override readonly name = "RevertFailedError";
}

export class InternalError extends Error {
  override readonly name = "InternalError";
}

/** A task whose implementation (a core or transfer API) is not available yet. Never a fake success. */
export class NotImplementedError extends Error {
  override readonly name = "NotImplementedError";
  constructor(task: string, missing: string, options?: ErrorOptions) {
    super(`task ${task} is not implemented yet: it needs ${missing}; this run reverts`, options);
  }
}

/**
 * The readable part of a Step Functions error cause: a Lambda function error's cause is the Lambda
 * error object (`{"errorType","errorMessage","trace"}`), whose message is what a person wants to read.
 * Any other cause is returned as is.
 */
export function causeMessage(cause: string): string {
  if (!cause.startsWith("{")) return cause;
  try {
    const parsed = JSON.parse(cause) as { errorMessage?: unknown };
    return typeof parsed.errorMessage === "string" ? parsed.errorMessage : cause;
  } catch {
    return cause;
  }
}
