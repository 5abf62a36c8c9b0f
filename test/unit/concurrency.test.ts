/**
 * Randomized concurrency (issue 9): several masters run on one group at once, with random start
 * delays, clocks far enough apart that leases expire and runs take over from each other, executions
 * that die at a random request, ambiguous answers (the request lands, the caller sees a 500),
 * stalls inside a task, and duplicated task deliveries. fast-check, seeded and reproducible (a
 * failure prints its seed and the shrunk schedule).
 *
 * Invariants after every history: HEAD restores exactly; every run that reported "committed" is
 * committed (HEAD or its commit record names its run id and fencing number) and its generation reads
 * back exactly as its snapshots; generations are 1..HEAD without a gap; a final clean run commits and
 * every generation verifies.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { listGenerations, readCommitRecord, readGeneration, readHead } from "#core/format/generation.ts";
import { verifyGeneration } from "#core/restore/verify.ts";
import type { TaskName } from "#workflows/tasks.ts";
import { type FaultMode, FaultyStore } from "../support/faulty-store.ts";
import { churn, memGroup, readMatches } from "../support/mem-group.ts";
import { type PipelineOutcome, runPipeline } from "../support/pipeline.ts";

const VOLS = [
  { id: "vol-a", instanceId: "i-a", blocks: 8 },
  { id: "vol-b", instanceId: "i-b", blocks: 6 },
] as const;
const HOUR = 3_600_000;
const TASKS: readonly TaskName[] = ["Recover", "Snapshot", "Plan", "Transfer", "Prepare", "Commit", "Revert"];

const runArb = fc.record({
  startDelayMs: fc.nat(80),
  /** Hours ahead of real time: the default lease is 12.5 h, so 13 and 26 take over expired leases. */
  clockHours: fc.constantFrom(0, 0, 13, 26, 39),
  fault: fc.option(
    fc.record({
      at: fc.integer({ min: 1, max: 70 }),
      mode: fc.constantFrom<FaultMode>("before-die", "after-die"),
    }),
  ),
  ambiguousAt: fc.option(fc.integer({ min: 1, max: 70 })),
  /** A long pause inside the run (a slow Lambda): other runs take the group meanwhile. */
  stall: fc.option(
    fc.record({
      task: fc.constantFrom<TaskName>("Prepare", "Commit", "Commit", "Recover", "Transfer"),
      ms: fc.integer({ min: 1, max: 250 }),
    }),
    { freq: 2 },
  ),
  duplicate: fc.option(fc.record({ task: fc.constantFrom(...TASKS), concurrent: fc.boolean() })),
  delayEveryTaskMs: fc.nat(3),
  churnSeed: fc.nat(10_000),
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("randomized concurrent masters", () => {
  it("GIVEN several masters with random delays, lease expiries, crashes, ambiguous answers and duplicates WHEN they run at once THEN every reported commit is committed and every generation restores exactly", async () => {
    let histories = 0;
    let committedRuns = 0;
    const tally: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(fc.array(runArb, { minLength: 2, maxLength: 5 }), async (runs) => {
        histories++;
        const g = memGroup({ volumes: VOLS });
        churn(g, 1, 4);
        expect(await runPipeline(g.deps(), g.config, "seed-run")).toMatchObject({ outcome: "committed" });
        const outcomes = await Promise.all(
          runs.map(async (r, i): Promise<PipelineOutcome | { outcome: "failed" }> => {
            await sleep(r.startDelayMs);
            churn(g, r.churnSeed, 2);
            const store = new FaultyStore(g.store);
            if (r.fault) store.faults.set(r.fault.at, r.fault.mode);
            if (r.ambiguousAt && !store.faults.has(r.ambiguousAt))
              store.faults.set(r.ambiguousAt, "ambiguous");
            const deps = g.deps({
              store: () => store,
              clock: { now: () => Date.now() + r.clockHours * HOUR },
            });
            let duplicated = false;
            return runPipeline(deps, g.config, `run-${i}`, {
              call: async (task, input, invoke) => {
                if (store.dead)
                  throw Object.assign(new Error("the execution is dead"), { name: "InjectedCrash" });
                store.task = task;
                if (r.delayEveryTaskMs > 0) await sleep(r.delayEveryTaskMs);
                if (r.stall?.task === task) await sleep(r.stall.ms);
                if (r.duplicate?.task === task && !duplicated) {
                  duplicated = true;
                  if (r.duplicate.concurrent) {
                    const a = invoke(input);
                    const b = invoke(input);
                    b.catch(() => undefined);
                    const out = await Promise.race([a, b]);
                    await Promise.allSettled([a, b]);
                    return out;
                  }
                  await invoke(input).catch(() => undefined);
                }
                return invoke(input);
              },
            }).catch(() => ({ outcome: "failed" as const }));
          }),
        );
        for (const o of outcomes) {
          const k = o.outcome === "reverted" ? `reverted:${o.error}` : o.outcome;
          tally[k] = (tally[k] ?? 0) + 1;
        }
        const head = (await readHead(g.repo))!.head;
        expect(await readMatches(g), "HEAD restores exactly").toEqual([]);
        for (const [i, o] of outcomes.entries()) {
          if (o.outcome !== "committed") continue;
          committedRuns++;
          const record =
            o.generation === head.generation ? head.commit : await readCommitRecord(g.repo, o.generation);
          expect(record, `run-${i} reported generation ${o.generation} committed`).toMatchObject({
            runId: `run-${i}`,
            fencing: o.fencing,
          });
          expect(await readMatches(g, o.generation), `run-${i}'s generation ${o.generation}`).toEqual([]);
        }
        expect(await listGenerations(g.repo)).toEqual(
          Array.from({ length: head.generation }, (_, k) => k + 1),
        );
        // A clean run afterwards commits, and every generation still reads back and verifies.
        churn(g, 4242, 2);
        const final = await runPipeline(
          g.deps({ clock: { now: () => Date.now() + 100 * HOUR } }),
          g.config,
          "final",
        );
        expect(final).toMatchObject({ outcome: "committed", generation: head.generation + 1 });
        for (const n of await listGenerations(g.repo)) {
          expect(await readMatches(g, n), `generation ${n}`).toEqual([]);
          expect((await verifyGeneration(g.repo, { generation: n })).problems).toEqual([]);
          expect((await readGeneration(g.repo, n)).generation).toBe(n);
        }
      }),
      { numRuns: 25, seed: 20261130, endOnFailure: true },
    );
    console.log(`randomized concurrency: ${histories} histories, outcomes ${JSON.stringify(tally)}`);
    expect(committedRuns).toBeGreaterThan(0);
  });
});
