/**
 * The CloudWatch dashboard (infra/monitoring.ts, documented in docs/operations.md "Metrics and the
 * dashboard"): each group's widgets read that group's metrics, under the names the tasks publish
 * (lambdas/metric-names.ts). Synthesized once without bundling.
 */
import { App } from "aws-cdk-lib";
import { Template } from "aws-cdk-lib/assertions";
import { beforeAll, describe, expect, it } from "vitest";
import { parseGroupConfig } from "#core/config/group-config.ts";
import { METRICS_NAMESPACE } from "#infra/function-props.ts";
import { CgmirrorStack } from "#infra/stack.ts";
import { RUN_METRICS } from "#lambdas/metric-names.ts";

const groups = [
  parseGroupConfig({
    group: "orders",
    volumes: [{ id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0" }],
    target: { bucket: "acme-backups", prefix: "groups/orders" },
    schedule: { expression: "rate(1 hour)" },
  }),
  parseGroupConfig({
    group: "billing",
    volumes: [{ id: "vol-0123456789abcdef9" }],
    target: { bucket: "acme-backups", prefix: "groups/billing" },
    schedule: { expression: "cron(0 2 * * ? *)" },
    alarms: { rpoMinutes: 2880 },
  }),
];

type MetricRow = (string | Record<string, unknown>)[];
interface Widget {
  type: string;
  properties: {
    title: string;
    metrics?: MetricRow[];
    annotations?: { horizontal?: { value: number; label: string }[] };
    alarms?: unknown[];
  };
}
let widgets: Widget[];
let machineIdOf: Record<string, string>;

/** The dashboard body with every CloudFormation token replaced by `<ref:LogicalId>`. */
function bodyOf(join: unknown): string {
  const [, parts] = (join as { "Fn::Join": [string, unknown[]] })["Fn::Join"];
  return parts
    .map((p) => {
      if (typeof p === "string") return p;
      const ref = (p as { Ref?: string }).Ref;
      const att = (p as { "Fn::GetAtt"?: string[] })["Fn::GetAtt"];
      return `<ref:${ref ?? att?.[0] ?? "token"}>`;
    })
    .join("");
}

beforeAll(() => {
  const app = new App({
    // Ids and widgets only: the template's validation is test/unit/infra-stack.test.ts's.
    builtinCloudFormationValidation: false,
    context: { "aws:cdk:bundling-stacks": [] },
  });
  const stack = new CgmirrorStack(app, "Test", { groups });
  const template = Template.fromStack(stack);
  const dashboards = template.findResources("AWS::CloudWatch::Dashboard");
  const [dashboard] = Object.values(dashboards);
  widgets = JSON.parse(bodyOf(dashboard?.Properties.DashboardBody)).widgets;
  const machines = template.findResources("AWS::StepFunctions::StateMachine");
  machineIdOf = {};
  for (const [id, r] of Object.entries(machines)) {
    const name = JSON.stringify(r.Properties.StateMachineName ?? "");
    for (const g of groups) if (name.includes(g.group)) machineIdOf[g.group] = id;
  }
});

function widget(title: string): Widget {
  const w = widgets.find((x) => x.properties.title === title);
  if (!w)
    throw new Error(`no widget "${title}" (have: ${widgets.map((x) => x.properties.title).join(", ")})`);
  return w;
}

/** The custom metrics a widget reads: [name, Group dimension, statistic]. */
function customMetrics(w: Widget): [string, string, string][] {
  return (w.properties.metrics ?? [])
    .filter((row) => row[0] === METRICS_NAMESPACE)
    .map((row) => {
      const strings = row.filter((x): x is string => typeof x === "string");
      const opts = (row.find((x) => typeof x === "object") ?? {}) as { stat?: string };
      const group = strings[strings.indexOf("Group") + 1] ?? "";
      return [strings[1] ?? "", group, opts.stat ?? "Average"];
    });
}

/** The AWS/States metrics a widget reads: [name, state machine logical id]. */
function machineMetrics(w: Widget): [string, string][] {
  return (w.properties.metrics ?? [])
    .filter((row) => row[0] === "AWS/States")
    .map((row) => [String(row[1]), String(row[3]).replace(/^<ref:|>$/g, "")]);
}

describe("the dashboard", () => {
  it.each(groups.map((g) => [g.group, g] as const))(
    "GIVEN group %s THEN its RPO widget plots that group's RecoveryPointAge (maximum, in minutes) against alarms.rpoMinutes",
    (name, g) => {
      const w = widget(`${name}: recovery point age (RPO)`);
      expect(customMetrics(w)).toEqual([[RUN_METRICS.recoveryPointAge, name, "Maximum"]]);
      const expression = w.properties.metrics?.find((row) => typeof row[0] === "object")?.[0] as {
        expression: string;
      };
      expect(expression.expression).toBe("age / 60");
      expect(w.properties.annotations?.horizontal?.[0]?.value).toBe(g.alarms.rpoMinutes);
    },
  );

  it.each(groups.map((g) => g.group))(
    "GIVEN group %s THEN its runs widget counts its commits and reverted runs and its own state machine's failed, timed-out and aborted executions",
    (name) => {
      const w = widget(`${name}: runs`);
      expect(customMetrics(w)).toEqual([
        [RUN_METRICS.committed, name, "Sum"],
        [RUN_METRICS.runReverted, name, "Sum"],
      ]);
      const machine = machineIdOf[name];
      expect(machine).toBeDefined();
      expect(machineMetrics(w)).toEqual([
        ["ExecutionsFailed", machine],
        ["ExecutionsTimedOut", machine],
        ["ExecutionsAborted", machine],
      ]);
    },
  );

  it.each(groups.map((g) => g.group))(
    "GIVEN group %s THEN its bytes, duration and throttling widgets read its BytesChanged/BytesStored/ChangedBlocks, RunDuration/CoordinationTime and EbsThrottledRequests",
    (name) => {
      expect(customMetrics(widget(`${name}: bytes changed and stored`))).toEqual([
        [RUN_METRICS.bytesChanged, name, "Sum"],
        [RUN_METRICS.bytesStored, name, "Sum"],
        [RUN_METRICS.changedBlocks, name, "Sum"],
      ]);
      expect(customMetrics(widget(`${name}: run duration and coordination time`))).toEqual([
        [RUN_METRICS.runDuration, name, "Maximum"],
        [RUN_METRICS.coordinationTime, name, "Maximum"],
      ]);
      expect(customMetrics(widget(`${name}: EBS direct API throttling`))).toEqual([
        [RUN_METRICS.ebsThrottled, name, "Sum"],
      ]);
      expect(widget(`${name}: alarms`).properties.alarms).toHaveLength(3);
    },
  );

  it("reads only metric names the tasks publish (lambdas/metric-names.ts)", () => {
    const published = new Set<string>(Object.values(RUN_METRICS));
    const read = widgets.flatMap((w) => customMetrics(w).map(([n]) => n));
    expect(read.length).toBeGreaterThan(0);
    expect(read.filter((n) => !published.has(n))).toEqual([]);
    // Every published run metric is on the dashboard (the alarm-only RepositoryNeedsRepair excepted).
    expect(new Set(read)).toEqual(new Set([...published].filter((n) => n !== RUN_METRICS.needsRepair)));
  });
});
