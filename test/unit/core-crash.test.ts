import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { readHead } from "#core/format/generation.ts";
import { createRepo } from "#core/format/layout.ts";
import { recoverRun } from "#core/protocol/commit.ts";
import { acquireLock, releaseLock } from "#core/protocol/lock.ts";
import { restoreGroup } from "#core/restore/restore.ts";
import { verifyGeneration } from "#core/restore/verify.ts";
import type { VolumeModel } from "../support/blocks.ts";
import { expectImage } from "../support/blocks.ts";
import { backupGeneration, type Op, twoGenerations, VOLUMES, withTmp } from "../support/repo-scenarios.ts";

const MUTATING = new Set(["put", "delete", "createMultipartUpload", "uploadPart", "completeMultipartUpload"]);
const RUN3: Op[] = [
  { volume: 0, block: 3, kind: "noise", seed: 900 },
  { volume: 1, block: 5, kind: "text", seed: 901 },
  { volume: 1, block: 6, kind: "trim", seed: 0 },
  { volume: 2, block: 1, kind: "text", seed: 902 },
];

async function expectHead(repo: ReturnType<typeof createRepo>, models: VolumeModel[]): Promise<void> {
  await withTmp(async (dir) => {
    await restoreGroup(repo, { directory: dir });
    for (const [i, v] of VOLUMES.entries()) await expectImage(join(dir, `${v.id}.img`), models[i]!);
  });
}

describe("crash at every write of a backup run", () => {
  it("GIVEN a run that dies at its n-th write (every n) WHEN the next run recovers THEN HEAD restores exactly the last committed group and the next run commits", async () => {
    // Count the writes of a clean run-3 first.
    const probe = new MemoryObjectStore();
    const probeRepo = createRepo({ store: probe, prefix: "p", group: "g" });
    const [, s2] = await twoGenerations(probeRepo);
    let writes = 0;
    probe.beforeOperation = (op) => {
      if (MUTATING.has(op)) writes++;
    };
    await backupGeneration(
      probeRepo,
      s2!.map((m) => m.clone()),
      RUN3,
      "run-3",
      false,
    );
    expect(writes).toBeGreaterThan(10);

    for (let n = 1; n <= writes; n++) {
      const store = new MemoryObjectStore();
      const repo = createRepo({ store, prefix: "p", group: "g" });
      const [, committed] = await twoGenerations(repo);
      const after = committed!.map((m) => m.clone());
      let count = 0;
      store.beforeOperation = (op) => {
        if (MUTATING.has(op) && ++count === n) throw new Error(`injected crash at write ${n}`);
      };
      const died = await backupGeneration(repo, after, RUN3, "run-3", false).then(
        () => false,
        () => true,
      );
      store.beforeOperation = undefined;
      expect(died, `the crash at write ${n} was injected`).toBe(true);
      const lock = await acquireLock(repo, { runId: `recover-${n}`, ttlMs: 1 });
      if (!lock.acquired) throw new Error("the dead run's lock did not expire");
      const outcome = await recoverRun(repo, {
        runId: `recover-${n}`,
        fencing: lock.lease.fencing,
        deadRunId: "run-3",
        volumeIds: VOLUMES.map((v) => v.id),
      });
      await releaseLock(repo, lock.lease);
      const head = (await readHead(repo))!.head;
      const run3Committed = head.commit?.runId === "run-3";
      // Committed exactly when HEAD moved to run-3 before the crash.
      expect(outcome.deadRunCommitted).toBe(run3Committed);
      await expectHead(repo, run3Committed ? after : committed!);
      const report = await verifyGeneration(repo, { readData: 1 });
      expect(report.problems, `crash at write ${n}`).toEqual([]);
      // The next run commits on top and restores exactly.
      const base = run3Committed ? after : committed!;
      const next = base.map((m) => m.clone());
      const r4 = await backupGeneration(
        repo,
        next,
        [{ volume: 0, block: 0, kind: "text", seed: 1234 }],
        "run-4",
        false,
      );
      expect(r4.generation).toBe(head.generation + 1);
      await expectHead(repo, next);
    }
  });
});
