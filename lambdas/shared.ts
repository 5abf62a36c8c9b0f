/** Helpers shared by the task handlers: the group's repository, this run's lease, the run plan. */

import { z } from "zod";
import type { GroupConfig } from "#core/config/group-config.ts";
import { readCommittedManifest } from "#core/format/generation.ts";
import { createRepo, keys, type Repo } from "#core/format/layout.ts";
import { decodeMetadata, encodeMetadata } from "#core/format/metadata.ts";
import type { Lease } from "#core/protocol/commit.ts";
import { RUN_METRICS } from "./metric-names.ts";
import type { TaskDeps } from "./runtime.ts";

export function repoOf(config: GroupConfig, deps: TaskDeps): Repo {
  return createRepo({
    store: deps.store(config.target.bucket),
    prefix: config.target.prefix,
    group: config.group,
  });
}

/** Who this run is: its run id and the fencing number AcquireLock gave it. */
export function leaseOf(runId: string, fencing: number): Lease {
  return { runId, fencing };
}

export const RunPlanSchema = z.object({
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

/** Writes the run plan (a sealed metadata object). */
export async function writeRunPlan(repo: Repo, key: string, plan: RunPlan): Promise<void> {
  await repo.store.put(key, encodeMetadata("cgmirror.run-plan", plan), { contentType: "application/json" });
}

/** Reads and checks the run plan. */
export async function readRunPlan(repo: Repo, key: string): Promise<RunPlan> {
  const got = await repo.store.get(key);
  return decodeMetadata(got.body, "cgmirror.run-plan", RunPlanSchema, key, got.versionId);
}

/**
 * Publishes RecoveryPointAge: seconds from the committed generation's point in time to now. Nothing
 * before the first commit (the RPO alarm treats no data as a breach). Best effort: a read that fails
 * is logged and never changes how the task ends.
 */
export async function publishRecoveryPointAge(repo: Repo, group: string, deps: TaskDeps): Promise<void> {
  try {
    const manifest = await readCommittedManifest(repo);
    if (!manifest) return;
    const age = Math.max(0, (deps.clock.now() - Date.parse(manifest.pointInTime)) / 1000);
    deps.metrics.add(group, RUN_METRICS.recoveryPointAge, "Seconds", age);
  } catch (error) {
    deps.log.warn("could not read the committed generation for RecoveryPointAge", {
      error: (error as Error).name,
      message: (error as Error).message,
    });
  }
}
