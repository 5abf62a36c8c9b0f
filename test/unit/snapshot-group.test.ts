/** core/protocol/snapshot-group.ts against in-memory fakes of the snapshot and freeze ports. */
import { describe, expect, it } from "vitest";
import { parseGroupConfig } from "#core/config/group-config.ts";
import {
  checkSnapshots,
  deleteRunSnapshots,
  type FreezePort,
  type FreezeTarget,
  type InstanceSnapshotPlan,
  MAX_POLL_SECONDS,
  MIN_POLL_SECONDS,
  nextPollSeconds,
  pruneBaseSnapshots,
  SnapshotFailedError,
  type SnapshotLabels,
  type SnapshotPort,
  type SnapshotRef,
  type SnapshotState,
  snapshotGroup,
  type TaggedSnapshot,
} from "#core/protocol/snapshot-group.ts";

class FakeClock {
  t = Date.parse("2026-01-01T00:00:00.000Z");
  now = () => this.t;
}

class MemorySnapshots implements SnapshotPort {
  readonly snaps = new Map<string, TaggedSnapshot>();
  readonly log: string[] = [];
  failInstance = new Set<string>();
  next = 1;
  readonly clock: FakeClock;
  constructor(clock: FakeClock) {
    this.clock = clock;
  }

  #make(volumeId: string, labels: SnapshotLabels): SnapshotRef {
    const snapshotId = `snap-${String(this.next++).padStart(17, "0")}`;
    this.snaps.set(snapshotId, { snapshotId, volumeId, ...labels, state: "pending" });
    return { volumeId, snapshotId };
  }
  async createInstanceSnapshots(instanceId: string, volumeIds: readonly string[], labels: SnapshotLabels) {
    this.log.push(`create ${instanceId} @${this.clock.t}`);
    this.clock.t += 100;
    if (this.failInstance.has(instanceId))
      throw new Error(`SnapshotCreationPerVolumeRateExceeded on ${instanceId}`);
    return volumeIds.map((v) => this.#make(v, labels));
  }
  async createVolumeSnapshot(volumeId: string, labels: SnapshotLabels) {
    this.log.push(`create ${volumeId} @${this.clock.t}`);
    return this.#make(volumeId, labels);
  }
  async describeSnapshots(ids: readonly string[]) {
    return ids.flatMap((id) => {
      const s = this.snaps.get(id);
      return s ? [{ snapshotId: id, volumeId: s.volumeId, state: s.state }] : [];
    });
  }
  async findSnapshots(group: string, runId?: string) {
    return [...this.snaps.values()].filter(
      (s) => s.group === group && (runId === undefined || s.runId === runId),
    );
  }
  async deleteSnapshot(id: string) {
    this.log.push(`delete ${id}`);
    this.snaps.delete(id);
  }
  setState(state: SnapshotState) {
    for (const [id, s] of this.snaps) this.snaps.set(id, { ...s, state });
  }
}

class FakeFreeze implements FreezePort {
  readonly log: string[] = [];
  failFreeze = false;
  failThaw = false;
  freezeMs = 50;
  readonly clock: FakeClock;
  constructor(clock: FakeClock) {
    this.clock = clock;
  }
  async freeze(targets: readonly FreezeTarget[], maxSeconds: number) {
    this.log.push(
      `freeze ${targets.map((t) => `${t.instanceId}:${t.mountPoints.join(",")}`).join(" ")} max=${maxSeconds}`,
    );
    this.clock.t += this.freezeMs;
    if (this.failFreeze)
      throw new Error("i-0123456789abcdef1 ended Failed: fsfreeze: /log: Operation not supported");
  }
  async thaw(targets: readonly FreezeTarget[]) {
    this.log.push(`thaw ${targets.map((t) => t.instanceId).join(" ")}`);
    this.clock.t += 50;
    if (this.failThaw) throw new Error("thaw failed on 1 of 2 instance(s)");
  }
}

const config = parseGroupConfig({
  group: "orders",
  volumes: [
    { id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0", mountPoint: "/data" },
    { id: "vol-0123456789abcdef1", instanceId: "i-0123456789abcdef0", mountPoint: "/wal" },
    { id: "vol-0123456789abcdef2", instanceId: "i-0123456789abcdef1", mountPoint: "/log" },
    { id: "vol-0123456789abcdef3" },
  ],
  target: { bucket: "my-backups" },
  schedule: { expression: "rate(1 hour)" },
  freeze: { enabled: true, maxCoordinationSeconds: 5 },
});
const labels = { group: "orders", generation: 5, runId: "run-1" };

function setup() {
  const clock = new FakeClock();
  const snapshots = new MemorySnapshots(clock);
  const freeze = new FakeFreeze(clock);
  return { clock, snapshots, freeze, deps: { snapshots, freeze, clock } };
}

describe("snapshotGroup", () => {
  it("GIVEN freeze on WHEN the group is snapshotted THEN it freezes all, initiates one request per instance and per detached volume, thaws, and measures", async () => {
    const { snapshots, freeze, deps } = setup();
    const result = await snapshotGroup(config, labels, deps);
    expect(freeze.log).toEqual([
      "freeze i-0123456789abcdef0:/data,/wal i-0123456789abcdef1:/log max=5",
      "thaw i-0123456789abcdef0 i-0123456789abcdef1",
    ]);
    expect(snapshots.log.filter((l) => l.startsWith("create")).map((l) => l.split(" @")[0])).toEqual([
      "create i-0123456789abcdef0",
      "create i-0123456789abcdef1",
      "create vol-0123456789abcdef3",
    ]);
    expect(result.snapshots.map((s) => s.volumeId)).toEqual(config.volumes.map((v) => v.id));
    expect(result.frozen).toBe(true);
    // 50 freeze + 2 x 100 instance requests + 50 thaw on the fake clock.
    expect(result.coordinationMs).toBe(300);
    expect(result.startedAt).toBe("2026-01-01T00:00:00.000Z");
    expect([...snapshots.snaps.values()].every((s) => s.runId === "run-1" && s.generation === 5)).toBe(true);
  });

  it("GIVEN freeze off WHEN snapshotted THEN nothing is frozen", async () => {
    const { freeze, deps } = setup();
    const result = await snapshotGroup(
      { ...config, freeze: { enabled: false, maxCoordinationSeconds: 5 } },
      labels,
      deps,
    );
    expect(freeze.log).toEqual([]);
    expect(result.frozen).toBe(false);
  });

  it("fails with FreezeFailedError and takes no snapshot when an instance cannot freeze", async () => {
    const { snapshots, freeze, deps } = setup();
    freeze.failFreeze = true;
    await expect(snapshotGroup(config, labels, deps)).rejects.toMatchObject({
      name: "FreezeFailedError",
      message: expect.stringContaining("Operation not supported"),
    });
    expect(snapshots.snaps.size).toBe(0);
  });

  it("fails with SnapshotFailedError, still thaws, and deletes the snapshots that were created", async () => {
    const { snapshots, freeze, deps } = setup();
    snapshots.failInstance.add("i-0123456789abcdef1");
    await expect(snapshotGroup(config, labels, deps)).rejects.toMatchObject({
      name: "SnapshotFailedError",
      message: expect.stringContaining("1 of 3 snapshot request(s) failed"),
    });
    expect(freeze.log.at(-1)).toMatch(/^thaw/);
    expect(snapshots.snaps.size).toBe(0);
  });

  it("fails with FreezeFailedError when the thaw fails, deleting the snapshots", async () => {
    const { snapshots, freeze, deps } = setup();
    freeze.failThaw = true;
    await expect(snapshotGroup(config, labels, deps)).rejects.toMatchObject({ name: "FreezeFailedError" });
    expect(snapshots.snaps.size).toBe(0);
  });

  it("fails when the freeze outlasted maxCoordinationSeconds (the safety net may have thawed too early)", async () => {
    const { snapshots, freeze, deps } = setup();
    freeze.freezeMs = 6000;
    await expect(snapshotGroup(config, labels, deps)).rejects.toMatchObject({
      name: "FreezeFailedError",
      message: expect.stringContaining("longer than freeze.maxCoordinationSeconds"),
    });
    expect(snapshots.snaps.size).toBe(0);
  });

  it("GIVEN a retried attempt of the same run WHEN every snapshot exists THEN they are reused, not re-created", async () => {
    const { snapshots, freeze, deps } = setup();
    const first = await snapshotGroup(config, labels, deps);
    const again = await snapshotGroup(config, labels, deps);
    expect(again.snapshots).toEqual(first.snapshots);
    expect(again.reused).toBe(true);
    expect(snapshots.snaps.size).toBe(4);
    expect(freeze.log).toHaveLength(2);
  });

  it("GIVEN a retried attempt WHEN an earlier attempt left an incomplete set THEN it is deleted and the group re-taken", async () => {
    const { snapshots, deps } = setup();
    await snapshots.createVolumeSnapshot("vol-0123456789abcdef3", labels);
    const result = await snapshotGroup(config, labels, deps);
    expect(result.reused).toBe(false);
    expect(snapshots.snaps.size).toBe(4);
    expect(snapshots.log).toContain("delete snap-00000000000000001");
  });
});

/** A port that plans like the EC2 adapter: `extra` non-group data volumes attached per instance. */
class PlanningSnapshots extends MemorySnapshots {
  readonly extra = new Map<string, number>();
  readonly shared: string[];
  constructor(clock: FakeClock, shared: string[]) {
    super(clock);
    this.shared = shared;
  }
  async planInstanceSnapshots(
    instanceId: string,
    volumeIds: readonly string[],
  ): Promise<InstanceSnapshotPlan> {
    this.shared.push(`plan ${instanceId}`);
    const n = this.extra.get(instanceId) ?? 0;
    return {
      instanceId,
      volumeIds,
      excludeBootVolume: true,
      excludeDataVolumeIds: Array.from({ length: n }, (_, i) => `vol-${String(i).padStart(17, "e")}`),
    };
  }
  override async createInstanceSnapshots(
    instanceId: string,
    volumeIds: readonly string[],
    labels: SnapshotLabels,
    plan?: InstanceSnapshotPlan,
  ) {
    this.shared.push(`createInstance ${instanceId} planned=${plan?.instanceId === instanceId}`);
    return super.createInstanceSnapshots(instanceId, volumeIds, labels);
  }
  override async createVolumeSnapshot(volumeId: string, labels: SnapshotLabels) {
    this.shared.push(`createVolume ${volumeId}`);
    return super.createVolumeSnapshot(volumeId, labels);
  }
}

function planningSetup() {
  const clock = new FakeClock();
  const freeze = new FakeFreeze(clock);
  const snapshots = new PlanningSnapshots(clock, freeze.log);
  return { snapshots, freeze, deps: { snapshots, freeze, clock } };
}

const shortLog = (log: string[]) => log.map((l) => l.split(" ").slice(0, 2).join(" "));

describe("snapshotGroup: instance lookups and the 40-volume exclusion limit", () => {
  it("GIVEN instances WHEN snapshotted with freeze THEN every instance is described before the freeze window, and its plan is used inside it", async () => {
    const { freeze, deps } = planningSetup();
    await snapshotGroup(config, labels, deps);
    expect(shortLog(freeze.log)).toEqual([
      "plan i-0123456789abcdef0",
      "plan i-0123456789abcdef1",
      "freeze i-0123456789abcdef0:/data,/wal",
      "createInstance i-0123456789abcdef0",
      "createInstance i-0123456789abcdef1",
      "createVolume vol-0123456789abcdef3",
      "thaw i-0123456789abcdef0",
    ]);
    expect(
      freeze.log.filter((l) => l.startsWith("createInstance")).every((l) => l.endsWith("planned=true")),
    ).toBe(true);
  });

  it("GIVEN an instance with 41 other data volumes and freeze on THEN its group volumes are snapshotted one by one inside the freeze window", async () => {
    const { snapshots, freeze, deps } = planningSetup();
    snapshots.extra.set("i-0123456789abcdef0", 41);
    const result = await snapshotGroup(config, labels, deps);
    expect(shortLog(freeze.log).slice(2)).toEqual([
      "freeze i-0123456789abcdef0:/data,/wal",
      "createVolume vol-0123456789abcdef0",
      "createVolume vol-0123456789abcdef1",
      "createInstance i-0123456789abcdef1",
      "createVolume vol-0123456789abcdef3",
      "thaw i-0123456789abcdef0",
    ]);
    expect(result.snapshots.map((s) => s.volumeId)).toEqual(config.volumes.map((v) => v.id));
  });

  it("GIVEN an instance with 41 other data volumes and one group volume THEN CreateSnapshot of that volume, without freeze too", async () => {
    const { snapshots, freeze, deps } = planningSetup();
    snapshots.extra.set("i-0123456789abcdef1", 45);
    await snapshotGroup({ ...config, freeze: { enabled: false, maxCoordinationSeconds: 5 } }, labels, deps);
    expect(freeze.log).toContain("createVolume vol-0123456789abcdef2");
    expect(freeze.log.some((l) => l.startsWith("createInstance i-0123456789abcdef1"))).toBe(false);
  });

  it("fails before freezing or snapshotting anything when several group volumes share an instance with more than 40 other data volumes and freeze is off", async () => {
    const { snapshots, freeze, deps } = planningSetup();
    snapshots.extra.set("i-0123456789abcdef0", 41);
    const off = { ...config, freeze: { enabled: false, maxCoordinationSeconds: 5 } };
    const error = await snapshotGroup(off, labels, deps).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SnapshotFailedError);
    expect((error as Error).message).toMatch(
      /instance i-0123456789abcdef0 has 41 attached data volumes outside the group; CreateSnapshots can exclude at most 40.*Enable freeze/,
    );
    expect(freeze.log.filter((l) => !l.startsWith("plan"))).toEqual([]);
    expect(snapshots.snaps.size).toBe(0);
  });

  it("GIVEN exactly 40 other data volumes THEN one CreateSnapshots request excludes them all", async () => {
    const { snapshots, freeze, deps } = planningSetup();
    snapshots.extra.set("i-0123456789abcdef0", 40);
    await snapshotGroup(config, labels, deps);
    expect(freeze.log).toContain("createInstance i-0123456789abcdef0 planned=true");
  });
});

describe("nextPollSeconds", () => {
  it("GIVEN a wait of days THEN the checks back off from 15 s to 15 min and stay far below 25,000 history events", () => {
    let waited = 0;
    let checks = 0;
    const days = 7;
    while (waited < days * 86_400_000) {
      waited += nextPollSeconds(waited, days * 86_400_000 - waited) * 1000;
      checks++;
    }
    expect(nextPollSeconds(0, 3_600_000)).toBe(MIN_POLL_SECONDS);
    expect(nextPollSeconds(86_400_000, 86_400_000)).toBe(MAX_POLL_SECONDS);
    // A Task, a Choice and a Wait per check: 9 history events each.
    expect(checks * 9).toBeLessThan(7_000);
  });

  it("GIVEN the timeout is near THEN the next check comes just after it, not a whole backoff later", () => {
    expect(nextPollSeconds(86_400_000, 30_000)).toBe(31);
  });
});

describe("checkSnapshots", () => {
  it("GIVEN pending snapshots within the timeout THEN not all completed", async () => {
    const { snapshots, clock, deps } = setup();
    const { snapshots: refs, startedAt } = await snapshotGroup(config, labels, deps);
    clock.t += 60_000;
    expect(await checkSnapshots(refs, startedAt, 10, { snapshots, clock })).toEqual({
      allCompleted: false,
      completed: 0,
      pending: 4,
      waitSeconds: 15,
    });
    snapshots.setState("completed");
    expect((await checkSnapshots(refs, startedAt, 10, { snapshots, clock })).allCompleted).toBe(true);
  });

  it("fails with SnapshotTimeoutError after the completion timeout", async () => {
    const { snapshots, clock, deps } = setup();
    const { snapshots: refs, startedAt } = await snapshotGroup(config, labels, deps);
    clock.t += 11 * 60_000;
    await expect(checkSnapshots(refs, startedAt, 10, { snapshots, clock })).rejects.toMatchObject({
      name: "SnapshotTimeoutError",
    });
  });

  it("fails with SnapshotFailedError when a snapshot is in state error or gone", async () => {
    const { snapshots, clock, deps } = setup();
    const { snapshots: refs, startedAt } = await snapshotGroup(config, labels, deps);
    snapshots.setState("error");
    await expect(checkSnapshots(refs, startedAt, 10, { snapshots, clock })).rejects.toMatchObject({
      name: "SnapshotFailedError",
    });
    await snapshots.deleteSnapshot(refs[0]?.snapshotId as string);
    await expect(checkSnapshots(refs, startedAt, 10, { snapshots, clock })).rejects.toThrow(
      /no longer exist/,
    );
  });
});

describe("deleteRunSnapshots and pruneBaseSnapshots", () => {
  it("GIVEN two runs WHEN one is reverted THEN only its snapshots are deleted", async () => {
    const { snapshots, deps } = setup();
    await snapshotGroup(config, labels, deps);
    await snapshotGroup(config, { ...labels, generation: 6, runId: "run-2" }, deps);
    expect(await deleteRunSnapshots("orders", "run-2", snapshots)).toBe(4);
    expect([...snapshots.snaps.values()].every((s) => s.runId === "run-1")).toBe(true);
  });

  it("GIVEN generations 1..4 and an in-flight 5 WHEN pruned to keep 2 after committing 4 THEN 1 and 2 go, 3, 4 and 5 stay", async () => {
    const { snapshots, deps } = setup();
    for (let g = 1; g <= 5; g++)
      await snapshotGroup(config, { ...labels, generation: g, runId: `run-${g}` }, deps);
    const deleted = await pruneBaseSnapshots("orders", 4, 2, snapshots);
    expect(deleted).toHaveLength(8);
    expect(new Set([...snapshots.snaps.values()].map((s) => s.generation))).toEqual(new Set([3, 4, 5]));
  });
});
