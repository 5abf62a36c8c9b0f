/**
 * Snapshot (DESIGN.md section 4, step 3): freeze, initiate every snapshot, thaw, measure; record the
 * set in the repository (`pending/snapshot-set.json`). When an earlier run left a set of this
 * generation whose snapshots may still be pending (it timed out waiting, or died), adopt it instead:
 * no new snapshot, the original point in time (docs/format.md §8.1).
 */
import { assertFenced } from "#core/protocol/commit.ts";
import { snapshotGroup } from "#core/protocol/snapshot-group.ts";
import {
  deleteSnapshotSet,
  judgeSnapshotSet,
  readSnapshotSet,
  writeSnapshotSet,
} from "#core/protocol/snapshot-set.ts";
import { awsDeps } from "./aws-deps.ts";
import { SnapshotInput, type SnapshotInputT, SnapshotOutput, type SnapshotOutputT } from "./contracts.ts";
import { RUN_METRICS } from "./metric-names.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { leaseOf, repoOf } from "./shared.ts";

export async function snapshotTask(input: SnapshotInputT, deps: TaskDeps): Promise<SnapshotOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  await assertFenced(repo, leaseOf(input.runId, input.fencing));
  const port = deps.snapshots();
  const found = await readSnapshotSet(repo);
  if (found.unreadable) {
    deps.log.warn("the recorded snapshot set cannot be read; it is dropped", {
      message: found.unreadable.message,
    });
    await deleteSnapshotSet(repo);
  }
  if (found.set) {
    const set = found.set;
    const verdict = await judgeSnapshotSet(
      set,
      { group: config.group, generation: input.generation, volumeIds: config.volumes.map((v) => v.id) },
      port,
    );
    if (verdict.kind === "adopt") {
      deps.log.info("adopted the snapshot set of an earlier run", {
        from: set.runId,
        startedAt: set.startedAt,
        snapshots: verdict.snapshots.length,
      });
      return {
        snapshots: verdict.snapshots,
        startedAt: set.startedAt,
        coordinationMs: set.coordinationMs,
        frozen: set.frozen,
        reused: true,
        adopted: true,
        waitingSince: new Date(deps.clock.now()).toISOString(),
      };
    }
    deps.log.warn("dropped the recorded snapshot set", { from: set.runId, reason: verdict.reason });
    if (verdict.deleteSnapshots) {
      await Promise.allSettled(set.snapshots.map((s) => port.deleteSnapshot(s.snapshotId)));
    }
    await deleteSnapshotSet(repo);
  }
  const result = await snapshotGroup(
    config,
    { group: config.group, generation: input.generation, runId: input.runId },
    { snapshots: port, freeze: deps.freeze(), clock: deps.clock },
  );
  // Recorded before anyone waits for them: a run that ends while they are pending leaves them adoptable.
  await writeSnapshotSet(repo, {
    group: config.group,
    runId: input.runId,
    fencing: input.fencing,
    generation: input.generation,
    startedAt: result.startedAt,
    coordinationMs: result.coordinationMs,
    frozen: result.frozen,
    snapshots: result.snapshots,
    recordedAt: new Date(deps.clock.now()).toISOString(),
  });
  deps.metrics.add(config.group, RUN_METRICS.coordinationTime, "Milliseconds", result.coordinationMs);
  deps.log.info("group snapshot initiated", {
    coordinationMs: result.coordinationMs,
    frozen: result.frozen,
    reused: result.reused,
    snapshots: result.snapshots.length,
  });
  return { ...result, adopted: false, waitingSince: new Date(deps.clock.now()).toISOString() };
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("Snapshot", SnapshotInput, SnapshotOutput, snapshotTask, deps);
export const handler = makeHandler(awsDeps);
