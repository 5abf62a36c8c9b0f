/**
 * Safety of forget + prune (docs/format.md §10.2), in the style of the backup fault matrix:
 *
 * - **Fault points.** Every mutating request of a maintenance run (lock, fence, recover, forget's
 *   deletes, the retired-set write, repacked segments and relocation records, every delete batch,
 *   release) faulted four ways: it fails and the run stops, the process dies before it, it lands and
 *   the process dies, it lands but answers a 500. After each: every retained generation reads back
 *   exactly and verifies; a clean maintenance run then converges (a further prune deletes nothing) and
 *   the next backup commits.
 * - **Randomized interleaving** (fast-check, seeded): histories of backups (committed, reverted,
 *   died), forgets, prunes (some faulted), prunes taken over by a backup mid-way (the backup fences
 *   the group; the prune must stop), and backups taken over by a prune mid-way (the backup must not
 *   commit and must leave nothing a prune could not clean). After every history every retained
 *   generation restores exactly.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { listGenerations } from "#core/format/generation.ts";
import { createRepo, type Repo } from "#core/format/layout.ts";
import { applyForget, planForget } from "#core/lifecycle/forget.ts";
import { withGroupHeld } from "#core/lifecycle/maintenance.ts";
import { pruneRepository } from "#core/lifecycle/prune.ts";
import { verifyGeneration } from "#core/restore/verify.ts";
import type { TaskName } from "#workflows/tasks.ts";
import { FAULT_MODES, type FaultMode, FaultyStore } from "../support/faulty-store.ts";
import { churn, type MemGroup, memGroup, readMatches } from "../support/mem-group.ts";
import { runPipeline } from "../support/pipeline.ts";

const VOLS = [
  { id: "vol-a", instanceId: "i-a", blocks: 8 },
  { id: "vol-b", instanceId: "i-b", blocks: 6 },
] as const;
const DAY = 24 * 3_600_000;

/** Forget (keepLast) + prune as one maintenance run over `repo`, at `day` days from now. */
async function maintain(
  repo: Repo,
  runId: string,
  day: number,
  options: { keepLast?: number; repackThreshold?: number } = {},
) {
  return withGroupHeld(repo, { runId, now: new Date(Date.now() + day * DAY) }, async ({ lease }) => {
    if (options.keepLast !== undefined) {
      await applyForget(repo, lease, await planForget(repo, { keepLast: options.keepLast }));
    }
    return pruneRepository(repo, {
      lease,
      repackThreshold: options.repackThreshold ?? 0.3,
      segmentBytes: 4 * 524_288,
    });
  });
}

async function backup(g: MemGroup, runId: string, day: number, hooks?: Parameters<typeof runPipeline>[3]) {
  return runPipeline(g.deps({ clock: { now: () => Date.now() + day * DAY } }), g.config, runId, hooks);
}

/** Every retained generation reads back exactly (readVolume: every check restore makes); `verify` also verifies. */
async function retainedReadBack(
  g: MemGroup,
  label: string,
  verify?: { readData: number },
): Promise<number[]> {
  const generations = await listGenerations(g.repo);
  for (const n of generations) {
    expect(await readMatches(g, n), `${label}: generation ${n} reads back`).toEqual([]);
    if (!verify) continue;
    const report = await verifyGeneration(g.repo, { generation: n, readData: verify.readData });
    expect(report.problems, `${label}: generation ${n} verifies`).toEqual([]);
  }
  return generations;
}

/**
 * Nine generations (the seventh writes one segment of which the eighth overwrites two thirds, so a
 * prune keeping the last two repacks it), a reverted run, a run that died (lock and leftovers stay).
 */
async function base(): Promise<MemGroup> {
  const g = memGroup({ volumes: VOLS });
  for (let i = 1; i <= 9; i++) {
    if (i === 7) for (const b of [0, 1, 2]) g.ebs.write("vol-a", b, `seven-${b}`);
    else if (i === 8) for (const b of [0, 1]) g.ebs.write("vol-a", b, `eight-${b}`);
    else churn(g, i, 5);
    expect(await backup(g, `run-${i}`, 0)).toMatchObject({ outcome: "committed" });
  }
  churn(g, 20, 5);
  const failed = await backup(g, "run-failed", 0, {
    call: (task, input, invoke) => {
      if (task === "Prepare") throw Object.assign(new Error("boom"), { name: "InternalError" });
      return invoke(input);
    },
  });
  expect(failed.outcome).toBe("reverted");
  churn(g, 21, 5);
  const dead = await backup(g, "run-dead", 0, {
    call: (task, input, invoke) => {
      if (task === "Commit" || task === "Revert") throw new Error("the execution died");
      return invoke(input);
    },
  });
  expect(dead.outcome).toBe("reverted");
  return g;
}

describe("prune fault points", () => {
  it("GIVEN every write and delete of forget + prune faulted four ways WHEN a clean maintenance run and a backup follow THEN every retained generation reads back and the repository converges", async () => {
    const b = await base();
    const probe = memGroup({ volumes: VOLS, from: b });
    const clean = new FaultyStore(probe.store);
    const probeRepo = createRepo({ store: clean, prefix: probe.repo.prefix, group: probe.repo.group });
    const report = await maintain(probeRepo, "maint-1", 1, { keepLast: 2 });
    expect(report.repack.segments, "the clean run repacks").toBeGreaterThan(0);
    const ops = clean.ops;
    const kinds = new Set(ops.map((o) => o.op));
    expect(kinds).toContain("deleteVersions");
    let points = 0;
    for (const o of ops) {
      for (const mode of FAULT_MODES) {
        const label = `#${o.n} ${o.op} ${o.key.replace(/^groups\/db\//, "")} ${mode}`;
        const g = memGroup({ volumes: VOLS, from: b });
        const store = new FaultyStore(g.store);
        store.fault = { at: o.n, mode };
        const repo = createRepo({ store, prefix: g.repo.prefix, group: g.repo.group });
        await maintain(repo, "maint-1", 1, { keepLast: 2 }).catch(() => undefined);
        expect(store.fired, label).toBe(true);
        await retainedReadBack(g, `${label}, right after`);
        // A later maintenance run (after the faulted one's lease expired) finishes the job.
        const after = await maintain(g.repo, "maint-2", 2, { keepLast: 2 });
        expect(after.done, `${label}: the next prune finishes`).toBe(true);
        const again = await maintain(g.repo, "maint-3", 3);
        expect(again.objectsDeleted, `${label}: nothing is left to delete`).toBe(0);
        churn(g, 90, 4);
        expect(await backup(g, "run-next", 4), label).toMatchObject({ outcome: "committed" });
        const kept = await retainedReadBack(g, `${label}, after the next backup`, {
          readData: points % 20 === 0 ? 1 : 0,
        });
        expect(kept, label).toEqual([8, 9, 10]);
        points++;
      }
    }
    console.log(
      `prune fault points: ${points} (${ops.length} mutating requests × ${FAULT_MODES.length} modes)`,
    );
    expect(points).toBeGreaterThanOrEqual(40);
  }, 900_000);
});

type Action =
  | { kind: "backup"; changes: number }
  | { kind: "failedBackup"; task: TaskName }
  | { kind: "deadBackup" }
  | { kind: "forget"; keepLast: number }
  | { kind: "prune"; threshold: number; fault?: { at: number; mode: FaultMode } }
  | { kind: "pruneTakenOver"; at: number }
  | { kind: "backupTakenOver"; task: TaskName };

const action: fc.Arbitrary<Action> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant("backup" as const), changes: fc.integer({ min: 1, max: 6 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("failedBackup" as const),
      task: fc.constantFrom<TaskName>("Transfer", "Prepare", "Commit"),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("deadBackup" as const) }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("forget" as const), keepLast: fc.integer({ min: 1, max: 3 }) }),
  },
  {
    weight: 2,
    arbitrary: fc.record(
      {
        kind: fc.constant("prune" as const),
        threshold: fc.constantFrom(0.2, 0.5, 1),
        fault: fc.record({ at: fc.integer({ min: 1, max: 14 }), mode: fc.constantFrom(...FAULT_MODES) }),
      },
      { requiredKeys: ["kind", "threshold"] },
    ),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("pruneTakenOver" as const),
      at: fc.integer({ min: 1, max: 30 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("backupTakenOver" as const),
      task: fc.constantFrom<TaskName>("Plan", "Transfer", "Prepare", "Commit"),
    }),
  },
);

describe("prune interleaved with backups", () => {
  it("GIVEN random histories of backups, forgets, faulted and taken-over prunes WHEN they end THEN every retained generation restores exactly", async () => {
    let histories = 0;
    const seen = {
      prunesStoppedByTakeover: 0,
      backupsStoppedByPrune: 0,
      repacked: 0,
      segmentsDeleted: 0,
      faultedPrunes: 0,
    };
    await fc.assert(
      fc.asyncProperty(fc.array(action, { minLength: 4, maxLength: 12 }), async (actions) => {
        const g = memGroup({ volumes: VOLS });
        let day = 0;
        let seq = 0;
        const log: string[] = [];
        for (const a of actions) {
          day++;
          seq++;
          log.push(JSON.stringify(a));
          const label = log.join(" → ");
          churn(g, seq, a.kind === "backup" ? a.changes : 3);
          switch (a.kind) {
            case "backup": {
              const r = await backup(g, `run-${seq}`, day);
              expect(r.outcome, label).toBe("committed");
              break;
            }
            case "failedBackup": {
              const r = await backup(g, `run-${seq}`, day, {
                call: (task, input, invoke) => {
                  if (task === a.task) throw Object.assign(new Error("injected"), { name: "InternalError" });
                  return invoke(input);
                },
              });
              expect(r.outcome, label).toBe("reverted");
              break;
            }
            case "deadBackup": {
              await backup(g, `run-${seq}`, day, {
                call: (task, input, invoke) => {
                  if (task === "Commit" || task === "Revert") throw new Error("the execution died");
                  return invoke(input);
                },
              });
              break;
            }
            case "forget": {
              if ((await listGenerations(g.repo)).length === 0) break;
              await withGroupHeld(
                g.repo,
                { runId: `forget-${seq}`, now: new Date(Date.now() + day * DAY) },
                async ({ lease }) =>
                  applyForget(g.repo, lease, await planForget(g.repo, { keepLast: a.keepLast })),
              );
              break;
            }
            case "prune": {
              const store = new FaultyStore(g.store);
              if (a.fault) store.fault = a.fault;
              const repo = createRepo({ store, prefix: g.repo.prefix, group: g.repo.group });
              const r = await withGroupHeld(
                repo,
                { runId: `prune-${seq}`, now: new Date(Date.now() + day * DAY) },
                ({ lease }) =>
                  pruneRepository(repo, { lease, repackThreshold: a.threshold, segmentBytes: 4 * 524_288 }),
              ).catch((error: Error) => {
                if (!store.fired) throw error;
                seen.faultedPrunes++;
                return undefined;
              });
              seen.repacked += r?.repack.segments ?? 0;
              seen.segmentsDeleted += r?.deleted.segments.count ?? 0;
              break;
            }
            case "pruneTakenOver": {
              // At its `at`-th mutating request, a backup takes the group over (the prune's lease
              // expired): the prune must stop at its next fence check, the backup must commit.
              const store = new (class extends FaultyStore {
                count = 0;
                override async deleteVersions(objects: Parameters<FaultyStore["deleteVersions"]>[0]) {
                  await this.maybe();
                  return super.deleteVersions(objects);
                }
                override async put(...args: Parameters<FaultyStore["put"]>) {
                  await this.maybe();
                  return super.put(...args);
                }
                async maybe() {
                  if (++this.count !== a.at) return;
                  churn(g, 1000 + seq, 3);
                  const r = await backup(g, `run-${seq}-takeover`, day + 0.5);
                  expect(r.outcome, `${label}: the backup that takes over commits`).toBe("committed");
                }
              })(g.store);
              const repo = createRepo({ store, prefix: g.repo.prefix, group: g.repo.group });
              await withGroupHeld(
                repo,
                { runId: `prune-${seq}`, now: new Date(Date.now() + day * DAY), ttlMs: 3_600_000 },
                ({ lease }) =>
                  pruneRepository(repo, { lease, repackThreshold: 0.2, segmentBytes: 4 * 524_288 }),
              ).catch((error: Error) => {
                expect(error.name, label).toMatch(/LockLostError|LockHeldError/);
                seen.prunesStoppedByTakeover++;
              });
              day++;
              break;
            }
            case "backupTakenOver": {
              // Before the backup's `task`, a maintenance run takes the group over: the backup must
              // not commit.
              let done = false;
              const r = await backup(g, `run-${seq}`, day, {
                call: async (task, input, invoke) => {
                  if (task === a.task && !done) {
                    done = true;
                    await maintain(g.repo, `maint-${seq}`, day + 1, { keepLast: 2 });
                  }
                  return invoke(input);
                },
              });
              expect(r.outcome, label).not.toBe("committed");
              seen.backupsStoppedByPrune++;
              day++;
              break;
            }
          }
          await retainedReadBack(g, label);
        }
        // Converge: a clean maintenance run, a backup, and every retained generation restores.
        day += 2;
        // Keep one generation with a low repack threshold, so that repacking meets every history's leftovers.
        const last = await maintain(g.repo, "maint-final", day, { keepLast: 1, repackThreshold: 0.1 });
        expect(last.done, log.join(" → ")).toBe(true);
        seen.repacked += last.repack.segments;
        seen.segmentsDeleted += last.deleted.segments.count;
        churn(g, 999, 3);
        expect(await backup(g, "run-final", day + 1), log.join(" → ")).toMatchObject({
          outcome: "committed",
        });
        await retainedReadBack(g, `${log.join(" → ")} → final`, { readData: 1 });
        histories++;
      }),
      { seed: 20_261_122, numRuns: 25, endOnFailure: true },
    );
    console.log(`prune interleavings: ${histories} histories ${JSON.stringify(seen)}`);
    for (const [what, n] of Object.entries(seen))
      expect(n, `the histories include ${what}`).toBeGreaterThan(0);
  }, 900_000);
});
