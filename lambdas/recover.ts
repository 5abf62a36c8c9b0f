/**
 * Recover (DESIGN.md section 4, step 2): finish what an earlier run left behind. HEAD names the dead
 * run ⇒ it committed, clean up its transient files; otherwise revert every uncommitted index version
 * and delete uncommitted snapshots of other runs.
 */
import { recoverRun } from "#core/commit.ts";
import { readHead } from "#core/generation.ts";
import { awsDeps } from "./aws-deps.ts";
import { RecoverInput, type RecoverInputT, RecoverOutput, type RecoverOutputT } from "./contracts.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { repoOf } from "./shared.ts";

export async function recoverTask(input: RecoverInputT, deps: TaskDeps): Promise<RecoverOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  const outcome = await recoverRun(repo, {
    currentRunId: input.runId,
    ...(input.takenOverFrom ? { deadRunId: input.takenOverFrom } : {}),
  });
  const head = await readHead(repo);
  const headGeneration = head?.head.generation ?? 0;
  let deletedSnapshots = 0;
  let revertedVersions = 0;
  let action: RecoverOutputT["action"] = "none";
  if (outcome.outcome === "committed") {
    action = "cleanedCommitted";
  } else {
    revertedVersions = outcome.reverted.indexVersions.length;
    // Snapshots of runs that never committed (newer than HEAD, not ours) are no one's base.
    const port = deps.snapshots();
    const leftovers = (await port.findSnapshots(config.group)).filter(
      (s) => s.generation > headGeneration && s.runId !== input.runId,
    );
    for (const s of leftovers) await port.deleteSnapshot(s.snapshotId);
    deletedSnapshots = leftovers.length;
    if (revertedVersions > 0 || outcome.reverted.otherObjects.length > 0 || deletedSnapshots > 0) {
      action = "revertedUncommitted";
    }
  }
  if (action !== "none")
    deps.log.warn("recovered an earlier run", { action, revertedVersions, deletedSnapshots });
  return { action, revertedVersions, deletedSnapshots, headGeneration, nextGeneration: headGeneration + 1 };
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("Recover", RecoverInput, RecoverOutput, recoverTask, deps);
export const handler = makeHandler(awsDeps);
