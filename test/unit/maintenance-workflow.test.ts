/**
 * Forget + prune in AWS (infra/maintenance.ts, workflows/maintenance.ts, lambdas/prune.ts): the
 * template (function, least-privilege IAM, one schedule per group, the failure alarm, cdk-nag) and the
 * synthesized definition run by the local interpreter with the real Prune handler over in-memory S3
 * and EBS: it forgets, prunes, keeps every retained generation readable, is skipped while a backup
 * holds the group, and loops while work is left.
 */
import { readFileSync } from "node:fs";
import { App, Stack, Validations } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import * as lambda from "aws-cdk-lib/aws-lambda";
import { StateMachine } from "aws-local-stepfunctions";
import cdkNag from "cdk-nag";
import { beforeAll, describe, expect, it } from "vitest";
import { parseGroupConfig } from "#core/config/group-config.ts";
import { listGenerations } from "#core/format/generation.ts";
import { acquireLock } from "#core/protocol/lock.ts";
import { CgmirrorStack } from "#infra/stack.ts";
import { makeHandler, PRUNE_METRICS } from "#lambdas/prune.ts";
import { type CfnTemplate, definitionFromTemplate } from "#workflows/definition.ts";
import { MaintenanceWorkflow } from "#workflows/maintenance.ts";
import { churn, memGroup, readMatches } from "../support/mem-group.ts";
import { runPipeline } from "../support/pipeline.ts";

const { AwsSolutionsChecks } = cdkNag;

const orders = parseGroupConfig({
  group: "orders",
  volumes: [{ id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0" }],
  target: { bucket: "acme-backups", prefix: "groups/orders" },
  schedule: { expression: "rate(1 hour)" },
  retention: { keepLast: 3, keepDaily: 7 },
  prune: { schedule: { expression: "cron(30 3 * * ? *)", timezone: "Europe/Berlin" } },
});

let template: Template;
let json: CfnTemplate & { Resources: Record<string, { Type: string; Properties: Record<string, unknown> }> };
let report: { pluginReports: { conclusion: string; violations: unknown[] }[] };

beforeAll(() => {
  const app = new App({
    // cdk-nag (the report checked here) runs; CDK's own template validation is infra-app.test.ts's.
    builtinCloudFormationValidation: false,
    context: { "aws:cdk:bundling-stacks": [] },
  });
  const stack = new CgmirrorStack(app, "Test", { groups: [orders] });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  const assembly = app.synth();
  template = Template.fromStack(stack);
  json = template.toJSON() as typeof json;
  report = JSON.parse(readFileSync(`${assembly.directory}/validation-report.json`, "utf8"));
});

function prunePolicy(): { Action: string | string[]; Resource: unknown; Condition?: unknown }[] {
  const entry = Object.entries(json.Resources).find(
    ([id, r]) =>
      r.Type === "AWS::IAM::Policy" && id.startsWith("MaintenancePruneFunctionServiceRoleDefaultPolicy"),
  );
  if (!entry) throw new Error("no policy of the Prune function in the template");
  return (entry[1].Properties.PolicyDocument as { Statement: never[] }).Statement;
}

function areas(action: string): string[] {
  const text = JSON.stringify(
    prunePolicy()
      .filter((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]).includes(action))
      .map((s) => s.Resource),
  );
  return [
    ...new Set([...text.matchAll(/acme-backups\/groups\/orders\/(HEAD|[a-z]+)/g)].map((m) => m[1]!)),
  ].sort();
}

describe("the maintenance stack resources", () => {
  it("GIVEN a group THEN a Prune function and state machine, scheduled by prune.schedule with the config as input", () => {
    template.hasResourceProperties("AWS::Lambda::Function", {
      Description: Match.stringLikeRegexp("Prune"),
      Timeout: 900,
      Environment: { Variables: Match.objectLike({ CGM_STACK_NAME: "Test" }) },
    });
    const schedules = Object.values(template.findResources("AWS::Scheduler::Schedule")).filter((r) =>
      JSON.stringify(r.Properties.Target.Arn).includes("MaintenanceWorkflowStateMachine"),
    );
    expect(schedules).toHaveLength(1);
    expect(schedules[0]!.Properties).toMatchObject({
      ScheduleExpression: "cron(30 3 * * ? *)",
      ScheduleExpressionTimezone: "Europe/Berlin",
    });
    expect(JSON.parse(schedules[0]!.Properties.Target.Input)).toEqual({ config: orders });
  });

  it("GIVEN Prune THEN it may delete versions only where garbage lives, and snapshots only of this stack and group", () => {
    expect(areas("s3:DeleteObjectVersion")).toEqual([
      "commits",
      "generations",
      "runs",
      "segments",
      "volumes",
    ]);
    expect(areas("s3:PutObject")).toEqual(["HEAD", "commits", "gc", "locks", "segments"]);
    const del = prunePolicy().find((s) => JSON.stringify(s.Action).includes("ec2:DeleteSnapshot"));
    expect(del?.Condition).toMatchObject({
      StringEquals: {
        "aws:ResourceTag/cgmirror:group": ["orders"],
        "aws:ResourceTag/cgmirror:stack": "Test",
      },
    });
  });

  it("GIVEN a failed, timed-out or aborted maintenance run THEN an alarm notifies the topic", () => {
    const alarms = Object.values(template.findResources("AWS::CloudWatch::Alarm")).filter((a) =>
      String(a.Properties.AlarmDescription).includes("maintenance run"),
    );
    expect(alarms).toHaveLength(1);
    expect(JSON.stringify(alarms[0]!.Properties.Metrics)).toContain("MaintenanceWorkflowStateMachine");
    expect(alarms[0]!.Properties.AlarmActions).toHaveLength(1);
  });

  it("GIVEN cdk-nag THEN no unacknowledged finding", () => {
    expect(report.pluginReports[0]).toMatchObject({ conclusion: "success", violations: [] });
  });
});

/** Runs the maintenance definition with Prune bound to `handler`, as execution `name`. */
async function execute(
  definition: unknown,
  input: unknown,
  handler: unknown,
  name: string,
): Promise<unknown> {
  const machine = new StateMachine(definition as never);
  return machine.run(
    input as never,
    {
      overrides: { taskResourceLocalHandlers: { Prune: handler as never } },
      context: { Execution: { Name: name, Input: input, StartTime: "2026-01-01T00:00:00.000Z" } },
    } as never,
  ).result;
}

/** The maintenance definition with the Prune task at a placeholder ARN. */
function maintenanceDefinition(maxIterations?: number) {
  const app = new App();
  const stack = new Stack(app, "Local", { env: { account: "000000000000", region: "us-east-1" } });
  new MaintenanceWorkflow(stack, "Workflow", {
    pruneFunction: lambda.Function.fromFunctionArn(
      stack,
      "Prune",
      "arn:aws:lambda:us-east-1:000000000000:function:prune",
    ),
    ...(maxIterations !== undefined ? { maxIterations } : {}),
  });
  return definitionFromTemplate(app.synth().getStackByName("Local").template as CfnTemplate);
}

describe("the maintenance workflow, run locally with the real Prune handler", () => {
  it("GIVEN six generations and keepLast 2 WHEN the workflow runs THEN it forgets four, prunes, records metrics, and the two left read back", async () => {
    const g = memGroup({
      volumes: [
        { id: "vol-a", instanceId: "i-a", blocks: 8 },
        { id: "vol-b", instanceId: "i-b", blocks: 6 },
      ],
    });
    for (let i = 1; i <= 6; i++) {
      churn(g, i, 5);
      expect(await runPipeline(g.deps(), g.config, `run-${i}`)).toMatchObject({ outcome: "committed" });
    }
    const config = { ...g.config, retention: { keepLast: 2, timezone: "UTC" } };
    const handler = makeHandler(() => g.deps());
    const definition = maintenanceDefinition();
    const result = (await execute(definition, { config }, handler, "maint-1")) as {
      status: string;
      last: { forgotten: number[]; objectsDeleted: number };
    };
    expect(result.status).toBe("pruned");
    expect(result.last.forgotten).toEqual([1, 2, 3, 4]);
    expect(result.last.objectsDeleted).toBeGreaterThan(0);
    expect(await listGenerations(g.repo)).toEqual([5, 6]);
    for (const n of [5, 6]) expect(await readMatches(g, n)).toEqual([]);
    expect(g.metrics.map((m) => m.name)).toEqual(expect.arrayContaining(Object.values(PRUNE_METRICS)));

    // A backup holds the group: the maintenance run is skipped, not failed.
    await acquireLock(g.repo, { runId: "run-live", ttlMs: 3_600_000 });
    const skipped = (await execute(definition, { config }, handler, "maint-2")) as {
      status: string;
      last: { heldBy: string };
    };
    expect(skipped).toMatchObject({ status: "skipped", last: { heldBy: "run-live" } });
  });

  it("GIVEN a Prune that reports work left WHEN the workflow runs THEN it invokes Prune again, up to maxIterations", async () => {
    const calls: number[] = [];
    const fake = async (input: { iteration: number }) => {
      calls.push(input.iteration);
      return { outcome: "pruned", done: false, iteration: input.iteration + 1 };
    };
    const result = (await execute(maintenanceDefinition(3), { config: orders }, fake, "maint-3")) as {
      status: string;
      iterations: number;
    };
    expect(calls).toEqual([0, 1, 2]);
    expect(result).toMatchObject({ status: "partial", iterations: 3 });
  });
});
