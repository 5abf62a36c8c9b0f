/**
 * CheckSnapshots: are all of the group's snapshots completed? Polled by the workflow, which waits the
 * `waitSeconds` it answers (backing off up to 15 minutes) before asking again.
 */
import { checkSnapshots } from "#core/protocol/snapshot-group.ts";
import { awsDeps } from "./aws-deps.ts";
import {
  CheckSnapshotsInput,
  type CheckSnapshotsInputT,
  CheckSnapshotsOutput,
  type CheckSnapshotsOutputT,
} from "./contracts.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";

export async function checkSnapshotsTask(
  input: CheckSnapshotsInputT,
  deps: TaskDeps,
): Promise<CheckSnapshotsOutputT> {
  const config = groupConfig(input.config);
  return checkSnapshots(input.snapshots, input.waitingSince, config.snapshots.completionTimeoutMinutes, {
    snapshots: deps.snapshots(),
    clock: deps.clock,
  });
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("CheckSnapshots", CheckSnapshotsInput, CheckSnapshotsOutput, checkSnapshotsTask, deps);
export const handler = makeHandler(awsDeps);
