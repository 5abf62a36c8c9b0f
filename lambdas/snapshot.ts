/** Snapshot (DESIGN.md section 4, step 3): freeze, initiate every snapshot, thaw, measure. */
import { assertFenced } from "#core/commit.ts";
import { snapshotGroup } from "#core/snapshot-group.ts";
import { awsDeps } from "./aws-deps.ts";
import { SnapshotInput, type SnapshotInputT, SnapshotOutput, type SnapshotOutputT } from "./contracts.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { leaseOf, repoOf } from "./shared.ts";

export async function snapshotTask(input: SnapshotInputT, deps: TaskDeps): Promise<SnapshotOutputT> {
  const config = groupConfig(input.config);
  await assertFenced(repoOf(config, deps), leaseOf(input.runId, input.fencing));
  const result = await snapshotGroup(
    config,
    { group: config.group, generation: input.generation, runId: input.runId },
    { snapshots: deps.snapshots(), freeze: deps.freeze(), clock: deps.clock },
  );
  deps.metrics.add(config.group, "CoordinationTime", "Milliseconds", result.coordinationMs);
  deps.log.info("group snapshot initiated", {
    coordinationMs: result.coordinationMs,
    frozen: result.frozen,
    reused: result.reused,
    snapshots: result.snapshots.length,
  });
  return result;
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("Snapshot", SnapshotInput, SnapshotOutput, snapshotTask, deps);
export const handler = makeHandler(awsDeps);
