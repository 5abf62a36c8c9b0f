import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  GroupConfigError,
  groupConfigJsonSchema,
  groupSetProblems,
  MAX_RPO_MINUTES,
  parseGroupConfig,
  rateIntervalSeconds,
} from "#core/config/group-config.ts";

const valid = {
  group: "orders",
  volumes: [
    { id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0", mountPoint: "/data" },
    { id: "vol-0123456789abcdef1", instanceId: "i-0123456789abcdef1", mountPoint: "/log" },
    { id: "vol-01234567" },
  ],
  target: { bucket: "my-backups" },
  schedule: { expression: "rate(1 hour)" },
};

function problemsOf(input: unknown): { path: string; message: string }[] {
  try {
    parseGroupConfig(input, "test.json");
  } catch (error) {
    expect(error).toBeInstanceOf(GroupConfigError);
    return [...(error as GroupConfigError).problems];
  }
  throw new Error("expected parseGroupConfig to throw");
}

describe("parseGroupConfig", () => {
  it("GIVEN a minimal config WHEN parsed THEN defaults are applied", () => {
    const cfg = parseGroupConfig(valid);
    expect(cfg.target.prefix).toBe("groups/orders");
    expect(cfg.prepare.policy).toBe("failFast");
    expect(cfg.freeze).toEqual({ enabled: false, maxCoordinationSeconds: 30 });
    expect(cfg.snapshots.keep).toBe(1);
    expect(cfg.retention).toBeUndefined();
    expect(cfg.prune).toEqual({
      schedule: { expression: "rate(1 day)", timezone: "UTC", enabled: true },
      repackGarbagePercent: 50,
      maxRepackGiB: 16,
    });
    expect(cfg.transfer.maxConcurrency).toBe(100);
    expect(cfg.schedule.timezone).toBe("UTC");
    expect(cfg.alarms.rpoMinutes).toBe(120);
  });

  it("GIVEN JSON text WHEN parsed THEN it is the same as the parsed object", () => {
    expect(parseGroupConfig(JSON.stringify(valid))).toEqual(parseGroupConfig(valid));
  });

  it("GIVEN a parsed config WHEN parsed again THEN it is unchanged (handlers re-validate at run time)", () => {
    const once = parseGroupConfig(valid);
    expect(parseGroupConfig(once)).toEqual(once);
  });

  it("fails with every problem listed, each with path, expectation and received value", () => {
    const problems = problemsOf({
      group: "bad name",
      volumes: [{ id: "volume-1", mountPoint: "/" }, { id: "volume-1" }],
      target: { bucket: "B" },
      schedule: { expression: "every hour" },
      prepare: { policy: "all" },
      extra: 1,
    });
    const paths = problems.map((p) => p.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        "group",
        "volumes[0].id",
        "volumes[0].mountPoint",
        "volumes[0].instanceId",
        "volumes[1].id",
        "target.bucket",
        "schedule.expression",
        "prepare.policy",
        "(root)",
      ]),
    );
    const byPath = (p: string) => problems.filter((x) => x.path === p).map((x) => x.message);
    expect(byPath("group")[0]).toContain('got "bad name"');
    expect(byPath("volumes[0].id")[0]).toMatch(/expected an EBS volume id like "vol-.*, got "volume-1"/);
    expect(byPath("prepare.policy")[0]).toBe('expected one of "failFast", "collectAll", got "all"');
    expect(byPath("(root)")[0]).toContain('unknown key "extra"');
    expect(byPath("schedule.expression")[0]).toContain('got "every hour"');
  });

  it("fails with missing required fields named as missing", () => {
    const problems = problemsOf({});
    expect(problems.map((p) => p.path)).toEqual(["group", "volumes", "target", "schedule"]);
    for (const p of problems) expect(p.message).toContain("missing");
  });

  it("fails on a duplicate volume id", () => {
    const problems = problemsOf({ ...valid, volumes: [valid.volumes[0], valid.volumes[0]] });
    expect(problems).toEqual([
      {
        path: "volumes[1].id",
        message: 'expected each volume once, got "vol-0123456789abcdef0" again (first at volumes[0])',
      },
    ]);
  });

  it("fails when freeze is on and an attached volume has no mount point", () => {
    const problems = problemsOf({
      ...valid,
      volumes: [{ id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0" }],
      freeze: { enabled: true },
    });
    expect(problems.map((p) => p.path)).toEqual(["volumes[0].mountPoint"]);
  });

  it("fails when freezing the root file system", () => {
    const problems = problemsOf({
      ...valid,
      volumes: [{ id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0", mountPoint: "/" }],
    });
    expect(problems[0]?.message).toContain('other than "/"');
  });

  it("fails on mount points that could inject shell syntax", () => {
    const problems = problemsOf({
      ...valid,
      volumes: [
        { id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0", mountPoint: "/d; rm -rf /" },
      ],
    });
    expect(problems.map((p) => p.path)).toEqual(["volumes[0].mountPoint"]);
  });

  it("fails on a cron schedule without an explicit RPO", () => {
    const problems = problemsOf({ ...valid, schedule: { expression: "cron(0 2 * * ? *)" } });
    expect(problems.map((p) => p.path)).toEqual(["alarms.rpoMinutes"]);
    expect(
      parseGroupConfig({
        ...valid,
        schedule: { expression: "cron(0 2 * * ? *)" },
        alarms: { rpoMinutes: 2880 },
      }).alarms.rpoMinutes,
    ).toBe(2880);
  });

  it("fails on text that is not JSON", () => {
    expect(problemsOf("{not json")[0]?.message).toContain("expected JSON text");
  });

  it("GIVEN any rate expression WHEN the RPO is derived THEN it is twice the interval, or a clear error beyond 7 days", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1000 }),
        fc.constantFrom("minutes", "hours", "days"),
        (n, unit) => {
          const expression = `rate(${n} ${unit})`;
          const seconds = rateIntervalSeconds(expression) as number;
          const derived = Math.max(2, Math.ceil((2 * seconds) / 60));
          if (derived <= MAX_RPO_MINUTES) {
            expect(parseGroupConfig({ ...valid, schedule: { expression } }).alarms.rpoMinutes).toBe(derived);
          } else {
            expect(problemsOf({ ...valid, schedule: { expression } }).map((p) => p.path)).toEqual([
              "alarms.rpoMinutes",
            ]);
          }
        },
      ),
    );
  });

  it("fails on a rate(4 days) schedule without an RPO: its default (8 days) is longer than a CloudWatch alarm can span", () => {
    const problems = problemsOf({ ...valid, schedule: { expression: "rate(4 days)" } });
    expect(problems).toEqual([
      {
        path: "alarms.rpoMinutes",
        message: expect.stringContaining("at most 10080 (7 days, the longest span of a CloudWatch alarm)"),
      },
    ]);
    expect(
      parseGroupConfig({ ...valid, schedule: { expression: "rate(4 days)" }, alarms: { rpoMinutes: 10080 } })
        .alarms.rpoMinutes,
    ).toBe(10080);
  });

  it("fails on an RPO above 7 days, or not above the schedule's interval", () => {
    expect(problemsOf({ ...valid, alarms: { rpoMinutes: 10081 } }).map((p) => p.message)).toEqual([
      expect.stringContaining("from 2 to 10080"),
    ]);
    expect(problemsOf({ ...valid, alarms: { rpoMinutes: 60 } }).map((p) => p.message)).toEqual([
      expect.stringContaining("above the schedule's interval (60 minutes"),
    ]);
  });

  it("GIVEN a volume encrypted with a customer-managed key THEN its key ARN is kept; an alias or a bad ARN fails", () => {
    const key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const mrk = "arn:aws:kms:eu-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab";
    const cfg = parseGroupConfig({
      ...valid,
      volumes: [
        { id: "vol-0123456789abcdef0", kmsKeyArn: key },
        { id: "vol-0123456789abcdef1", kmsKeyArn: mrk },
      ],
    });
    expect(cfg.volumes.map((v) => v.kmsKeyArn)).toEqual([key, mrk]);
    const problems = problemsOf({
      ...valid,
      volumes: [
        { id: "vol-0123456789abcdef0", kmsKeyArn: "arn:aws:kms:eu-west-1:123456789012:alias/aws/ebs" },
        { id: "vol-0123456789abcdef1", kmsKeyArn: "1234abcd-12ab-34cd-56ef-1234567890ab" },
      ],
    });
    expect(problems.map((p) => p.path)).toEqual(["volumes[0].kmsKeyArn", "volumes[1].kmsKeyArn"]);
    expect(problems[0]?.message).toContain("a key, not an alias");
  });
});

describe("the snapshot wait and the run timeout", () => {
  it("GIVEN a run timeout shorter than the default snapshot wait THEN the wait ends 5 minutes before the run", () => {
    expect(parseGroupConfig({ ...valid, runTimeoutMinutes: 60 }).snapshots.completionTimeoutMinutes).toBe(55);
    expect(parseGroupConfig(valid).snapshots.completionTimeoutMinutes).toBe(240);
  });

  it("GIVEN a first snapshot that takes days THEN a run may wait up to 7 days", () => {
    const c = parseGroupConfig({
      ...valid,
      runTimeoutMinutes: 10_080,
      snapshots: { completionTimeoutMinutes: 4_320 },
    });
    expect(c.snapshots.completionTimeoutMinutes).toBe(4_320);
  });

  it("fails when an explicit snapshot wait does not end before the run timeout", () => {
    expect(() =>
      parseGroupConfig({ ...valid, runTimeoutMinutes: 60, snapshots: { completionTimeoutMinutes: 60 } }),
    ).toThrow(
      /snapshots\.completionTimeoutMinutes: expected a snapshot wait shorter than runTimeoutMinutes \(60\)/,
    );
  });
});

describe("group config JSON Schema", () => {
  it("GIVEN the published docs/group-config.schema.json THEN it matches the zod schema (run npm run config:schema)", () => {
    const published = JSON.parse(
      readFileSync(new URL("../../docs/group-config.schema.json", import.meta.url), "utf8"),
    );
    expect(published).toEqual(groupConfigJsonSchema());
  });

  it("GIVEN the schema THEN required top-level fields and unknown-key rejection are declared", () => {
    const schema = groupConfigJsonSchema() as { required: string[]; additionalProperties: boolean };
    expect(schema.required).toEqual(["group", "volumes", "target", "schedule"]);
    expect(schema.additionalProperties).toBe(false);
  });
});

describe("groups deployed together", () => {
  const group = (name: string, extra: Record<string, unknown> = {}) =>
    parseGroupConfig({ ...valid, group: name, ...extra });

  it("GIVEN groups with their own prefixes THEN the set is consistent, whatever their run timeouts (each has its own state machine)", () => {
    expect(groupSetProblems([group("a"), group("b", { runTimeoutMinutes: 700 })])).toEqual([]);
    expect(
      groupSetProblems([
        group("fast", { runTimeoutMinutes: 30 }),
        group("slow", { runTimeoutMinutes: 1440 }),
      ]),
    ).toEqual([]);
  });

  it("fails when two groups share a bucket and prefix (two locks over one HEAD)", () => {
    const problems = groupSetProblems([
      group("a", { target: { bucket: "my-backups", prefix: "shared" } }),
      group("b", { target: { bucket: "my-backups", prefix: "shared" } }),
    ]);
    expect(problems).toEqual([
      {
        path: "b.target",
        message: expect.stringMatching(
          /s3:\/\/my-backups\/shared for both "a" and "b"; give one of them another target\.prefix/,
        ),
      },
    ]);
  });
});
