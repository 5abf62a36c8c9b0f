/** Helpers shared by the task handlers: the group's repository, this run's lease, the run plan. */

import { z } from "zod";
import type { GroupConfig } from "#core/group-config.ts";
import { createRepo, keys, type Repo } from "#core/layout.ts";
import type { LockLease } from "#core/lock.ts";
import type { TaskDeps } from "./runtime.ts";

export function repoOf(config: GroupConfig, deps: TaskDeps): Repo {
  return createRepo({
    store: deps.store(config.target.bucket),
    prefix: config.target.prefix,
    group: config.group,
  });
}

/** The lease fields the core checks (run id and fencing number; the ETag is not compared). */
export function leaseOf(runId: string, fencing: number): LockLease {
  return { runId, fencing, etag: "", expiresAt: "" };
}

/** Minutes the group lock outlives the run timeout, so a live run never loses it to the next one. */
export const LOCK_MARGIN_MINUTES = 30;

export const RunPlanSchema = z.object({
  format: z.literal("cgmirror.run-plan"),
  version: z.string(),
  runId: z.string(),
  generation: z.number().int().positive(),
  volumes: z.array(
    z.object({
      volumeId: z.string(),
      snapshotId: z.string(),
      baseSnapshotId: z.string().nullable(),
      volumeSizeBytes: z.number().int().nonnegative(),
      shards: z.number().int().nonnegative(),
      changedBlocks: z.number().int().nonnegative(),
      readBlocks: z.number().int().nonnegative(),
      manifestKey: z.string(),
    }),
  ),
});
export type RunPlan = z.infer<typeof RunPlanSchema>;

/** Key of this run's plan summary (deleted with the run's other transient files after commit). */
export function runPlanKey(repo: Repo, runId: string): string {
  return `${keys.runPrefix(repo, runId)}plan.json`;
}

export async function readRunPlan(repo: Repo, key: string): Promise<RunPlan> {
  const got = await repo.store.get(key);
  return RunPlanSchema.parse(JSON.parse(new TextDecoder().decode(got.body)));
}
