/**
 * The fault-point matrix (issue 9): every mutating request of a backup (lock, fence, plan, transfer,
 * prepare, commit, release), of a Revert and of a Recover, faulted four ways (crash before it with the
 * workflow reverting, crash before it with the execution dying, crash after it, an ambiguous answer
 * that lands but reports a 500 so the task is retried), plus every task delivered twice (one after
 * the other, and at the same time). After each fault point: the next run commits; every committed
 * generation reads back exactly (readVolume: every check restore makes, and every block's SHA-256)
 * and verifies; no manifest and no index version of an uncommitted generation is left; every
 * manifest and index version left is reachable from a committed generation.
 *
 * Runs on in-memory S3 and EBS through the real task handlers (test/support/pipeline.ts).
 */
import { describe, expect, it } from "vitest";
import { listCommitRecords, listGenerations, readGeneration, readHead } from "#core/format/generation.ts";
import { keys, parseManifestName } from "#core/format/layout.ts";
import { newerRootVersions } from "#core/format/volume-index.ts";
import { verifyGeneration } from "#core/restore/verify.ts";
import type { TaskName } from "#workflows/tasks.ts";
import { FAULT_MODES, type FaultMode, FaultyStore } from "../support/faulty-store.ts";
import { churn, type MemGroup, memGroup, readMatches, restoreMatches } from "../support/mem-group.ts";
import { type PipelineHooks, runPipeline } from "../support/pipeline.ts";

const VOLS = [
  { id: "vol-a", instanceId: "i-a", blocks: 8 },
  { id: "vol-b", instanceId: "i-b", blocks: 6 },
] as const;
const DAY = 24 * 3_600_000;

type Scenario = "backup" | "revert" | "recover";

/** Two committed generations, then changes for the next run (and, for `recover`, a run that died). */
async function baseFor(scenario: Scenario): Promise<MemGroup> {
  const g = memGroup({ volumes: VOLS });
  for (const i of [1, 2]) {
    churn(g, i, 3);
    expect(await runPipeline(g.deps(), g.config, `run-${i}`)).toMatchObject({ outcome: "committed" });
  }
  if (scenario === "recover") {
    churn(g, 30, 3);
    // A run that prepared everything and died before Commit: its lock, versions and files are left.
    const dead = await runPipeline(g.deps(), g.config, "run-dead", {
      call: (task, input, invoke) => {
        if (task === "Commit" || task === "Revert") throw new Error("the execution died");
        return invoke(input);
      },
    });
    expect(dead.outcome).toBe("reverted");
  }
  churn(g, 3, 3);
  return g;
}

interface Point {
  readonly label: string;
  readonly fault?: { readonly at: number; readonly mode: FaultMode };
  readonly duplicate?: { readonly call: number; readonly how: "sequential" | "concurrent" };
}

/** The faulted run: the scenario's run over a FaultyStore, with the hooks that make it the scenario. */
async function faultedRun(
  g: MemGroup,
  scenario: Scenario,
  store: FaultyStore,
  point: Point,
  runId: string,
  callLog: TaskName[] = [],
) {
  let calls = 0;
  let commitFailed = false;
  const hooks: PipelineHooks = {
    call: async (task: TaskName, input, invoke) => {
      if (store.dead) throw Object.assign(new Error("the execution is dead"), { name: "InjectedCrash" });
      store.task = task;
      calls++;
      callLog.push(task);
      if (scenario === "revert" && task === "Commit" && !commitFailed) {
        commitFailed = true;
        throw Object.assign(new Error("HEAD moved"), { name: "CommitConflictError" });
      }
      if (point.duplicate?.call === calls) {
        if (point.duplicate.how === "sequential") {
          await invoke(input).catch(() => undefined);
          return invoke(input);
        }
        const first = invoke(input);
        const second = invoke(input);
        second.catch(() => undefined);
        const out = await Promise.race([first, second]);
        await Promise.allSettled([first, second]);
        return out;
      }
      return invoke(input);
    },
  };
  // The recovering run starts after the dead run's lease expired.
  const clock = scenario === "recover" ? { now: () => Date.now() + DAY } : undefined;
  return runPipeline(g.deps({ store: () => store, ...(clock ? { clock } : {}) }), g.config, runId, hooks);
}

/** The invariants after a fault point and the next run. */
async function checkAfter(g: MemGroup, label: string, fileRestore: boolean): Promise<void> {
  const next = await runPipeline(
    g.deps({ clock: { now: () => Date.now() + 2 * DAY } }),
    g.config,
    "run-next",
  );
  expect(next, `${label}: the next run commits`).toMatchObject({ outcome: "committed" });
  const head = (await readHead(g.repo))!.head;
  const generations = await listGenerations(g.repo);
  expect(generations, `${label}: every generation up to HEAD is recorded`).toEqual(
    Array.from({ length: head.generation }, (_, i) => i + 1),
  );
  expect(await listCommitRecords(g.repo), label).toEqual(generations);
  const pinned = new Set<string>();
  const manifests = new Set<string>();
  for (const n of generations) {
    const m = await readGeneration(g.repo, n);
    manifests.add(keys.manifest(g.repo, n, m.fencing));
    for (const v of m.volumes) pinned.add(`${v.volumeId}@${v.index.versionId}`);
    expect(await readMatches(g, n), `${label}: generation ${n} reads back exactly`).toEqual([]);
    const report = await verifyGeneration(g.repo, { generation: n });
    expect(report.problems, `${label}: generation ${n} verifies`).toEqual([]);
  }
  if (fileRestore) expect(await restoreMatches(g), `${label}: HEAD restores to files`).toEqual([]);
  // Nothing of an uncommitted generation is left, and every manifest / index version left is committed.
  for await (const o of g.store.list(keys.generationsPrefix(g.repo))) {
    const name = parseManifestName(o.key.slice(keys.generationsPrefix(g.repo).length));
    expect(
      name && name.generation <= head.generation,
      `${label}: ${o.key} is of a committed generation`,
    ).toBe(true);
    expect(manifests.has(o.key), `${label}: ${o.key} is a committed manifest`).toBe(true);
  }
  for (const v of VOLS) {
    for (const r of await newerRootVersions(g.repo, v.id, null)) {
      expect(r.root, `${label}: ${v.id}@${r.versionId} is readable`).toBeDefined();
      expect(
        pinned.has(`${v.id}@${r.versionId}`),
        `${label}: ${v.id}@${r.versionId} (generation ${r.root?.generation}, run ${r.root?.runId}) is committed`,
      ).toBe(true);
    }
  }
}

describe("fault-point matrix", () => {
  it("GIVEN every write and delete of backup, revert and recover faulted four ways, and every task delivered twice, WHEN the next run follows THEN every committed generation reads back exactly and nothing uncommitted is left", async () => {
    const covered: Record<string, number> = {};
    let total = 0;
    for (const scenario of ["backup", "revert", "recover"] as const) {
      const base = await baseFor(scenario);
      // A clean pass: which mutating requests the run makes, and which task makes each.
      const probe = memGroup({ volumes: VOLS, from: base });
      const clean = new FaultyStore(probe.store);
      const callLog: TaskName[] = [];
      const outcome = await faultedRun(probe, scenario, clean, { label: "clean" }, "run-3", callLog);
      expect(outcome.outcome).toBe(scenario === "revert" ? "reverted" : "committed");
      const faulted = (task: string) =>
        scenario === "backup"
          ? true
          : scenario === "revert"
            ? task === "Revert" || task === "ReleaseLock"
            : task === "Recover";
      const targets = clean.ops.filter((o) => faulted(o.task));
      expect(targets.length, `${scenario} makes requests to fault`).toBeGreaterThan(0);
      const duplicated = callLog.map((task, i) => ({ task, call: i + 1 })).filter((c) => faulted(c.task));
      const points: Point[] = [
        ...targets.flatMap((o) =>
          FAULT_MODES.map((mode) => ({
            label: `${scenario} ${mode} #${o.n} ${o.task} ${o.op}`,
            fault: { at: o.n, mode },
          })),
        ),
        ...duplicated.flatMap((c) =>
          (["sequential", "concurrent"] as const).map((how) => ({
            label: `${scenario} duplicate ${how} ${c.task} (call ${c.call})`,
            duplicate: { call: c.call, how },
          })),
        ),
      ];
      for (const [i, point] of points.entries()) {
        const g = memGroup({ volumes: VOLS, from: base });
        const store = new FaultyStore(g.store);
        if (point.fault) store.fault = point.fault;
        // A failure the workflow does not catch (AcquireLock has no Catch) fails the execution.
        await faultedRun(g, scenario, store, point, "run-3").catch(() => undefined);
        if (point.fault && !store.fired) continue; // the run took another path before this request
        await checkAfter(g, point.label, i % 25 === 0);
        const kind = point.fault ? `${scenario} ${point.fault.mode}` : `${scenario} duplicate`;
        covered[kind] = (covered[kind] ?? 0) + 1;
        total++;
      }
    }
    console.log(`fault-point matrix: ${total} fault points covered ${JSON.stringify(covered)}`);
    expect(total).toBeGreaterThanOrEqual(200);
    // 242 points × a few runs each: ≈ 90 s on an idle 2-core machine, several times that under load.
  }, 900_000);
});
