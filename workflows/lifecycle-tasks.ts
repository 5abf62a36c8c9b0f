/**
 * The task functions of the lifecycle workflows (workflows/maintenance.ts: forget + prune on their
 * own schedule), kept apart from the backup workflow's table (tasks.ts) so each workflow can change
 * on its own. Same shape as `TASKS`.
 */
import type { TaskSpec } from "./tasks.ts";

export const LIFECYCLE_TASK_NAMES = ["Prune"] as const;

export type LifecycleTaskName = (typeof LIFECYCLE_TASK_NAMES)[number];

export const LIFECYCLE_TASKS: Readonly<Record<LifecycleTaskName, TaskSpec>> = {
  // Forget + prune + snapshot retention, within one Lambda run: the mark reads the full index of the
  // retained generations (≈ 0.5 GB for 16 TiB of written blocks), so it gets memory; the work stops
  // with a margin before the timeout and the workflow invokes it again (`done: false`).
  Prune: { timeoutSeconds: 900, memoryMiB: 3008, entry: "lambdas/prune.ts", states: ["Prune"] },
};

/** Prune stops starting new work this long before its Lambda timeout. */
export const PRUNE_STOP_MARGIN_SECONDS = 180;
