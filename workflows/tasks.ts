/**
 * The task functions of the consistency-group workflow and the state names that invoke them.
 *
 * Shared by the workflow (task timeouts), the CDK stack (one function per task, same timeouts) and
 * the local runner (which binds every state name below to the task's handler in-process).
 */

export const TASK_NAMES = [
  "AcquireLock",
  "Recover",
  "Snapshot",
  "CheckSnapshots",
  "Plan",
  "Transfer",
  "Prepare",
  "Commit",
  "Revert",
  "ReleaseLock",
] as const;

export type TaskName = (typeof TASK_NAMES)[number];

export interface TaskSpec {
  /** Lambda timeout in seconds; the Task state times out 30 s later. */
  readonly timeoutSeconds: number;
  /** Lambda memory in MiB. */
  readonly memoryMiB: number;
  /** Source file of the handler, relative to the project root. */
  readonly entry: string;
  /** State names in the workflow that invoke this task. */
  readonly states: readonly string[];
}

export const TASKS: Readonly<Record<TaskName, TaskSpec>> = {
  AcquireLock: {
    timeoutSeconds: 60,
    memoryMiB: 256,
    entry: "lambdas/acquire-lock.ts",
    states: ["AcquireLock"],
  },
  Recover: { timeoutSeconds: 300, memoryMiB: 512, entry: "lambdas/recover.ts", states: ["Recover"] },
  // Freeze + initiate + thaw: bounded by the max coordination time (<= 120 s) plus SSM round trips.
  Snapshot: { timeoutSeconds: 300, memoryMiB: 256, entry: "lambdas/snapshot.ts", states: ["Snapshot"] },
  CheckSnapshots: {
    timeoutSeconds: 60,
    memoryMiB: 256,
    entry: "lambdas/check-snapshots.ts",
    states: ["CheckSnapshots"],
  },
  // An invocation stops at a shard boundary well before 15 minutes and ResumePlan goes on from its
  // cursor until the plan is done (docs/transfer.md, "Resumable planning").
  Plan: { timeoutSeconds: 900, memoryMiB: 1024, entry: "lambdas/plan.ts", states: ["Plan", "ResumePlan"] },
  // 1,769 MB = one full vCPU; an invocation checkpoints well before 15 minutes and the Map item
  // invokes it again until its shard is done (docs/transfer.md, "Resumption").
  Transfer: { timeoutSeconds: 900, memoryMiB: 1769, entry: "lambdas/transfer.ts", states: ["TransferShard"] },
  Prepare: {
    timeoutSeconds: 300,
    memoryMiB: 1024,
    entry: "lambdas/prepare.ts",
    states: ["PrepareVolume", "PrepareVolumeCollect"],
  },
  Commit: { timeoutSeconds: 120, memoryMiB: 512, entry: "lambdas/commit.ts", states: ["Commit"] },
  Revert: { timeoutSeconds: 600, memoryMiB: 512, entry: "lambdas/revert.ts", states: ["Revert"] },
  ReleaseLock: {
    timeoutSeconds: 300,
    memoryMiB: 256,
    entry: "lambdas/release-lock.ts",
    states: ["ReleaseLock", "ReleaseLockAfterRevert"],
  },
};

/** Seconds the Task state waits beyond the Lambda timeout before `States.Timeout`. */
export const TASK_TIMEOUT_MARGIN_SECONDS = 30;
