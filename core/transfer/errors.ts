/**
 * Named errors of the planner and the transfer worker: the workflow's Retry/Catch contract.
 * `TransferErrors` holds the names; the state machine uses the same constants.
 */

import { type BlockSourceError, isBlockSourceError } from "../ports/block-source.ts";
import { namedError } from "../util/named-error.ts";
import { backoffMs } from "./aimd.ts";

/** A block read kept failing (throttling, 5xx, network) until the retry budget ran out. */
export class TransferRetriesExhaustedError extends namedError("TransferRetriesExhaustedError") {
  readonly attempts: number;
  constructor(what: string, attempts: number, options?: ErrorOptions) {
    super(
      `${what} still failed after ${attempts} attempts (last: ${describe(options?.cause)}); ` +
        "the shard can be re-run as is; if throttling persists lower the worker's maxRate or raise the quota",
      options,
    );
    this.attempts = attempts;
  }
}

/** GetSnapshotBlock returned data whose SHA-256 or length does not match what the service announced, every time. */
export class BlockChecksumMismatchError extends namedError("BlockChecksumMismatchError") {
  readonly snapshotId: string;
  readonly blockIndex: number;
  constructor(snapshotId: string, blockIndex: number, detail: string, options?: ErrorOptions) {
    super(
      `block ${blockIndex} of ${snapshotId} failed verification on every read (${detail}); ` +
        "the source snapshot may be damaged, check it with AWS support before retrying",
      options,
    );
    this.snapshotId = snapshotId;
    this.blockIndex = blockIndex;
  }
}

/** The source refused the request for a reason retrying does not fix (access denied, not found, validation). */
export class SourceAccessError extends namedError("SourceAccessError") {
  readonly code: string;
  constructor(cause: BlockSourceError) {
    super(`${cause.message}; check the snapshot ids and that the role may call ebs:${cause.operation}`, {
      cause,
    });
    this.code = cause.code;
  }
}

/** Re-listing a shard's range does not give the blocks its shard list names (wrong snapshots or a corrupt plan). */
export class ShardPlanMismatchError extends namedError("ShardPlanMismatchError") {
  constructor(detail: string, options?: ErrorOptions) {
    super(`the shard's blocks do not match a fresh listing: ${detail}; plan the run again`, options);
  }
}

/** The plan needs more shards than a run can pass on to its Transfer Map (raise the shard size). */
export class PlanTooLargeError extends namedError("PlanTooLargeError") {}

/**
 * A resumed plan made no progress in one invocation (not one shard listed before its deadline): it
 * would loop for ever. Listing is too slow for the shard size; lower transfer.shardBlocks.
 */
export class PlanStalledError extends namedError("PlanStalledError") {}

/** Error names, the contract used by the workflow's Retry/Catch. */
export const TransferErrors = {
  RetriesExhausted: "TransferRetriesExhaustedError",
  ChecksumMismatch: "BlockChecksumMismatchError",
  SourceAccess: "SourceAccessError",
  PlanMismatch: "ShardPlanMismatchError",
  PlanTooLarge: "PlanTooLargeError",
  PlanStalled: "PlanStalledError",
} as const;

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

export interface RetryOptions {
  /** @default 10 */
  readonly maxAttempts?: number;
  /** @default 200 */
  readonly baseMs?: number;
  /** @default 10000 */
  readonly capMs?: number;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly onRetry?: (error: BlockSourceError, attempt: number) => void;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Runs a source call (a listing), retrying throttled and transient errors with jittered exponential
 * back-off. Fatal source errors become SourceAccessError; other errors pass through.
 */
export async function retrySource<T>(
  what: string,
  fn: () => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const max = options.maxAttempts ?? 10;
  const wait = options.sleep ?? sleep;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (!isBlockSourceError(error)) throw error;
      if (error.kind === "fatal" || error.kind === "token-expired") throw new SourceAccessError(error);
      if (attempt >= max) throw new TransferRetriesExhaustedError(what, attempt, { cause: error });
      options.onRetry?.(error, attempt);
      await wait(backoffMs(attempt, options.baseMs ?? 200, options.capMs ?? 10_000));
    }
  }
}
