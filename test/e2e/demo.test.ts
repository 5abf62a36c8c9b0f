import { describe, expect, it } from "vitest";
import { runDemo } from "#local/demo.ts";

describe("cgmirror demo", () => {
  it("GIVEN the embedded stack WHEN the demo runs THEN two generations commit, the failed run reverts, and every restore is exact with the invariant holding", async () => {
    const report = await runDemo();
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.backups.map((b) => b.outcome)).toEqual(["committed", "committed", "reverted"]);
    expect(report.headAfterFailure).toBe(2);
    expect(report.restores.map((r) => [r.generation, r.volumesIdentical, r.invariantOk, r.verifyOk])).toEqual(
      [
        [1, 3, true, true],
        [2, 3, true, true],
      ],
    );
    expect(report.restores.every((r) => r.dataRecords > 0)).toBe(true);
    // The last generation restored into EBS snapshots, then generation 1 incrementally on a known one.
    expect(report.snapshotRestores.map((r) => [r.generation, r.volumesIdentical, r.volumes])).toEqual([
      [2, 3, 3],
      [1, 3, 3],
    ]);
    expect(Object.keys(report.snapshotRestores[1]!.parents)).toHaveLength(3);
  });
});
