/**
 * The names of the metrics the backup tasks publish (namespace METRICS_NAMESPACE, dimensions
 * `service` and `Group`). Stable: the dashboard and the alarms (infra/monitoring.ts) refer to them, and
 * docs/operations.md ("Metrics and the dashboard") documents each. Prune's are in lambdas/prune.ts.
 */
export const RUN_METRICS = {
  /** Commit: 1 per committed generation (the RPO alarm's metric). Count. */
  committed: "GroupCommitted",
  /** AcquireLock (every scheduled run, skipped or not) and Commit: now − HEAD's point in time. Seconds. */
  recoveryPointAge: "RecoveryPointAge",
  /** Commit: the committing execution's duration, from its start to the commit. Seconds. */
  runDuration: "RunDuration",
  /** Transfer: logical bytes of the changed blocks a shard copied (512 KiB per block). Bytes. */
  bytesChanged: "BytesChanged",
  /** Transfer: bytes a shard wrote to S3 (after dedup and compression). Bytes. */
  bytesStored: "BytesStored",
  /** Transfer: EBS direct API requests answered with a throttle (then retried by the worker). Count. */
  ebsThrottled: "EbsThrottledRequests",
  /** Revert (a failed run) and Recover (a run that stopped without finishing): 1 per reverted run. Count. */
  runReverted: "RunReverted",
  /** Plan: changed blocks of the run. Count. */
  changedBlocks: "ChangedBlocks",
  /** Snapshot: milliseconds from freeze to thaw. Milliseconds. */
  coordinationTime: "CoordinationTime",
  /** Recover: 1 per run stopped on an ambiguous repository (alarmed). Count. */
  needsRepair: "RepositoryNeedsRepair",
} as const;
