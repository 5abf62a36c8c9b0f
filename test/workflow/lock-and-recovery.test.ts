/**
 * Workflow paths around the group lock, prepare policies, a dead master and a throttling storm, through
 * the synthesized state machine on the local stack. After each, HEAD is restored and compared with the
 * point-in-time images of its snapshots (DESIGN.md section 4 invariant).
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readGeneration, readHead } from "#core/format/generation.ts";
import { acquireLock, releaseLock } from "#core/protocol/lock.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import { runLocalBackup } from "#local/runner.ts";
import { BLOCK_SIZE } from "#local/volumes/simulator.ts";
import { type LocalGroup, localGroup, VOLUMES } from "../support/local-group.ts";

let g: LocalGroup;
beforeAll(async () => {
  g = await localGroup();
  await g.simulator.write(VOLUMES.data1.id, 0, randomBytes(3 * BLOCK_SIZE));
  await g.simulator.write(VOLUMES.log.id, 0, randomBytes(BLOCK_SIZE));
  const first = await runLocalBackup({ config: g.config, deps: g.deps() });
  expect(first).toMatchObject({ outcome: "committed", generation: 1 });
});
afterAll(async () => {
  await g?.close();
});

async function headGeneration(): Promise<number | undefined> {
  return (await readHead(g.repo))?.head.generation;
}

/** Wraps handlers so that every volume a Prepare task is attempted for is recorded. */
function recordPrepares(into: string[]) {
  return (task: string, _state: string, fn: (e: unknown) => Promise<unknown>) =>
    task === "Prepare"
      ? async (e: unknown) => {
          into.push((e as { volumeId: string }).volumeId);
          return fn(e);
        }
      : fn;
}

/** Deps whose clock runs `offsetMs` ahead (a later run, after a dead run's lock expired). */
function laterDeps(offsetMs: number): TaskDeps {
  const d = g.deps();
  return { ...d, clock: { now: () => Date.now() + offsetMs } };
}

describe("workflow paths: lock, prepare policies, recovery, throttling", () => {
  it("GIVEN nothing changed WHEN backed up THEN a new generation commits with no changed block and restores exactly", async () => {
    const before = await headGeneration();
    const run = await runLocalBackup({ config: g.config, deps: g.deps() });
    expect(run).toMatchObject({ outcome: "committed", generation: before! + 1 });
    const manifest = await readGeneration(g.repo, before! + 1);
    expect(manifest.volumes.map((v) => v.stats.changedBlocks ?? 0)).toEqual([0, 0, 0]);
    const status = await g.checkRestore();
    expect(status.mismatches).toEqual([]);
  });

  it("GIVEN a live lock of another run WHEN a run starts THEN it is skipped and HEAD does not move", async () => {
    const before = await headGeneration();
    const other = await acquireLock(g.repo, { runId: "other-run", ttlMs: 3_600_000 });
    expect(other.acquired).toBe(true);
    try {
      const run = await runLocalBackup({ config: g.config, deps: g.deps() });
      expect(run.outcome).toBe("skipped");
      expect(await headGeneration()).toBe(before);
    } finally {
      if (other.acquired) await releaseLock(g.repo, other.lease);
    }
  });

  it("GIVEN an expired lock of a dead run WHEN a run starts THEN it takes the lock over and commits", async () => {
    const dead = await acquireLock(g.repo, { runId: "dead-run", ttlMs: 1 });
    expect(dead.acquired).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    await g.simulator.write(VOLUMES.data2.id, 5 * BLOCK_SIZE, randomBytes(100));
    const before = await headGeneration();
    const run = await runLocalBackup({ config: g.config, deps: g.deps() });
    expect(run).toMatchObject({ outcome: "committed", generation: before! + 1 });
    expect((await g.checkRestore()).mismatches).toEqual([]);
  });

  it("GIVEN policy failFast WHEN one volume fails to prepare THEN the run reverts and HEAD still restores exactly", async () => {
    await g.simulator.write(VOLUMES.data1.id, 7 * BLOCK_SIZE, randomBytes(100));
    const before = await headGeneration();
    const prepared: string[] = [];
    const run = await runLocalBackup({
      config: { ...g.config, prepare: { policy: "failFast" } },
      deps: g.deps(),
      injectFailure: { task: "Prepare", volumeId: VOLUMES.log.id },
      wrap: recordPrepares(prepared),
    });
    expect(run.outcome).toBe("reverted");
    expect(await headGeneration()).toBe(before);
    expect(prepared).toContain(VOLUMES.log.id);
    expect((await g.checkRestore()).mismatches).toEqual([]);
  });

  it("GIVEN policy collectAll WHEN one volume fails to prepare THEN every volume is attempted, then the run reverts", async () => {
    const before = await headGeneration();
    const prepared: string[] = [];
    const run = await runLocalBackup({
      config: { ...g.config, prepare: { policy: "collectAll" } },
      deps: g.deps(),
      injectFailure: { task: "Prepare", volumeId: VOLUMES.log.id },
      wrap: recordPrepares(prepared),
    });
    expect(run.outcome).toBe("reverted");
    expect(run.error).toBe("PrepareFailedError");
    expect(prepared.sort()).toEqual(
      Object.values(VOLUMES)
        .map((v) => v.id)
        .sort(),
    );
    expect(await headGeneration()).toBe(before);
    expect((await g.checkRestore()).mismatches).toEqual([]);
  });

  it("GIVEN a master that died after Prepare WHEN the next run starts after the lease THEN Recover reverts the dead run and the new run commits", async () => {
    await g.simulator.write(VOLUMES.data2.id, 9 * BLOCK_SIZE, randomBytes(100));
    const before = await headGeneration();
    // The master dies at Commit: nothing after Prepare runs (no Commit, no Revert, no lock release).
    const dead = await runLocalBackup({
      config: g.config,
      deps: g.deps(),
      wrap: (task, _state, fn) =>
        ["Commit", "Revert", "ReleaseLock"].includes(task)
          ? async () => {
              throw Object.assign(new Error("the master died"), { name: "InternalError" });
            }
          : fn,
    });
    // Revert died too: the run reports that its revert did not finish (the next Recover does it).
    expect(dead.outcome).toBe("revertFailed");
    expect(await headGeneration()).toBe(before);

    let recovered: unknown;
    const next = await runLocalBackup({
      config: g.config,
      deps: laterDeps(2 * 24 * 3_600_000),
      wrap: (task, _state, fn) =>
        task === "Recover"
          ? async (e) => {
              recovered = await fn(e);
              return recovered;
            }
          : fn,
    });
    expect(recovered).toMatchObject({ action: "revertedUncommitted" });
    expect((recovered as { revertedVersions: number }).revertedVersions).toBeGreaterThan(0);
    expect(next).toMatchObject({ outcome: "committed", generation: before! + 1 });
    expect((await g.checkRestore()).mismatches).toEqual([]);
  });

  it("GIVEN a run that failed without reverting or releasing the lock (States.DataLimitExceeded) WHEN the next run starts at once THEN it takes the lock over, reverts the dead run and commits", async () => {
    await g.simulator.write(VOLUMES.data1.id, 11 * BLOCK_SIZE, randomBytes(100));
    const before = await headGeneration();
    // Commit answers more than Step Functions' 256 KiB: the execution fails where no Catch helps,
    // after Prepare wrote its index versions, and its 12.5-hour lease stays.
    const dead = await runLocalBackup({
      config: g.config,
      deps: g.deps(),
      wrap: (task, _state, fn) => (task === "Commit" ? async () => ({ blob: "x".repeat(300_000) }) : fn),
    });
    expect(dead).toMatchObject({ outcome: "failed", error: "States.DataLimitExceeded" });
    let recovered: unknown;
    const next = await runLocalBackup({
      config: g.config,
      deps: g.deps(), // no later clock: the lease has not expired
      wrap: (task, _state, fn) =>
        task === "Recover"
          ? async (e) => {
              recovered = await fn(e);
              return recovered;
            }
          : fn,
    });
    expect(next).toMatchObject({ outcome: "committed", generation: before! + 1 });
    expect(recovered).toMatchObject({ action: "revertedUncommitted" });
    expect((await g.checkRestore()).mismatches).toEqual([]);
  });

  it("GIVEN a throttling storm and random 5xx on reads WHEN backed up THEN the run still commits and restores exactly", async () => {
    for (let b = 20; b < 60; b++) await g.simulator.write(VOLUMES.data1.id, b * BLOCK_SIZE, randomBytes(64));
    const emulator = g.stack.emulator!;
    emulator.setFaults({
      dataPlaneRpsPerSnapshot: 20,
      errorRate: 0.05,
      errorOperations: ["GetSnapshotBlock"],
    });
    try {
      const before = await headGeneration();
      const run = await runLocalBackup({ config: g.config, deps: g.deps() });
      expect(run).toMatchObject({ outcome: "committed", generation: before! + 1 });
      expect(emulator.stats().throttled).toBeGreaterThan(0);
    } finally {
      emulator.resetFaults();
    }
    expect((await g.checkRestore()).mismatches).toEqual([]);
  }, 300_000);
});
