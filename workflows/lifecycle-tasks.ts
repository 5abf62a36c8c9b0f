/**
 * The task functions of the lifecycle workflows (workflows/maintenance.ts: forget + prune on their
 * own schedule), kept apart from the backup workflow's table (tasks.ts) so each workflow can change
 * on its own. Same shape as `TASKS`.
 */
import type { TaskSpec } from "./tasks.ts";

export const LIFECYCLE_TASK_NAMES = ["Prune", "RestoreVolume"] as const;

export type LifecycleTaskName = (typeof LIFECYCLE_TASK_NAMES)[number];

export const LIFECYCLE_TASKS: Readonly<Record<LifecycleTaskName, TaskSpec>> = {
  // Forget + prune + snapshot retention, within one Lambda run: the mark reads the full index of the
  // retained generations (≈ 0.5 GB for 16 TiB of written blocks), so it gets memory; the work stops
  // with a margin before the timeout and the workflow invokes it again (`done: false`).
  Prune: { timeoutSeconds: 900, memoryMiB: 3008, entry: "lambdas/prune.ts", states: ["Prune"] },
  // Restore into EBS (workflows/restore.ts): one function for the four steps. A volume step writes
  // blocks for up to its timeout minus RESTORE_STOP_MARGIN_SECONDS, then returns its cursor and the
  // workflow invokes it again. 1,769 MB = one vCPU, for PutSnapshotBlock at 1,000/s (EBS checks each
  // block's SHA-256 against the backup's digest: none is computed here).
  RestoreVolume: {
    timeoutSeconds: 900,
    memoryMiB: 1769,
    entry: "lambdas/restore-volume.ts",
    states: ["PrepareRestore", "RestoreVolume", "FinalizeRestore", "CleanupRestore"],
  },
};

/** Prune stops starting new work this long before its Lambda timeout. */
export const PRUNE_STOP_MARGIN_SECONDS = 180;

/**
 * A restore's volume step stops starting new batches this long before its Lambda timeout: a batch
 * (1,024 blocks, 512 MiB) at the PutSnapshotBlock quota takes about a second, far less when throttled
 * to 10 blocks/s is still under two minutes.
 */
export const RESTORE_STOP_MARGIN_SECONDS = 120;
