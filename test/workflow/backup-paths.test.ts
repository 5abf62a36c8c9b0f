/**
 * One test per workflow path, through the state machine CgmirrorStack synthesizes, run locally by
 * aws-local-stepfunctions with every Task bound to its real handler over the local stack. After each,
 * the invariant of DESIGN.md section 4 is checked by restoring HEAD.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readGeneration, readHead } from "#core/format/generation.ts";
import { keys } from "#core/format/layout.ts";
import { runLocalBackup } from "#local/runner.ts";
import { BLOCK_SIZE } from "#local/volumes/simulator.ts";
import { type LocalGroup, localGroup, VOLUMES } from "../support/local-group.ts";

let g: LocalGroup;
beforeAll(async () => {
  g = await localGroup();
});
afterAll(async () => {
  await g?.close();
});

/** Every version of every volume index root: "key@versionId". */
async function indexVersions(): Promise<string[]> {
  const out: string[] = [];
  for await (const v of g.repo.store.listVersions(keys.volumesPrefix(g.repo))) {
    if (v.key.endsWith("/index")) out.push(`${v.key}@${v.versionId}`);
  }
  return out.sort();
}

async function writeSome(blocks: number[], volume: string = VOLUMES.data1.id): Promise<void> {
  for (const b of blocks) await g.simulator.write(volume, b * BLOCK_SIZE + 17, randomBytes(BLOCK_SIZE / 2));
}

describe("workflow paths on the local stack", () => {
  it("GIVEN a new group WHEN backed up THEN generation 1 is committed and restores exactly", async () => {
    await writeSome([0, 1, 2, 100]);
    await writeSome([5, 6], VOLUMES.log.id);
    await writeSome([9], VOLUMES.data2.id);
    const run = await runLocalBackup({ config: g.config, deps: g.deps() });
    expect(run).toMatchObject({ outcome: "committed", generation: 1 });
    expect(await g.checkRestore()).toEqual({ generation: 1, mismatches: [] });
    // The manifest records what moved and how long the run took.
    const manifest = await readGeneration(g.repo, 1);
    const changed = Object.fromEntries(manifest.volumes.map((v) => [v.volumeId, v.stats.changedBlocks]));
    expect(changed).toEqual({ [VOLUMES.data1.id]: 4, [VOLUMES.log.id]: 2, [VOLUMES.data2.id]: 1 });
    expect(manifest.volumes.every((v) => (v.stats.storedBytes ?? 0) > 0)).toBe(true);
    expect(typeof manifest.stats.durationMs).toBe("number"); // recorded (its value is not asserted)
    // The run's snapshots carry its execution name as run id (the revert test below relies on it).
    const snaps = await g.deps().snapshots().findSnapshots(g.config.group, run.executionName);
    expect(snaps.map((s) => s.volumeId).sort()).toEqual(
      Object.values(VOLUMES)
        .map((v) => v.id)
        .sort(),
    );
  });

  it("GIVEN changes on one volume WHEN backed up again THEN generation 2 is incremental and restores exactly", async () => {
    await writeSome([1, 300]);
    const deps = g.deps();
    const run = await runLocalBackup({ config: g.config, deps });
    expect(run).toMatchObject({ outcome: "committed", generation: 2 });
    expect(await g.checkRestore()).toEqual({ generation: 2, mismatches: [] });
    expect(await g.checkRestore(1)).toEqual({ generation: 1, mismatches: [] });
  });

  it("GIVEN a slave failure on one volume WHEN backed up THEN the run reverts and HEAD still restores generation 2", async () => {
    await writeSome([7, 8], VOLUMES.data2.id);
    const versionsBefore = await indexVersions();
    const run = await runLocalBackup({
      config: g.config,
      deps: g.deps(),
      injectFailure: { task: "Transfer", volumeId: VOLUMES.data2.id },
    });
    expect(run.outcome).toBe("reverted");
    expect(run.error).toBe("TransferFailedError");
    expect((await readHead(g.repo))?.head.generation).toBe(2);
    // This run's index versions are gone and its new snapshots deleted.
    expect(await indexVersions()).toEqual(versionsBefore);
    const snaps = await g.deps().snapshots().findSnapshots(g.config.group, run.executionName);
    expect(snaps).toEqual([]);
    expect(await g.checkRestore()).toEqual({ generation: 2, mismatches: [] });
  });
});
