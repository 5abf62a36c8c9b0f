/**
 * The restore workflow (workflows/restore.ts) run locally by local/restore-runner.ts under AWS's limits,
 * every Task bound to the real RestoreVolume handler, writing into the EBS direct API emulator through
 * the real `@aws-sdk/client-ebs`: the restored snapshots read back through GetSnapshotBlock equal the
 * generation's image, with the volume step returning its cursor and resuming; a failure on one volume
 * fails the execution with its cause and leaves no snapshot of the restore behind.
 */
import { EBSClient } from "@aws-sdk/client-ebs";
import { type EbsEmulator, startEbsEmulator } from "@cgmirror/ebs-emulator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEbsClient } from "#adapters/ebs-source.ts";
import { EbsSnapshotWriter } from "#adapters/ebs-writer.ts";
import { readGeneration } from "#core/format/generation.ts";
import { RESTORE_TAGS } from "#core/restore/restore-snapshots.ts";
import type { RestoreWorkflowInputT } from "#lambdas/contracts.ts";
import { makeHandler } from "#lambdas/restore-volume.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import { TransientError } from "#workflows/errors.ts";
import { runLocalRestore } from "../../local/restore-runner.ts";
import { emulatorSnapshotCatalog } from "../../local/snapshot-catalog.ts";
import { type MemGroup, memGroup } from "../support/mem-group.ts";
import { runPipeline } from "../support/pipeline.ts";
import { snapshotDifferences } from "../support/snapshot-readback.ts";

let emu: EbsEmulator;
let client: EBSClient;
let reader: EBSClient;
let g: MemGroup;
const VOLS = [
  { id: "vol-a", instanceId: "i-a", blocks: 24 },
  { id: "vol-b", instanceId: "i-b", blocks: 16 },
] as const;

beforeAll(async () => {
  emu = await startEbsEmulator();
  const credentials = { accessKeyId: "AKIDRESTOREWF", secretAccessKey: "x" };
  client = createEbsClient({ endpoint: emu.endpoint, region: "us-east-1", maxSockets: 16, credentials });
  reader = new EBSClient({ endpoint: emu.endpoint, region: "us-east-1", credentials });
  g = memGroup({ volumes: VOLS });
  for (let i = 1; i <= 2; i++) {
    for (const v of VOLS) {
      for (let b = 0; b < v.blocks; b++) {
        if ((b + i) % 3 === 0) continue;
        g.ebs.write(v.id, b, b % 7 === 0 && i > 1 ? null : `g${i}-${v.id}-${b}`);
      }
    }
    expect(await runPipeline(g.deps(), g.config, `run-${i}`)).toMatchObject({ outcome: "committed" });
  }
});

afterAll(async () => {
  client?.destroy();
  reader?.destroy();
  await emu?.close();
});

/** Task deps over the in-memory repository, writing snapshots into the emulator. */
function deps(restoreOptions?: TaskDeps["restoreOptions"]): TaskDeps {
  const writer = new EbsSnapshotWriter({ client, catalog: emulatorSnapshotCatalog(emu) });
  return g.deps({ snapshotWriter: () => writer, ...(restoreOptions ? { restoreOptions } : {}) });
}

function input(restoreId: string, overrides: Partial<RestoreWorkflowInputT> = {}): RestoreWorkflowInputT {
  return {
    config: g.config as unknown as Record<string, unknown>,
    restoreId,
    generation: null,
    volumes: null,
    parents: null,
    autoParent: false,
    ...overrides,
  };
}

/** Differences between a snapshot read back through GetSnapshotBlock and a generation's image. */
async function compare(snapshotId: string, generation: number, volumeId: string): Promise<string[]> {
  const m = await readGeneration(g.repo, generation);
  const image = g.ebs.image(m.volumes.find((v) => v.volumeId === volumeId)!.sourceSnapshotId!);
  return snapshotDifferences(reader, snapshotId, image, { volumeId, generation });
}

describe("the restore workflow, run locally against the EBS emulator", () => {
  it("GIVEN a committed generation and a volume step that must stop after each batch WHEN the workflow restores it THEN RestoreVolume resumes from its cursor and every snapshot reads back as the generation's image", async () => {
    const r = await runLocalRestore({
      input: input("restore-wf-1"),
      // 4 blocks per checkpoint, and no time at all before returning the cursor: every invocation
      // writes one batch, returns `done: false`, and the workflow invokes it again.
      deps: deps({ batchBlocks: 4, budgetMs: 0 }),
    });
    expect(r.status, `${r.error}: ${r.cause}`).toBe("SUCCEEDED");
    const out = r.output as {
      status: string;
      generation: number;
      snapshots: { volumeId: string; snapshotId: string; status: string }[];
    };
    expect(out).toMatchObject({ status: "restored", generation: 2 });
    expect(out.snapshots.map((s) => s.volumeId).sort()).toEqual(["vol-a", "vol-b"]);
    expect(r.invocations.RestoreVolume).toBeGreaterThan(2 * 2);
    for (const s of out.snapshots) {
      expect(s.status).toBe("completed");
      expect(await compare(s.snapshotId, 2, s.volumeId)).toEqual([]);
      const tags = Object.fromEntries(emu.describeSnapshot(s.snapshotId)!.tags.map((t) => [t.Key, t.Value]));
      expect(tags).toMatchObject({
        [RESTORE_TAGS.restoreId]: "restore-wf-1",
        [RESTORE_TAGS.volume]: s.volumeId,
      });
    }
    // One snapshot per volume: every resumed invocation got the same snapshot back.
    const mine = emu
      .listSnapshots()
      .filter((d) => d.tags.some((t) => t.Key === RESTORE_TAGS.restoreId && t.Value === "restore-wf-1"));
    expect(mine).toHaveLength(2);
  });

  it("GIVEN an earlier generation and one volume WHEN restored through the workflow THEN only that volume, as that generation", async () => {
    const r = await runLocalRestore({
      input: input("restore-wf-2", { generation: 1, volumes: ["vol-b"] }),
      deps: deps(),
    });
    expect(r.status, `${r.error}: ${r.cause}`).toBe("SUCCEEDED");
    const out = r.output as { generation: number; snapshots: { volumeId: string; snapshotId: string }[] };
    expect(out.generation).toBe(1);
    expect(out.snapshots.map((s) => s.volumeId)).toEqual(["vol-b"]);
    expect(await compare(out.snapshots[0]!.snapshotId, 1, "vol-b")).toEqual([]);
  });

  it("GIVEN a volume step that fails for one volume after it has written blocks WHEN the workflow restores THEN the execution fails with the cause and no snapshot of the restore is left", async () => {
    const before = emu.listSnapshots().length;
    let resumedB = 0;
    const r = await runLocalRestore({
      input: input("restore-wf-3"),
      deps: deps({ batchBlocks: 4, budgetMs: 0 }),
      wrap: (state, fn) =>
        state !== "RestoreVolume"
          ? fn
          : async (event) => {
              const e = event as { volumeId: string; resume: unknown };
              if (e.volumeId === "vol-b" && e.resume !== null && ++resumedB === 2) {
                const error = new Error("injected: vol-b cannot be written");
                error.name = "AccessDeniedException";
                throw error;
              }
              return fn(event);
            },
    });
    expect(r.status).toBe("FAILED");
    expect(r.error).toBe("AccessDeniedException");
    expect(r.cause).toMatch(
      /restore restore-wf-3 failed \(.*vol-b cannot be written.*\); deleted the \d snapshot/,
    );
    expect(r.invocations.CleanupRestore).toBe(1);
    const left = emu
      .listSnapshots()
      .filter((d) => d.tags.some((t) => t.Key === RESTORE_TAGS.restoreId && t.Value === "restore-wf-3"));
    expect(left).toEqual([]);
    expect(emu.listSnapshots().length).toBe(before);
  });

  it("GIVEN a generation that does not exist WHEN the workflow runs THEN it fails before writing, naming the generation", async () => {
    const r = await runLocalRestore({ input: input("restore-wf-4", { generation: 9 }), deps: deps() });
    expect(r.status).toBe("FAILED");
    expect(r.cause).toMatch(/generation 9|9/);
    expect(r.cause).toMatch(/it had created no snapshot/);
  });

  it("GIVEN a volume step that fails transiently after writing a batch WHEN the state machine retries it THEN the retry continues from the last returned cursor and the snapshot reads back right", async () => {
    let failed = 0;
    const r = await runLocalRestore({
      input: input("restore-wf-5", { volumes: ["vol-a"] }),
      deps: deps({ batchBlocks: 4, budgetMs: 0 }),
      wrap: (state, fn) =>
        state !== "RestoreVolume"
          ? fn
          : async (event) => {
              const out = await fn(event); // the blocks are written, then the invocation is lost
              if ((event as { resume: unknown }).resume !== null && failed++ === 0) {
                throw new TransientError("injected: the response was lost");
              }
              return out;
            },
    });
    expect(r.status, `${r.error}: ${r.cause}`).toBe("SUCCEEDED");
    expect(failed).toBeGreaterThan(1);
    const out = r.output as { snapshots: { volumeId: string; snapshotId: string }[] };
    expect(out.snapshots).toHaveLength(1);
    expect(await compare(out.snapshots[0]!.snapshotId, 2, "vol-a")).toEqual([]);
  });

  it("GIVEN the same volume step invoked twice at once (a duplicate delivery) THEN both get the same snapshot and continuing from either cursor completes it with the generation's image", async () => {
    const handler = makeHandler(() => deps({ batchBlocks: 4, budgetMs: 0 }));
    // PrepareRestore takes the restore's read lease; volume steps renew it.
    await handler({ op: "prepare", ...input("restore-wf-6", { generation: 2, volumes: ["vol-b"] }) });
    const event = {
      op: "volume",
      config: g.config,
      restoreId: "restore-wf-6",
      generation: 2,
      volumeId: "vol-b",
      parent: null,
      resume: null,
    };
    const [a, b] = (await Promise.all([handler(event), handler(event)])) as {
      done: boolean;
      state: { snapshotId: string };
    }[];
    expect(a!.state.snapshotId).toBe(b!.state.snapshotId);
    let step = a!;
    for (let i = 0; !step.done && i < 100; i++) {
      step = (await handler({ ...event, resume: step.state })) as typeof step;
    }
    expect(step.done).toBe(true);
    expect(await compare(step.state.snapshotId, 2, "vol-b")).toEqual([]);
    const mine = emu
      .listSnapshots()
      .filter((d) => d.tags.some((t) => t.Key === RESTORE_TAGS.restoreId && t.Value === "restore-wf-6"));
    expect(mine).toHaveLength(1);
  });
});
