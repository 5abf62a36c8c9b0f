/**
 * The state payload contract: the input and output of every task, as the state machine
 * (workflows/consistency-group.ts) passes them. Handlers validate their input with these schemas
 * and their output before returning it.
 *
 * Payloads stay small (Step Functions allows 256 KiB per state): the group config, ids, counters
 * and keys. Per-block and per-shard data lives in S3 under `runs/<runId>/`. Map items are shard
 * descriptors of a few dozen bytes; MAX_INLINE_SHARDS bounds their number.
 */
import { z } from "zod";

/** Most Transfer Map items one run passes inline (~60 bytes each, ~180 KiB at most). */
export const MAX_INLINE_SHARDS = 3000;

const volumeId = z.string().regex(/^vol-[0-9a-zA-Z]{1,64}$/, {
  error: (i) => `expected a volume id like vol-…, got ${JSON.stringify(i.input)}`,
});
const snapshotId = z.string().regex(/^snap-[0-9a-zA-Z]{1,64}$/, {
  error: (i) => `expected a snapshot id like snap-…, got ${JSON.stringify(i.input)}`,
});
/** Step Functions execution names: 1-80 characters; the repository accepts [A-Za-z0-9._:-]. */
const runId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/, {
  error: (i) => `expected a run id (the execution name) of [A-Za-z0-9._:-], got ${JSON.stringify(i.input)}`,
});
const fencing = z.number().int().positive();
const generation = z.number().int().positive();
const isoTime = z.iso.datetime({ offset: true });
const count = z.number().int().nonnegative();
/** Re-validated by parseGroupConfig in the handler (with the config's own error messages). */
const config = z.record(z.string(), z.unknown());

export const SnapshotRefSchema = z.strictObject({ volumeId, snapshotId });
const snapshots = z.array(SnapshotRefSchema).min(1).max(100);

/** A transfer checkpoint as the state carries it: its key and its seal's SHA-256. */
const TransferCheckpointRef = z.strictObject({
  key: z.string().min(1).max(1024),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});

export const ShardItemSchema = z.strictObject({ volumeId, shard: z.number().int().min(0).max(999_999) });

// ---- AcquireLock
const stateMachineArn = z
  .string()
  .regex(/^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_:-]+$/, {
    error: (i) => `expected a state machine ARN ($$.StateMachine.Id), got ${JSON.stringify(i.input)}`,
  });
export const AcquireLockInput = z.strictObject({
  config,
  runId,
  /** $$.StateMachine.Id: the holder of a live lock is asked about as an execution of it. */
  stateMachineId: stateMachineArn.optional(),
});
export const AcquireLockOutput = z.discriminatedUnion("acquired", [
  z.strictObject({
    acquired: z.literal(true),
    fencing,
    expiresAt: isoTime,
    /** A run whose lock expired without release (Recover finishes or reverts it). */
    takenOverFrom: runId.nullable(),
  }),
  z.strictObject({ acquired: z.literal(false), heldBy: z.string(), expiresAt: z.string() }),
]);

// ---- Recover
export const RecoverInput = z.strictObject({
  config,
  runId,
  fencing,
  /** From AcquireLock: the run whose expired lock this run took over, if any. */
  takenOverFrom: runId.nullable(),
});
export const RecoverOutput = z.strictObject({
  /** What was found: nothing, a dead run that had committed (cleaned up), or uncommitted leftovers (reverted). */
  action: z.enum(["none", "cleanedCommitted", "revertedUncommitted"]),
  revertedVersions: count,
  deletedSnapshots: count,
  /** Segments of the taken-over run deleted (it provably did not commit; docs/operations.md). */
  deletedSegments: count.optional(),
  /** HEAD's generation, 0 when nothing is committed yet. */
  headGeneration: count,
  nextGeneration: generation,
});

// ---- Snapshot
export const SnapshotInput = z.strictObject({ config, runId, fencing, generation });
export const SnapshotOutput = z.strictObject({
  snapshots,
  /** The group's point in time: when the snapshots were initiated (by an earlier run, when adopted). */
  startedAt: isoTime,
  coordinationMs: count,
  frozen: z.boolean(),
  reused: z.boolean(),
  /** True when the set was adopted from an earlier run (docs/format.md §8.1): no snapshot was taken. */
  adopted: z.boolean(),
  /** When this run began to wait for the snapshots (CheckSnapshots' timeout counts from here). */
  waitingSince: isoTime,
});

// ---- CheckSnapshots
export const CheckSnapshotsInput = z.strictObject({ config, runId, snapshots, waitingSince: isoTime });
export const CheckSnapshotsOutput = z.strictObject({
  allCompleted: z.boolean(),
  completed: count,
  pending: count,
  /** Seconds the workflow waits before the next check (backs off, core/protocol/snapshot-group.ts). */
  waitSeconds: z.number().int().positive(),
});

// ---- Plan
/** A plan cursor as the state carries it: its key and its seal's SHA-256 (core/transfer/plan-run.ts). */
const PlanCursorRef = z.strictObject({
  key: z.string().min(1).max(1024),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export const PlanInput = z.strictObject({
  config,
  runId,
  fencing,
  generation,
  snapshots,
  /** ResumePlan: the cursor the previous Plan invocation of this run returned (absent on the first). */
  resume: PlanCursorRef.optional(),
});
/**
 * `done: false`: the invocation stopped before its deadline at a shard boundary and wrote `cursor`;
 * the state machine invokes Plan again with it (ResumePlan) until the plan is done.
 */
export const PlanOutput = z.discriminatedUnion("done", [
  z.strictObject({
    done: z.literal(true),
    /** JSON summary of the run's plan in the repository (per volume: snapshots, size, shard count). */
    planKey: z.string().min(1),
    shardCount: count,
    changedBlocks: count,
    /** The Transfer Map's MaxConcurrency, from the GetSnapshotBlock quotas (core/transfer/concurrency.ts). */
    maxConcurrency: z.number().int().positive(),
    /** GetSnapshotBlock requests/s each Transfer task reads at. */
    shardRate: z.number().int().positive(),
    shards: z.array(ShardItemSchema).max(MAX_INLINE_SHARDS),
  }),
  z.strictObject({
    done: z.literal(false),
    cursor: PlanCursorRef,
    /** Shards written so far. */
    shardCount: count,
    /** Volumes planned completely so far. */
    volumesPlanned: count,
  }),
]);

// ---- Transfer (one Map item)
export const TransferInput = z.strictObject({
  bucket: z.string().min(3),
  prefix: z.string(),
  group: z.string().min(1),
  runId,
  generation,
  planKey: z.string().min(1),
  volumeId,
  shard: z.number().int().min(0),
  /** GetSnapshotBlock requests/s this task reads at (Plan's `shardRate`). @default the worker's */
  rate: z.number().int().positive().optional(),
  /** The previous invocation's answer (absent on the first): resume from its checkpoint. */
  transfer: z.strictObject({ done: z.literal(false), checkpoint: TransferCheckpointRef }).optional(),
});
/**
 * `done: false`: the invocation stopped before its deadline and wrote `checkpoint`; the Map iteration
 * invokes Transfer again with it (docs/transfer.md, "Resumption").
 */
export const TransferOutput = z.strictObject({
  ok: z.literal(true),
  done: z.boolean(),
  checkpoint: TransferCheckpointRef.nullable(),
  blocks: count,
  blocksDone: count,
  storedBytes: count,
});

// ---- Prepare (one Map item)
export const PrepareInput = z.strictObject({
  config,
  runId,
  fencing,
  generation,
  planKey: z.string(),
  volumeId,
  snapshotId,
});
/** What a volume's transfer shards moved (summed over its shards); recorded in the generation manifest. */
export const VolumeTransferStats = z.strictObject({
  changedBlocks: count,
  storedBlocks: count,
  zeroBlocks: count,
  dedupedBlocks: count,
  storedBytes: count,
});

export const PrepareOutput = z.strictObject({
  ok: z.literal(true),
  volumeId,
  /** The index root version this run wrote (revertible), or the previous one when nothing changed: pinned by SHA-256. */
  index: z.strictObject({
    versionId: z.string().nullable(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
  }),
  sizeBytes: count,
  /** True when no new version was written. */
  reused: z.boolean(),
  stats: VolumeTransferStats.optional(),
});

// ---- Commit
export const CommitInput = z.strictObject({
  config,
  runId,
  fencing,
  generation,
  planKey: z.string(),
  snapshots,
  startedAt: isoTime,
  coordinationMs: count,
  /** When the execution started ($$.Execution.StartTime): the run's duration is measured from it. */
  executionStartedAt: isoTime.optional(),
  prepared: z.array(PrepareOutput).min(1),
});
export const CommitOutput = z.strictObject({
  generation,
  committedAt: isoTime,
  /** True when HEAD already named this run (a retried Commit). */
  alreadyCommitted: z.boolean(),
});

// ---- Revert
export const RevertInput = z.strictObject({
  config,
  runId,
  fencing,
  /** The caught error ({Error, Cause}) that sent the run here. */
  error: z.looseObject({ Error: z.string(), Cause: z.string().optional() }),
});
export const RevertOutput = z.strictObject({
  /** HEAD names this run: it committed, nothing was reverted. */
  alreadyCommitted: z.boolean(),
  /** The repository is ambiguous (RepositoryStateError): nothing in it was deleted; run `cgmirror repair`. */
  needsRepair: z.boolean(),
  revertedVersions: count,
  deletedObjects: count,
  /** Segments this run wrote, deleted from its records (docs/operations.md). */
  deletedSegments: count.optional(),
  deletedSnapshots: count,
  /** Snapshots kept for the next run to adopt (the run failed waiting for them). */
  keptSnapshots: count,
});

// ---- ReleaseLock
export const ReleaseLockInput = z.strictObject({
  config,
  runId,
  fencing,
  outcome: z.enum(["committed", "reverted"]),
});
export const ReleaseLockOutput = z.strictObject({
  released: z.boolean(),
  prunedSnapshots: count,
  cleanedObjects: count,
});

// ---- RestoreVolume (the restore workflow, workflows/restore.ts): one function, four steps by `op`
/** Names a restore: the execution name, the snapshots' cgmirror:restore-id tag, StartSnapshot's token. */
const restoreId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,79}$/, {
  error: (i) =>
    `expected a restore id of [A-Za-z0-9._:-] (an execution name), got ${JSON.stringify(i.input)}`,
});
export const RestoreParentSchema = z.strictObject({ snapshotId, generation });
export const RestoreCursorSchema = z.strictObject({
  snapshotId,
  cursor: count,
  blocksWritten: count,
  bytesWritten: count,
});
/** The restore workflow's input (what `cgmirror restore --to-snapshots --state-machine-arn` sends). */
export const RestoreWorkflowInput = z.strictObject({
  config,
  restoreId,
  /** null: HEAD's generation. */
  generation: generation.nullable(),
  /** null: every volume of the generation. */
  volumes: z.array(volumeId).min(1).max(100).nullable(),
  /** Parents given by the caller (volume id → snapshot id); null: none. */
  parents: z.record(volumeId, snapshotId).nullable(),
  /** Pick parents among the snapshots cgmirror knows (false: `--full`). */
  autoParent: z.boolean(),
});
export const RestorePrepareInput = RestoreWorkflowInput.extend({ op: z.literal("prepare") });
export const RestorePrepareOutput = z.strictObject({
  restoreId,
  generation,
  pointInTime: isoTime,
  items: z
    .array(
      z.strictObject({
        volumeId,
        parent: RestoreParentSchema.nullable(),
        /** Always null: the first volume step starts at block 0. */
        resume: z.null(),
      }),
    )
    .min(1)
    .max(100),
});
export const RestoreStepInput = z.strictObject({
  op: z.literal("volume"),
  config,
  restoreId,
  generation,
  volumeId,
  parent: RestoreParentSchema.nullable(),
  /** null on the first invocation; then the cursor the previous one returned. */
  resume: RestoreCursorSchema.nullable(),
});
export const RestoreStepOutput = z.strictObject({
  /** False: the task stopped before its deadline; the workflow invokes it again with `state`. */
  done: z.boolean(),
  volumeId,
  state: RestoreCursorSchema,
  /** The snapshot's status after CompleteSnapshot (`pending` while not done). */
  status: z.string(),
  parentSnapshotId: snapshotId.nullable(),
  parentGeneration: generation.nullable(),
});
export const RestoreFinalizeInput = z.strictObject({
  op: z.literal("finalize"),
  config,
  restoreId,
  generation,
  volumes: z.array(RestoreStepOutput).min(1).max(100),
});
export const RestoreFinalizeOutput = z.strictObject({
  restoreId,
  generation,
  snapshots: z
    .array(
      z.strictObject({
        volumeId,
        snapshotId,
        status: z.string(),
        blocksWritten: count,
        /** Of them, blocks written as zeros (an incremental restore: the parent holds data there). */
        zeroBlocks: count,
        parentSnapshotId: snapshotId.nullable(),
        parentGeneration: generation.nullable(),
      }),
    )
    .min(1)
    .max(100),
});
export const RestoreCleanupInput = z.strictObject({
  op: z.literal("cleanup"),
  config,
  restoreId,
  /** The Catch's error object. */
  error: z.object({ Error: z.string(), Cause: z.string().optional() }),
});
export const RestoreCleanupOutput = z.strictObject({
  deleted: z.array(snapshotId),
  left: z.array(z.string()),
  /** The failure and what the cleanup did: the failed execution's cause. */
  message: z.string(),
});
export const RestoreVolumeInput = z.discriminatedUnion("op", [
  RestorePrepareInput,
  RestoreStepInput,
  RestoreFinalizeInput,
  RestoreCleanupInput,
]);
export const RestoreVolumeOutput = z.union([
  RestorePrepareOutput,
  RestoreStepOutput,
  RestoreFinalizeOutput,
  RestoreCleanupOutput,
]);
export type RestoreWorkflowInputT = z.infer<typeof RestoreWorkflowInput>;
export type RestoreVolumeInputT = z.infer<typeof RestoreVolumeInput>;
export type RestoreStepOutputT = z.infer<typeof RestoreStepOutput>;
export type RestoreFinalizeOutputT = z.infer<typeof RestoreFinalizeOutput>;

export type AcquireLockInputT = z.infer<typeof AcquireLockInput>;
export type AcquireLockOutputT = z.infer<typeof AcquireLockOutput>;
export type RecoverInputT = z.infer<typeof RecoverInput>;
export type RecoverOutputT = z.infer<typeof RecoverOutput>;
export type SnapshotInputT = z.infer<typeof SnapshotInput>;
export type SnapshotOutputT = z.infer<typeof SnapshotOutput>;
export type CheckSnapshotsInputT = z.infer<typeof CheckSnapshotsInput>;
export type CheckSnapshotsOutputT = z.infer<typeof CheckSnapshotsOutput>;
export type PlanInputT = z.infer<typeof PlanInput>;
export type PlanOutputT = z.infer<typeof PlanOutput>;
export type TransferInputT = z.infer<typeof TransferInput>;
export type TransferOutputT = z.infer<typeof TransferOutput>;
export type PrepareInputT = z.infer<typeof PrepareInput>;
export type PrepareOutputT = z.infer<typeof PrepareOutput>;
export type CommitInputT = z.infer<typeof CommitInput>;
export type CommitOutputT = z.infer<typeof CommitOutput>;
export type RevertInputT = z.infer<typeof RevertInput>;
export type RevertOutputT = z.infer<typeof RevertOutput>;
export type ReleaseLockInputT = z.infer<typeof ReleaseLockInput>;
export type ReleaseLockOutputT = z.infer<typeof ReleaseLockOutput>;

/** Every task's input and output schema, by task name (workflows/tasks.ts). */
export const CONTRACTS = {
  AcquireLock: { input: AcquireLockInput, output: AcquireLockOutput },
  Recover: { input: RecoverInput, output: RecoverOutput },
  Snapshot: { input: SnapshotInput, output: SnapshotOutput },
  CheckSnapshots: { input: CheckSnapshotsInput, output: CheckSnapshotsOutput },
  Plan: { input: PlanInput, output: PlanOutput },
  Transfer: { input: TransferInput, output: TransferOutput },
  Prepare: { input: PrepareInput, output: PrepareOutput },
  Commit: { input: CommitInput, output: CommitOutput },
  Revert: { input: RevertInput, output: RevertOutput },
  ReleaseLock: { input: ReleaseLockInput, output: ReleaseLockOutput },
} as const;
