import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VolumeSimulator } from "#local/volumes/simulator.ts";
import { checkInvariant, WalWorkload } from "#local/workload.ts";

let dir: string;
let sim: VolumeSimulator;
let workload: WalWorkload;
const layout = { logVolume: "vol-log", dataVolumes: ["vol-d1", "vol-d2"], dataBlocks: 8 };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "cgm-wal-"));
  sim = new VolumeSimulator({ stateDir: dir });
  for (const id of [layout.logVolume, ...layout.dataVolumes]) await sim.create({ id, sizeGiB: 1 });
  workload = new WalWorkload(sim, layout);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function images(tag: string): Promise<string[]> {
  const out = [];
  for (const id of [layout.logVolume, ...layout.dataVolumes]) {
    const path = join(dir, `${tag}-${id}.img`);
    await sim.exportImage(id, path);
    out.push(path);
  }
  return out;
}

describe("write-ahead workload invariant", () => {
  it("GIVEN images of all volumes at one moment THEN every data record is named by the log", async () => {
    const w = workload;
    for (let i = 0; i < 20; i++) await w.writeRecord();
    const [log, ...data] = await images("same");
    const report = await checkInvariant(log!, data, layout.dataBlocks);
    expect(report.ok).toBe(true);
    expect(report.logRecords).toBe(20);
    expect(report.dataRecords).toBeGreaterThan(0);
  });

  it("fails when the log image is older than the data images (no consistency group)", async () => {
    const w = workload;
    const [oldLog] = await images("old");
    for (let i = 0; i < 5; i++) await w.writeRecord();
    const [, ...newData] = await images("new");
    const report = await checkInvariant(oldLog!, newData, layout.dataBlocks);
    expect(report.ok).toBe(false);
    expect(report.problems.join("\n")).toMatch(/does not (have|match)/);
  });
});
