/**
 * Recover (DESIGN.md section 4, step 2): fence HEAD with this run's fencing number, then finish what
 * earlier runs left behind: their uncommitted index versions and manifests (only of runs with a lower
 * fencing number, for a generation HEAD never reached) and their uncommitted snapshots. An ambiguous
 * repository (HEAD missing, delete-marked, rolled back) stops the run here with RepositoryStateError
 * before anything is written, and publishes the RepositoryNeedsRepair metric (alarmed in AWS).
 */

import { RepositoryStateError } from "#core/errors.ts";
import { recoverRun } from "#core/protocol/commit.ts";
import { writeRunRecord } from "#core/protocol/run-history.ts";
import { readSnapshotSet } from "#core/protocol/snapshot-set.ts";
import { awsDeps } from "./aws-deps.ts";
import { RecoverInput, type RecoverInputT, RecoverOutput, type RecoverOutputT } from "./contracts.ts";
import { RUN_METRICS } from "./metric-names.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { repoOf } from "./shared.ts";

/** The metric of a run stopped on an ambiguous repository (alarmed; infra/). */
export const NEEDS_REPAIR_METRIC = RUN_METRICS.needsRepair;

export async function recoverTask(input: RecoverInputT, deps: TaskDeps): Promise<RecoverOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  let result: Awaited<ReturnType<typeof recoverRun>>;
  try {
    result = await recoverRun(repo, {
      runId: input.runId,
      fencing: input.fencing,
      volumeIds: config.volumes.map((v) => v.id),
      now: new Date(deps.clock.now()),
      ...(input.takenOverFrom ? { deadRunId: input.takenOverFrom } : {}),
    });
  } catch (error) {
    if (error instanceof RepositoryStateError) {
      deps.metrics.add(config.group, NEEDS_REPAIR_METRIC, "Count", 1);
      deps.log.error("repository needs repair; the run stops without changing anything", {
        message: error.message,
      });
    }
    throw error;
  }
  const headGeneration = result.head.generation;
  const revertedVersions = result.indexVersions.length;
  // Snapshots of runs that never committed (newer than HEAD, not ours) are no one's base, except the
  // recorded set (pending/snapshot-set.json), which the Snapshot task adopts or drops.
  const port = deps.snapshots();
  const recorded = new Set((await readSnapshotSet(repo)).set?.snapshots.map((s) => s.snapshotId) ?? []);
  const leftovers = (await port.findSnapshots(config.group)).filter(
    (s) => s.generation > headGeneration && s.runId !== input.runId && !recorded.has(s.snapshotId),
  );
  for (const s of leftovers) await port.deleteSnapshot(s.snapshotId);
  const deletedSnapshots = leftovers.length;
  let action: RecoverOutputT["action"] = "none";
  if (result.deadRunCommitted) action = "cleanedCommitted";
  else if (
    revertedVersions > 0 ||
    result.otherObjects.length > 0 ||
    result.transientVersions > 0 ||
    deletedSnapshots > 0
  ) {
    action = "revertedUncommitted";
  }
  if (result.unreadable.length > 0) {
    deps.log.warn("left unreadable index versions alone (not reachable from any commit)", {
      versions: result.unreadable.map((u) => `${u.key}@${u.versionId}`),
    });
  }
  if (action !== "none")
    deps.log.warn("recovered an earlier run", { action, revertedVersions, deletedSnapshots });
  if (input.takenOverFrom && !result.deadRunCommitted) {
    // The run whose lease expired did not commit: what it left is reverted now.
    deps.metrics.add(config.group, RUN_METRICS.runReverted, "Count", 1);
  }
  if (input.takenOverFrom && input.fencing > 1) {
    // The run whose lease expired (timed out, aborted, crashed): its record says how it was finished.
    // Its fencing number is the one just below ours (ours is one more than the lock's).
    await writeRunRecord(repo, {
      group: config.group,
      runId: input.takenOverFrom,
      fencing: input.fencing - 1,
      outcome: "recovered",
      recoveredAs: result.deadRunCommitted ? "committed" : "reverted",
      endedAt: new Date(deps.clock.now()).toISOString(),
      headGeneration,
      error: "RunAbandoned",
      cause: `the run stopped without finishing (timed out, aborted, failed on a Step Functions limit or crashed); run ${input.runId} took the group over and ${
        result.deadRunCommitted ? "finished its commit" : "reverted what it left"
      }`,
    }).catch((error: Error) =>
      deps.log.warn("could not write the run record (history/)", {
        error: error.name,
        message: error.message,
      }),
    );
  }
  return { action, revertedVersions, deletedSnapshots, headGeneration, nextGeneration: headGeneration + 1 };
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("Recover", RecoverInput, RecoverOutput, recoverTask, deps);
export const handler = makeHandler(awsDeps);
