/**
 * Prune (the maintenance workflow, workflows/maintenance.ts): holds the group like a backup run (lock +
 * fenced HEAD), forgets what the retention policy does not keep, garbage-collects the repository
 * (core/lifecycle/prune.ts), and deletes EBS snapshots beyond `snapshots.keep` (only the stack's own). Stops
 * before its timeout with `done: false`; the workflow invokes it again.
 */
import { z } from "zod";
import { LockHeldError } from "#core/errors.ts";
import { applyForget, planForget } from "#core/lifecycle/forget.ts";
import { withGroupHeld } from "#core/lifecycle/maintenance.ts";
import { pruneRepository } from "#core/lifecycle/prune.ts";
import { pruneBaseSnapshots } from "#core/protocol/snapshot-group.ts";
import { LIFECYCLE_TASKS, PRUNE_STOP_MARGIN_SECONDS } from "#workflows/lifecycle-tasks.ts";
import { awsDeps } from "./aws-deps.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { repoOf } from "./shared.ts";

export const PruneInput = z.object({
  config: z.unknown(),
  /** The execution's name: with the iteration, names this maintenance run (its lock lease). */
  executionName: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,100}$/),
  iteration: z.number().int().nonnegative(),
});
export type PruneInputT = z.infer<typeof PruneInput>;

export const PruneOutput = z.object({
  outcome: z.enum(["pruned", "skipped"]),
  /** False when work is left (time or repack budget): the workflow invokes Prune again. */
  done: z.boolean(),
  iteration: z.number().int().positive(),
  forgotten: z.array(z.number().int().positive()),
  objectsDeleted: z.number().int().nonnegative(),
  bytesReclaimed: z.number().nonnegative(),
  segmentsRepacked: z.number().int().nonnegative(),
  snapshotsDeleted: z.number().int().nonnegative(),
  heldBy: z.string().nullable(),
});
export type PruneOutputT = z.infer<typeof PruneOutput>;

/** Metric names (with the Group dimension). */
export const PRUNE_METRICS = {
  bytesReclaimed: "PruneBytesReclaimed",
  objectsDeleted: "PruneObjectsDeleted",
  forgotten: "GenerationsForgotten",
  repacked: "SegmentsRepacked",
  snapshots: "SnapshotsDeleted",
} as const;

export async function pruneTask(input: PruneInputT, deps: TaskDeps): Promise<PruneOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  const started = deps.clock.now();
  const budgetMs = (LIFECYCLE_TASKS.Prune.timeoutSeconds - PRUNE_STOP_MARGIN_SECONDS) * 1000;
  const runId = `${input.executionName}-${input.iteration}`;
  const iteration = input.iteration + 1;
  try {
    const out = await withGroupHeld(
      repo,
      {
        runId,
        ttlMs: (LIFECYCLE_TASKS.Prune.timeoutSeconds + 300) * 1000,
        volumeIds: config.volumes.map((v) => v.id),
        now: new Date(started),
      },
      async ({ lease }) => {
        const forget = config.retention
          ? await applyForget(repo, lease, await planForget(repo, config.retention), {
              now: deps.clock.now(),
            })
          : undefined;
        const forgotten = forget?.forgotten ?? [];
        if (forget && forget.locked.length > 0) {
          deps.log.info("generations kept under Object Lock retention (forgotten once it passes)", {
            generations: forget.locked,
          });
        }
        const report = await pruneRepository(repo, {
          lease,
          objectLock: config.target.objectLock !== undefined,
          repackThreshold: config.prune.repackGarbagePercent / 100,
          maxRepackBytes: config.prune.maxRepackGiB * 2 ** 30,
          shouldStop: () => deps.clock.now() - started > budgetMs,
          log: (message, fields) => deps.log.info(message, fields),
          now: () => deps.clock.now(),
        });
        if (report.leasedGenerations.length > 0) {
          deps.log.info("forgotten generations kept for running restores (read leases)", {
            leased: report.leasedGenerations,
          });
        }
        // Snapshots: the next run's base (HEAD's) and `snapshots.keep` - 1 more generations stay.
        const snapshots = await pruneBaseSnapshots(
          config.group,
          report.head,
          config.snapshots.keep,
          deps.snapshots(),
        );
        return { forgotten, report, snapshotsDeleted: snapshots.length };
      },
    );
    const r = out.report;
    deps.metrics.add(config.group, PRUNE_METRICS.bytesReclaimed, "Bytes", r.bytesReclaimed);
    deps.metrics.add(config.group, PRUNE_METRICS.objectsDeleted, "Count", r.objectsDeleted);
    deps.metrics.add(config.group, PRUNE_METRICS.forgotten, "Count", out.forgotten.length);
    deps.metrics.add(config.group, PRUNE_METRICS.repacked, "Count", r.repack.segments);
    deps.metrics.add(config.group, PRUNE_METRICS.snapshots, "Count", out.snapshotsDeleted);
    deps.log.info("pruned", {
      forgotten: out.forgotten,
      objectsDeleted: r.objectsDeleted,
      bytesReclaimed: r.bytesReclaimed,
      repacked: r.repack.segments,
      keptLocked: r.keptLocked,
      done: r.done,
    });
    return {
      outcome: "pruned",
      done: r.done,
      iteration,
      forgotten: [...out.forgotten],
      objectsDeleted: r.objectsDeleted,
      bytesReclaimed: r.bytesReclaimed,
      segmentsRepacked: r.repack.segments,
      snapshotsDeleted: out.snapshotsDeleted,
      heldBy: null,
    };
  } catch (error) {
    if (!(error instanceof LockHeldError)) throw error;
    // A backup holds the group: prune waits for its next schedule (not a failure).
    deps.log.info("the group is held by a run; prune is skipped", { heldBy: error.holderRunId });
    return {
      outcome: "skipped",
      done: true,
      iteration,
      forgotten: [],
      objectsDeleted: 0,
      bytesReclaimed: 0,
      segmentsRepacked: 0,
      snapshotsDeleted: 0,
      heldBy: error.holderRunId,
    };
  }
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("Prune", PruneInput, PruneOutput, pruneTask, deps);
export const handler = makeHandler(awsDeps);
