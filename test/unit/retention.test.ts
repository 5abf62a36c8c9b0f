/** The retention policy (core/lifecycle/retention.ts): restic/DLM semantics, pure. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  applyRetention,
  parseRetentionDuration,
  type RetentionCandidate,
} from "#core/lifecycle/retention.ts";

/** Generations every `hours` hours, the newest at `end`. */
function hourly(count: number, hours: number, end = "2026-11-22T03:00:00Z"): RetentionCandidate[] {
  const t = Date.parse(end);
  return Array.from({ length: count }, (_, i) => ({
    generation: i + 1,
    pointInTime: new Date(t - (count - 1 - i) * hours * 3_600_000).toISOString(),
  }));
}

const kept = (d: ReturnType<typeof applyRetention>) =>
  d
    .filter((x) => x.keep)
    .map((x) => x.generation)
    .sort((a, b) => a - b);

describe("applyRetention", () => {
  it("GIVEN keepLast 3 THEN the three newest stay and HEAD is named", () => {
    const d = applyRetention(hourly(10, 1), { keepLast: 3 }, 10);
    expect(kept(d)).toEqual([8, 9, 10]);
    expect(d[0]).toMatchObject({ generation: 10, reasons: ["head", "last"] });
  });

  it("GIVEN hourly generations over four days WHEN keepDaily 3 THEN the newest of each of the three newest days stays", () => {
    const d = applyRetention(hourly(96, 1), { keepDaily: 3 }, 96);
    const days = d.filter((x) => x.reasons.includes("daily")).map((x) => x.pointInTime.slice(0, 13));
    expect(days).toEqual(["2026-11-22T03", "2026-11-21T23", "2026-11-20T23"]);
  });

  it("GIVEN daily generations WHEN keepWeekly 2 and keepMonthly 2 THEN ISO weeks and months bucket them", () => {
    const d = applyRetention(hourly(70, 24), { keepWeekly: 2, keepMonthly: 2 }, 70);
    const weekly = d.filter((x) => x.reasons.includes("weekly")).map((x) => x.pointInTime.slice(0, 10));
    // 2026-11-22 is a Sunday: its ISO week started on Monday 2026-11-16.
    expect(weekly).toEqual(["2026-11-22", "2026-11-15"]);
    const monthly = d.filter((x) => x.reasons.includes("monthly")).map((x) => x.pointInTime.slice(0, 10));
    expect(monthly).toEqual(["2026-11-22", "2026-10-31"]);
  });

  it("GIVEN keepWithin 2d THEN it counts back from the newest generation, not from now", () => {
    const d = applyRetention(hourly(10, 12, "2020-01-10T00:00:00Z"), { keepWithin: "2d" }, 10);
    expect(kept(d)).toEqual([6, 7, 8, 9, 10]);
    expect(d.find((x) => x.generation === 6)?.reasons).toEqual(["within"]);
  });

  it("GIVEN a time zone THEN daily buckets follow its calendar", () => {
    // 23:30 UTC on Nov 21 is already Nov 22 in Berlin: the two generations share a Berlin day.
    const c = [
      { generation: 1, pointInTime: "2026-11-21T23:30:00Z" },
      { generation: 2, pointInTime: "2026-11-22T08:00:00Z" },
    ];
    expect(kept(applyRetention(c, { keepDaily: 5 }, undefined))).toEqual([1, 2]);
    expect(kept(applyRetention(c, { keepDaily: 5, timezone: "Europe/Berlin" }, undefined))).toEqual([2]);
  });

  it("GIVEN any policy THEN HEAD is kept, keepLast n keeps at least n, and a kept generation has a reason", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 60 }),
        fc.integer({ min: 1, max: 30 }),
        fc.record({
          keepLast: fc.option(fc.integer({ min: 1, max: 10 }), { nil: undefined }),
          keepHourly: fc.option(fc.integer({ min: 1, max: 10 }), { nil: undefined }),
          keepDaily: fc.option(fc.integer({ min: 1, max: 10 }), { nil: undefined }),
          keepWeekly: fc.option(fc.integer({ min: 1, max: 10 }), { nil: undefined }),
        }),
        (count, hours, policy) => {
          const d = applyRetention(hourly(count, hours), policy, count);
          expect(d.find((x) => x.generation === count)?.keep).toBe(true);
          if (policy.keepLast)
            expect(kept(d).length).toBeGreaterThanOrEqual(Math.min(count, policy.keepLast));
          for (const x of d) expect(x.keep).toBe(x.reasons.length > 0);
        },
      ),
      { seed: 12, numRuns: 200 },
    );
  });

  it("fails on a malformed keepWithin duration", () => {
    expect(() => parseRetentionDuration("7 days")).toThrow(/expected a duration/);
    expect(() => parseRetentionDuration("")).toThrow(/expected a duration/);
    expect(parseRetentionDuration("1y6m2w3d4h")).toEqual({
      years: 1,
      months: 6,
      weeks: 2,
      days: 3,
      hours: 4,
    });
  });
});
