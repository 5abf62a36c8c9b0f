/**
 * A large first snapshot (issue 10, item 2), through the synthesized state machine on the local stack
 * with a simulated clock: Wait states move the clock instead of waiting, and the EBS snapshots report
 * `pending` until simulated time says they are done. A wait of days stays far below Step Functions'
 * 25,000 history events (the checks back off), and a run that gives up waiting keeps its snapshot
 * set, which the next run adopts: no new snapshot, the original point in time.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readCommittedManifest } from "#core/format/generation.ts";
import type { SnapshotPort, SnapshotStatus } from "#core/protocol/snapshot-group.ts";
import { readSnapshotSet } from "#core/protocol/snapshot-set.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import { HISTORY_EVENT_LIMIT } from "#local/aws-limits.ts";
import { runLocalBackup } from "#local/runner.ts";
import { SimulatedClock } from "#local/sim-clock.ts";
import { BLOCK_SIZE } from "#local/volumes/simulator.ts";
import { type LocalGroup, localGroup, VOLUMES } from "../support/local-group.ts";

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

/** Snapshots that take `takesMs` of the clock's time from their first DescribeSnapshots to complete. */
function slowSnapshots(deps: TaskDeps, clock: SimulatedClock, takesMs: number) {
  const seen = new Map<string, number>();
  const created: string[] = [];
  let describes = 0;
  const inner = deps.snapshots();
  const port = new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === "describeSnapshots") {
        return async (ids: readonly string[]): Promise<SnapshotStatus[]> => {
          describes++;
          const statuses = await target.describeSnapshots(ids);
          return statuses.map((s) => {
            const first = seen.get(s.snapshotId) ?? clock.now();
            seen.set(s.snapshotId, first);
            const done = clock.now() - first >= takesMs;
            return done || s.state !== "completed" ? s : { ...s, state: "pending", progress: "41%" };
          });
        };
      }
      if (prop === "createInstanceSnapshots" || prop === "createVolumeSnapshot") {
        return async (...args: unknown[]) => {
          const out = await (target[prop] as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          for (const r of [out].flat() as { snapshotId: string }[]) created.push(r.snapshotId);
          return out;
        };
      }
      const value = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as SnapshotPort;
  return { deps: { ...deps, snapshots: () => port } as TaskDeps, created, describes: () => describes };
}

let g: LocalGroup;
beforeAll(async () => {
  g = await localGroup({
    runTimeoutMinutes: 4 * 24 * 60,
    snapshots: { keep: 2, completionTimeoutMinutes: 3 * 24 * 60 },
  });
  for (const v of Object.values(VOLUMES)) await g.simulator.write(v.id, 3 * BLOCK_SIZE, randomBytes(5000));
});
afterAll(async () => {
  await g?.close();
});

describe("a large first snapshot", () => {
  it("GIVEN snapshots that take 2.5 days WHEN a run waits for them THEN it commits, checking with backoff, far below 25,000 history events", async () => {
    const clock = new SimulatedClock();
    const slow = slowSnapshots(g.deps(), clock, 2.5 * DAY);
    const started = clock.now();
    const run = await runLocalBackup({
      config: g.config,
      deps: slow.deps,
      clock,
      time: { waits: "simulated" },
    });
    expect(run).toMatchObject({ outcome: "committed", generation: 1 });
    expect(clock.now() - started).toBeGreaterThan(2.5 * DAY);
    // ~200 checks over 2.5 days (every 15 min once backed off), not 7,200 at a fixed 30 s.
    expect(slow.describes()).toBeLessThan(400);
    expect(run.historyEvents).toBeLessThan(HISTORY_EVENT_LIMIT / 5);
    expect((await g.checkRestore()).mismatches).toEqual([]);
  });

  it("GIVEN snapshots that outlast a run's wait WHEN it times out THEN it keeps them, and the next run adopts them: no new snapshot, the original point in time", async () => {
    for (const v of Object.values(VOLUMES)) await g.simulator.write(v.id, 7 * BLOCK_SIZE, randomBytes(5000));
    const config = { ...g.config, snapshots: { keep: 2, completionTimeoutMinutes: 60 } };
    const clock = new SimulatedClock();
    const slow = slowSnapshots(g.deps(), clock, 90 * MINUTE);

    const first = await runLocalBackup({ config, deps: slow.deps, clock, time: { waits: "simulated" } });
    expect(first).toMatchObject({ outcome: "reverted", error: "SnapshotTimeoutError" });
    const kept = (await readSnapshotSet(g.repo)).set;
    expect(kept?.runId).toBe(first.executionName);
    expect(kept?.snapshots.map((s) => s.snapshotId).sort()).toEqual([...slow.created].sort());
    const taken = slow.created.length;
    expect(taken).toBe(Object.keys(VOLUMES).length);

    const second = await runLocalBackup({ config, deps: slow.deps, clock, time: { waits: "simulated" } });
    expect(second).toMatchObject({ outcome: "committed", generation: 2 });
    expect(slow.created).toHaveLength(taken); // adopted, none taken
    const manifest = await readCommittedManifest(g.repo);
    expect(manifest?.pointInTime).toBe(kept?.startedAt);
    expect(manifest?.volumes.map((v) => v.sourceSnapshotId).sort()).toEqual(
      kept?.snapshots.map((s) => s.snapshotId).sort(),
    );
    // The set is committed: its record is gone, and the generation restores exactly.
    expect((await readSnapshotSet(g.repo)).set).toBeUndefined();
    expect((await g.checkRestore()).mismatches).toEqual([]);
  });
});
