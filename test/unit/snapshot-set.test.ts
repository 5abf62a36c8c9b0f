/** Which recorded snapshot set the next run adopts (core/protocol/snapshot-set.ts; docs/format.md §8.1). */
import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { createRepo } from "#core/format/layout.ts";
import type { SnapshotStatus } from "#core/protocol/snapshot-group.ts";
import {
  deleteSnapshotSet,
  judgeSnapshotSet,
  readSnapshotSet,
  type SnapshotSet,
  writeSnapshotSet,
} from "#core/protocol/snapshot-set.ts";

const set: SnapshotSet = {
  group: "orders",
  runId: "run-1",
  fencing: 3,
  generation: 5,
  startedAt: "2026-01-01T00:00:00.000Z",
  coordinationMs: 12,
  frozen: true,
  snapshots: [
    { volumeId: "vol-b", snapshotId: "snap-b" },
    { volumeId: "vol-a", snapshotId: "snap-a" },
  ],
  recordedAt: "2026-01-01T00:00:01.000Z",
};
const run = { group: "orders", generation: 5, volumeIds: ["vol-a", "vol-b"] };
const port = (states: Record<string, SnapshotStatus["state"]>) => ({
  describeSnapshots: async (ids: readonly string[]) =>
    ids.flatMap((id) => (states[id] ? [{ snapshotId: id, volumeId: "?", state: states[id] }] : [])),
});

describe("judgeSnapshotSet", () => {
  it("GIVEN a pending set of this generation and volumes THEN it is adopted, in config order", async () => {
    expect(await judgeSnapshotSet(set, run, port({ "snap-a": "pending", "snap-b": "completed" }))).toEqual({
      kind: "adopt",
      snapshots: [
        { volumeId: "vol-a", snapshotId: "snap-a" },
        { volumeId: "vol-b", snapshotId: "snap-b" },
      ],
    });
  });

  it("GIVEN a set of another generation (committed meanwhile) THEN only its record is dropped", async () => {
    const v = await judgeSnapshotSet(set, { ...run, generation: 6 }, port({}));
    expect(v).toMatchObject({ kind: "drop", deleteSnapshots: false });
  });

  it("GIVEN the group's volumes changed, or a snapshot gone or failed THEN the set and its snapshots are dropped", async () => {
    const ok = { "snap-a": "pending", "snap-b": "pending" } as const;
    for (const [r, states] of [
      [{ ...run, volumeIds: ["vol-a", "vol-b", "vol-c"] }, ok],
      [run, { "snap-a": "pending" }],
      [run, { ...ok, "snap-b": "error" }],
    ] as const) {
      expect(await judgeSnapshotSet(set, r, port(states))).toMatchObject({
        kind: "drop",
        deleteSnapshots: true,
      });
    }
  });

  it("GIVEN a record WHEN written, read and deleted THEN it round-trips sealed and is gone with every version", async () => {
    const repo = createRepo({ store: new MemoryObjectStore(), prefix: "p", group: "orders" });
    expect((await readSnapshotSet(repo)).set).toBeUndefined();
    await writeSnapshotSet(repo, set);
    await writeSnapshotSet(repo, set);
    expect((await readSnapshotSet(repo)).set).toEqual(set);
    await deleteSnapshotSet(repo);
    expect((await readSnapshotSet(repo)).set).toBeUndefined();
  });
});
