/**
 * In-memory TaskDeps for handler tests: a versioned memory object store per bucket, an in-memory
 * EBS snapshot port (snapshots complete on the second DescribeSnapshots), a recording freeze port,
 * a controllable clock, silent logs and recorded metrics. No network.
 */
import { MemoryObjectStore, type MemoryObjectStoreOptions } from "#adapters/memory-store.ts";
import type { BlockSource } from "#core/ports/block-source.ts";
import type {
  FreezePort,
  FreezeTarget,
  SnapshotLabels,
  SnapshotPort,
  SnapshotRef,
  SnapshotStatus,
  TaggedSnapshot,
} from "#core/protocol/snapshot-group.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";

export class MemorySnapshotPort implements SnapshotPort {
  readonly snaps = new Map<
    string,
    { -readonly [K in keyof TaggedSnapshot]: TaggedSnapshot[K] } & { describes: number }
  >();
  #next = 1;
  #make(volumeId: string, labels: SnapshotLabels): SnapshotRef {
    const snapshotId = `snap-${String(this.#next++).padStart(17, "0")}`;
    this.snaps.set(snapshotId, { snapshotId, volumeId, ...labels, state: "pending", describes: 0 });
    return { volumeId, snapshotId };
  }
  async createInstanceSnapshots(_i: string, volumeIds: readonly string[], labels: SnapshotLabels) {
    return volumeIds.map((v) => this.#make(v, labels));
  }
  async createVolumeSnapshot(volumeId: string, labels: SnapshotLabels) {
    return this.#make(volumeId, labels);
  }
  async describeSnapshots(ids: readonly string[]): Promise<SnapshotStatus[]> {
    return ids.flatMap((id) => {
      const s = this.snaps.get(id);
      if (!s) return [];
      s.describes += 1;
      if (s.describes >= 2 && s.state === "pending") s.state = "completed";
      return [{ snapshotId: id, volumeId: s.volumeId, state: s.state }];
    });
  }
  async findSnapshots(group: string, runId?: string) {
    return [...this.snaps.values()].filter(
      (s) => s.group === group && (runId === undefined || s.runId === runId),
    );
  }
  async deleteSnapshot(id: string) {
    this.snaps.delete(id);
  }
}

export class RecordingFreeze implements FreezePort {
  readonly log: string[] = [];
  async freeze(targets: readonly FreezeTarget[]) {
    this.log.push(`freeze ${targets.map((t) => t.instanceId).join(",")}`);
  }
  async thaw(targets: readonly FreezeTarget[]) {
    this.log.push(`thaw ${targets.map((t) => t.instanceId).join(",")}`);
  }
}

export interface MemoryDeps extends TaskDeps {
  readonly stores: Map<string, MemoryObjectStore>;
  readonly snapshotPort: MemorySnapshotPort;
  readonly freezePort: RecordingFreeze;
  readonly recordedMetrics: { group: string; name: string; value: number }[];
  readonly errors: string[];
  setTime(ms: number): void;
}

/** @param storeOptions of every bucket's store (its Object Lock clock is the deps' clock). */
export function memoryDeps(source: BlockSource, storeOptions: MemoryObjectStoreOptions = {}): MemoryDeps {
  const stores = new Map<string, MemoryObjectStore>();
  const snapshotPort = new MemorySnapshotPort();
  const freezePort = new RecordingFreeze();
  const recordedMetrics: { group: string; name: string; value: number }[] = [];
  const errors: string[] = [];
  // Wall-clock time by default: core's commit checks the lock lease against the real clock.
  let now: number | undefined;
  return {
    stores,
    snapshotPort,
    freezePort,
    recordedMetrics,
    errors,
    setTime: (ms) => {
      now = ms;
    },
    store(bucket) {
      let s = stores.get(bucket);
      if (!s) {
        s = new MemoryObjectStore({ now: () => now ?? Date.now(), ...storeOptions });
        stores.set(bucket, s);
      }
      return s;
    },
    blockSource: () => source,
    snapshots: () => snapshotPort,
    freeze: () => freezePort,
    clock: { now: () => now ?? Date.now() },
    log: { info: () => {}, warn: () => {}, error: (m, e) => errors.push(`${m} ${JSON.stringify(e)}`) },
    metrics: {
      add: (group, name, _unit, value) => recordedMetrics.push({ group, name, value }),
      flush: () => {},
    },
  };
}
