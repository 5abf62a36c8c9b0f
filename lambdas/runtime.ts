/**
 * The shared shape of every task handler: validate the input against its contract
 * (lambdas/contracts.ts), run the task with its dependencies, validate the output, and map any
 * error to a name of the workflow's error contract (workflows/errors.ts).
 */
import type { z } from "zod";
import { type GroupConfig, parseGroupConfig } from "#core/config/group-config.ts";
import { formatProblems, toProblems } from "#core/config/zod-issues.ts";
import type { BlockSource } from "#core/ports/block-source.ts";
import type { ObjectStore } from "#core/ports/object-store.ts";
import type { RunStatusPort } from "#core/ports/run-status.ts";
import type { SnapshotWriter } from "#core/ports/snapshot-writer.ts";
import type { Clock, FreezePort, SnapshotPort } from "#core/protocol/snapshot-group.ts";
import type { TransferOptions } from "#core/transfer/worker.ts";
import {
  Errors,
  InternalError,
  InvalidInputError,
  ThrottledError,
  TransferFailedError,
  TransientError,
} from "#workflows/errors.ts";
import type { LifecycleTaskName } from "#workflows/lifecycle-tasks.ts";
import { TASKS, type TaskName } from "#workflows/tasks.ts";

export interface TaskLogger {
  info(message: string, extra?: Record<string, unknown>): void;
  warn(message: string, extra?: Record<string, unknown>): void;
  error(message: string, extra?: Record<string, unknown>): void;
}

export interface TaskMetrics {
  /** Records one metric value with the `Group` dimension; flushed when the task returns. */
  add(group: string, name: string, unit: "Count" | "Milliseconds" | "Seconds" | "Bytes", value: number): void;
  flush(): void;
}

/** Everything a task needs from the outside; AWS in lambdas/aws-deps.ts, local endpoints in local/. */
export interface TaskDeps {
  /** The object store of one bucket. */
  store(bucket: string): ObjectStore;
  /** EBS direct APIs (read side). */
  blockSource(): BlockSource;
  /** EC2 snapshots (or the volume simulator). */
  snapshots(): SnapshotPort;
  /** SSM fsfreeze (or the volume simulator's write queue). */
  freeze(): FreezePort;
  /**
   * Whether runs of the state machine `stateMachineArn` are still running (Step Functions in AWS, the
   * local runner's own executions locally). Without it every lock holder's state is unknown.
   */
  runStatus?(stateMachineArn: string): RunStatusPort;
  /** EBS direct APIs (write side) + EC2 describe/find/delete: restore into EBS (lambdas/restore-volume.ts). */
  snapshotWriter?(): SnapshotWriter;
  /**
   * Overrides of RestoreVolume's defaults: blocks per checkpoint (1024) and the time it works before
   * returning its cursor (its Lambda timeout minus RESTORE_STOP_MARGIN_SECONDS, on `clock`).
   */
  readonly restoreOptions?: { readonly batchBlocks?: number; readonly budgetMs?: number };
  readonly clock: Clock;
  /**
   * Milliseconds the current invocation has left (Lambda's `context.getRemainingTimeInMillis`, set by
   * `defineTask` per invocation; the local runner sets it per invocation from the timeout it enforces
   * on `clock`). Absent otherwise: a task that needs it measures its function timeout on `clock`.
   */
  readonly remainingMs?: () => number;
  /** Overrides of the transfer worker's defaults (the local runner writes progress more often). */
  readonly transferOptions?: TransferOptions;
  /**
   * Overrides of Plan's defaults: stop at a shard boundary once less than `stopBeforeDeadlineMs` is left
   * (120 s; in the units of `remainingMs`), List page size (10,000).
   */
  readonly planOptions?: { readonly stopBeforeDeadlineMs?: number; readonly pageSize?: number };
  readonly log: TaskLogger;
  readonly metrics: TaskMetrics;
}

/**
 * Milliseconds the current invocation of `task` has left: Lambda's own count when it runs in Lambda,
 * otherwise (the local runner, whose scalable clock enforces the function timeout) the task's function
 * timeout measured on `deps.clock` from now (call it when the invocation starts).
 */
export function remainingTime(deps: TaskDeps, task: TaskName): () => number {
  if (deps.remainingMs) return deps.remainingMs;
  const deadline = deps.clock.now() + TASKS[task].timeoutSeconds * 1000;
  return () => deadline - deps.clock.now();
}

/** Validates the group config carried in a task input (GroupConfigError lists every problem). */
export function groupConfig(value: unknown): GroupConfig {
  return parseGroupConfig(value, "in the task input (.config)");
}

const PASS_THROUGH = new Set<string>(Object.values(Errors));
const THROTTLE_NAMES = new Set([
  "BlockSourceThrottledError",
  "ThrottlingException",
  "Throttling",
  "RequestLimitExceeded",
  "RequestThrottledException",
  "TooManyRequestsException",
  "SlowDown",
  "ProvisionedThroughputExceededException",
]);
const TRANSIENT_NAMES = new Set([
  "BlockSourceTransientError",
  "BlockTokenExpiredError",
  "TransferRetriesExhaustedError",
  "TimeoutError",
  "RequestTimeout",
  "RequestTimeoutException",
  "InternalError",
  "InternalFailure",
  "ServiceUnavailable",
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
]);
const TRANSFER_NAMES = new Set([
  "SourceAccessError",
  "BlockChecksumMismatchError",
  "ShardPlanMismatchError",
  "BlockSourceFatalError",
  "PlanTooLargeError",
  "PlanStalledError",
]);

interface ErrorLike {
  name?: string;
  code?: string;
  message?: string;
  $retryable?: unknown;
  $metadata?: { httpStatusCode?: number };
}

/** Maps any error to one whose `name` is in the workflow's error contract. */
export function toContractError(error: unknown): Error {
  const e = (error ?? {}) as ErrorLike;
  const name = e.name ?? "Error";
  const message = e.message ?? String(error);
  const status = e.$metadata?.httpStatusCode;
  if (name === "InternalError" && error instanceof InternalError) return error;
  if (PASS_THROUGH.has(name) && name !== "InternalError") return error as Error;
  const detail = `${name}: ${message}`;
  if (THROTTLE_NAMES.has(name) || status === 429 || status === 503) {
    return new ThrottledError(detail, { cause: error });
  }
  if (
    TRANSIENT_NAMES.has(name) ||
    (e.code !== undefined && TRANSIENT_NAMES.has(e.code)) ||
    e.$retryable !== undefined ||
    (status !== undefined && status >= 500)
  ) {
    return new TransientError(detail, { cause: error });
  }
  if (TRANSFER_NAMES.has(name)) return new TransferFailedError(detail, { cause: error });
  if (name === "InvalidArgumentError") return new InvalidInputError(message, { cause: error });
  return new InternalError(detail, { cause: error });
}

/**
 * Most characters of an error message a task hands to the state machine. The state machine copies
 * causes into its state (Catch `ResultPath`, the collectAll aggregation of up to 100 volumes), which
 * must stay far below 256 KiB: the full message and stack go to the task's log instead.
 */
export const MAX_ERROR_MESSAGE_CHARS = 512;

/**
 * Bounds what Lambda reports for a task error (the Lambda error object `{errorType, errorMessage,
 * trace}` becomes the Task's cause): the message is cut at MAX_ERROR_MESSAGE_CHARS and the stack, which
 * the runtime reports as `trace`, is one line. Returns the same error.
 */
export function boundForState(error: Error): Error {
  const full = error.message;
  if (full.length > MAX_ERROR_MESSAGE_CHARS) {
    error.message = `${full.slice(0, MAX_ERROR_MESSAGE_CHARS)}… (${full.length - MAX_ERROR_MESSAGE_CHARS} more characters in the task's log)`;
  }
  error.stack = `${error.name} (the stack trace is in the task's log)`;
  return error;
}

/** Validates `event` against a task's input contract; InvalidInputError lists every problem. */
export function parseTaskInput<S extends z.ZodType>(
  task: TaskName | LifecycleTaskName,
  schema: S,
  event: unknown,
): z.infer<S> {
  const result = schema.safeParse(event, { reportInput: true });
  if (!result.success) {
    throw new InvalidInputError(
      `task ${task} received an input that does not match its contract (lambdas/contracts.ts):\n` +
        formatProblems(toProblems(result.error)),
    );
  }
  return result.data;
}

/** What Lambda passes besides the event (only the remaining time is used). */
export interface LambdaContextLike {
  getRemainingTimeInMillis?: () => number;
}

export type TaskHandler<O> = (event: unknown, context?: LambdaContextLike) => Promise<O>;

/**
 * Builds a handler: parse input, run, check output, map errors (bounded for the state, logged whole).
 * @param deps called on every invocation; pass a memoized factory so clients are created once.
 */
export function defineTask<I extends z.ZodType, O extends z.ZodType>(
  task: TaskName | LifecycleTaskName,
  input: I,
  output: O,
  run: (input: z.infer<I>, deps: TaskDeps) => Promise<z.infer<O>>,
  deps: () => TaskDeps,
): TaskHandler<z.infer<O>> {
  return async (event: unknown, context?: LambdaContextLike) => {
    const base = deps();
    const remaining = context?.getRemainingTimeInMillis;
    const d: TaskDeps =
      typeof remaining === "function" ? { ...base, remainingMs: () => remaining.call(context) } : base;
    try {
      const parsed = parseTaskInput(task, input, event);
      const result = await run(parsed, d);
      const checked = output.safeParse(result, { reportInput: true });
      if (!checked.success) {
        throw new InternalError(
          `task ${task} produced an output that breaks its contract:\n${formatProblems(toProblems(checked.error))}`,
        );
      }
      return checked.data;
    } catch (error) {
      const mapped = toContractError(error);
      d.log.error(`${task} failed`, {
        error: mapped.name,
        message: mapped.message,
        stack: (error as { stack?: unknown })?.stack,
      });
      throw boundForState(mapped);
    } finally {
      d.metrics.flush();
    }
  };
}

/** Memoizes a zero-argument factory (one set of clients per container). */
export function once<T>(factory: () => T): () => T {
  let value: T | undefined;
  let made = false;
  return () => {
    if (!made) {
      value = factory();
      made = true;
    }
    return value as T;
  };
}
