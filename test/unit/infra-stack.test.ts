/**
 * The CDK stack, synthesized once (function bundling skipped via the `aws:cdk:bundling-stacks`
 * context; `npm run synth` bundles for real) with the cdk-nag AwsSolutions plugin on.
 */
import { readFileSync } from "node:fs";
import { App, Validations } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import cdkNag from "cdk-nag";
import { beforeAll, describe, expect, it } from "vitest";
import { type GroupConfig, LOCK_MARGIN_MINUTES, parseGroupConfig } from "#core/config/group-config.ts";
import { stateMachineNameOf } from "#infra/group-workflows.ts";
import { rpoAlarmShape } from "#infra/monitoring.ts";
import { repositoryLifecycle } from "#infra/repository.ts";
import { CgmirrorStack, StackPropsError } from "#infra/stack.ts";
import { type CfnTemplate, definitionFromTemplate, localDefinition } from "#workflows/definition.ts";
import { TASK_NAMES } from "#workflows/tasks.ts";

const { AwsSolutionsChecks } = cdkNag;

const ORDERS_KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const orders = parseGroupConfig({
  group: "orders",
  volumes: [
    {
      id: "vol-0123456789abcdef0",
      instanceId: "i-0123456789abcdef0",
      mountPoint: "/data",
      kmsKeyArn: ORDERS_KEY,
    },
    { id: "vol-0123456789abcdef1", instanceId: "i-0123456789abcdef1", mountPoint: "/log" },
    { id: "vol-0123456789abcdef2" },
  ],
  target: { bucket: "acme-backups", prefix: "groups/orders" },
  schedule: { expression: "rate(1 hour)" },
  freeze: { enabled: true },
});
const billing = parseGroupConfig({
  group: "billing",
  volumes: [{ id: "vol-0123456789abcdef9", instanceId: "i-0123456789abcdef9" }],
  target: { bucket: "acme-backups", prefix: "groups/billing" },
  schedule: { expression: "cron(0 2 * * ? *)", timezone: "Europe/Berlin" },
  alarms: { rpoMinutes: 2880 },
});

let template: Template;
let json: CfnTemplate & { Resources: Record<string, { Type: string; Properties: Record<string, unknown> }> };
let validationReport: {
  pluginReports: { conclusion: string; violations: unknown[]; suppressedViolations: unknown[] }[];
};

function synth(groups: readonly GroupConfig[]) {
  const app = new App({
    // cdk-nag (the report checked here) runs; CDK's own template validation is infra-app.test.ts's.
    builtinCloudFormationValidation: false,
    context: { "aws:cdk:bundling-stacks": [] },
  });
  const stack = new CgmirrorStack(app, "Test", { groups });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  const assembly = app.synth();
  return { stack, assembly };
}

beforeAll(() => {
  const { stack, assembly } = synth([orders, billing]);
  template = Template.fromStack(stack);
  json = template.toJSON() as typeof json;
  validationReport = JSON.parse(readFileSync(`${assembly.directory}/validation-report.json`, "utf8"));
});

function policiesOf(
  functionId: string,
): { Action: string | string[]; Resource: unknown; Condition?: unknown }[] {
  const entry = Object.entries(json.Resources).find(
    ([id, r]) =>
      r.Type === "AWS::IAM::Policy" && id.startsWith(`${functionId}FunctionServiceRoleDefaultPolicy`),
  );
  if (!entry) throw new Error(`no policy for ${functionId}`);
  return (entry[1].Properties.PolicyDocument as { Statement: never[] }).Statement;
}

function actions(statements: ReturnType<typeof policiesOf>): string[] {
  return statements.flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]));
}

const ALL = ["HEAD", "commits", "gc", "generations", "locks", "pending", "runs", "segments", "volumes"];

/** The repository areas of group orders on which `task` is allowed `action` (sorted). */
function areasOf(task: string, action: string): string[] {
  const text = JSON.stringify(
    policiesOf(task)
      .filter((s) => actions([s]).includes(action))
      .map((s) => s.Resource),
  );
  const found = [...text.matchAll(/acme-backups\/groups\/orders\/(HEAD|[a-z]+)/g)].map((m) => m[1] as string);
  return [...new Set(found)].sort();
}

describe("the repository bucket", () => {
  it("GIVEN two groups in one bucket THEN one versioned, SSE-KMS, private, TLS-only, logged, retained bucket", () => {
    template.resourcePropertiesCountIs("AWS::S3::Bucket", { BucketName: "acme-backups" }, 1);
    template.hasResource("AWS::S3::Bucket", {
      DeletionPolicy: "Retain",
      Properties: Match.objectLike({
        BucketName: "acme-backups",
        VersioningConfiguration: { Status: "Enabled" },
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [
            {
              BucketKeyEnabled: true,
              ServerSideEncryptionByDefault: { SSEAlgorithm: "aws:kms", KMSMasterKeyID: Match.anyValue() },
            },
          ],
        },
        PublicAccessBlockConfiguration: {
          BlockPublicAcls: true,
          BlockPublicPolicy: true,
          IgnorePublicAcls: true,
          RestrictPublicBuckets: true,
        },
        LoggingConfiguration: Match.objectLike({ LogFilePrefix: "acme-backups/" }),
      }),
    });
    template.hasResourceProperties("AWS::KMS::Key", { EnableKeyRotation: true });
    template.hasResourceProperties("AWS::S3::BucketPolicy", {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: "Deny", Condition: { Bool: { "aws:SecureTransport": "false" } } }),
        ]),
      },
    });
  });

  it("GIVEN the lifecycle THEN nothing a committed generation names (volumes/, generations/, segments/) ever expires", () => {
    const rules = repositoryLifecycle([orders, billing]);
    for (const rule of rules) {
      if (rule.expiration !== undefined)
        expect(rule.prefix, rule.id).toMatch(/^groups\/(orders|billing)\/runs\/$/);
      if (rule.noncurrentVersionExpiration !== undefined) {
        expect(rule.prefix, rule.id).toMatch(/^groups\/(orders|billing)\/(locks\/|runs\/|HEAD)$/);
      }
    }
    expect(rules.map((r) => r.id)).toContain("abort-incomplete-multipart");
  });

  it("GIVEN a run's scratch files under runs/ THEN current objects expire as a backstop, only after the longest run can have ended", () => {
    const rules = repositoryLifecycle([orders, { ...billing, runTimeoutMinutes: 1440 }]);
    const scratch: Record<string, (typeof rules)[number]> = Object.fromEntries(
      rules.filter((r) => r.prefix?.endsWith("/runs/")).map((r) => [r.prefix, r]),
    );
    expect(scratch["groups/orders/runs/"]?.expiration?.toDays()).toBe(3); // 720 min -> 1 day + 2
    expect(scratch["groups/billing/runs/"]?.expiration?.toDays()).toBe(3);
    for (const r of Object.values(scratch)) {
      expect(r.expiration!.toMinutes()).toBeGreaterThan(1440);
      expect(r.noncurrentVersionExpiration?.toDays()).toBe(7);
    }
    template.hasResourceProperties("AWS::S3::Bucket", {
      LifecycleConfiguration: {
        Rules: Match.arrayWith([
          Match.objectLike({ Id: "orders-run-scratch", Prefix: "groups/orders/runs/", ExpirationInDays: 3 }),
        ]),
      },
    });
  });
});

describe("the functions", () => {
  it("GIVEN every task THEN Node 24 on arm64 with X-Ray and the Powertools environment", () => {
    // One per backup task, the maintenance workflow's Prune (infra/maintenance.ts) and the restore
    // workflow's RestoreVolume (infra/restore.ts).
    template.resourceCountIs("AWS::Lambda::Function", 12);
    template.allResourcesProperties("AWS::Lambda::Function", {
      Runtime: "nodejs24.x",
      Architectures: ["arm64"],
      TracingConfig: { Mode: "Active" },
      Environment: {
        Variables: Match.objectLike({
          POWERTOOLS_SERVICE_NAME: "cgmirror",
          POWERTOOLS_METRICS_NAMESPACE: "cgmirror",
          NODE_OPTIONS: "--enable-source-maps",
        }),
      },
    });
  });
});

describe("least-privilege IAM", () => {
  it("GIVEN Transfer THEN EBS direct reads only on snapshots tagged with this deployment's groups", () => {
    const ebs = policiesOf("Transfer").find((s) => actions([s]).includes("ebs:GetSnapshotBlock"));
    expect(ebs?.Condition).toEqual({
      StringEquals: { "aws:ResourceTag/cgmirror:group": ["orders", "billing"] },
    });
    expect(JSON.stringify(ebs?.Resource)).toContain("::snapshot/*");
    expect(actions(policiesOf("Transfer"))).not.toContain("ec2:DeleteSnapshot");
  });

  it("GIVEN the S3 statements THEN objects only under each group's prefix and listing only of those prefixes", () => {
    const statements = policiesOf("Commit");
    const put = statements.find((s) => actions([s]).includes("s3:PutObject"));
    expect(JSON.stringify(put?.Resource)).toContain(":s3:::acme-backups/groups/orders/HEAD");
    expect(JSON.stringify(put?.Resource)).toContain(":s3:::acme-backups/groups/billing/generations/*");
    expect(JSON.stringify(put?.Resource)).not.toMatch(/acme-backups\/\*"/);
    const list = statements.find((s) => actions([s]).includes("s3:ListBucketVersions"));
    expect(list?.Condition).toEqual({
      StringLike: { "s3:prefix": ["groups/orders", "groups/orders/*", "groups/billing", "groups/billing/*"] },
    });
  });

  it("GIVEN each task THEN it writes, deletes and reads only the repository areas its step needs", () => {
    const expected: Record<string, { write: string[]; deleteVersion: string[]; read: string[] }> = {
      AcquireLock: { write: ["locks"], deleteVersion: [], read: ["HEAD", "locks"] },
      Recover: {
        write: ["HEAD", "commits", "history"],
        deleteVersion: ["generations", "runs", "volumes"],
        read: ALL,
      },
      Snapshot: { write: ["pending"], deleteVersion: ["pending"], read: ["HEAD", "locks", "pending"] },
      CheckSnapshots: { write: [], deleteVersion: [], read: ["HEAD", "locks"] },
      Plan: { write: ["runs"], deleteVersion: [], read: ALL },
      Transfer: {
        write: ["runs", "segments"],
        deleteVersion: [],
        read: ["HEAD", "commits", "gc", "generations", "runs", "segments", "volumes"],
      },
      Prepare: { write: ["runs", "volumes"], deleteVersion: [], read: ALL },
      Commit: { write: ["HEAD", "commits", "generations"], deleteVersion: [], read: ALL },
      Revert: {
        write: ["history"],
        deleteVersion: ["generations", "pending", "runs", "segments", "volumes"],
        read: ALL,
      },
      ReleaseLock: {
        write: ["history", "locks"],
        deleteVersion: ["pending", "runs"],
        read: ["HEAD", "generations", "locks", "pending"],
      },
    };
    for (const [task, want] of Object.entries(expected)) {
      expect(areasOf(task, "s3:PutObject"), `${task} writes`).toEqual(want.write);
      expect(areasOf(task, "s3:DeleteObjectVersion"), `${task} deletes versions`).toEqual(want.deleteVersion);
      expect(areasOf(task, "s3:GetObject"), `${task} reads`).toEqual(want.read);
    }
  });

  it("GIVEN the whole template THEN only Commit and Recover may write HEAD, only the lock tasks locks/", () => {
    const writers = (area: string) =>
      TASK_NAMES.filter((t) => areasOf(t, "s3:PutObject").includes(area)).sort();
    expect(writers("HEAD")).toEqual(["Commit", "Recover"]);
    expect(writers("locks")).toEqual(["AcquireLock", "ReleaseLock"]);
    expect(writers("commits")).toEqual(["Commit", "Recover"]);
    expect(TASK_NAMES.filter((t) => areasOf(t, "s3:DeleteObjectVersion").length > 0).sort()).toEqual([
      "Recover",
      "ReleaseLock",
      "Revert",
      "Snapshot",
    ]);
    // Snapshot may destroy versions of its snapshot-set record only.
    expect(areasOf("Snapshot", "s3:DeleteObjectVersion")).toEqual(["pending"]);
    expect(writers("pending")).toEqual(["Snapshot"]);
  });

  it("GIVEN Snapshot THEN it creates snapshots only of the group's volumes/instances, tagged for the group and the stack", () => {
    const statements = policiesOf("Snapshot");
    const sources = statements.find((s) => (s as { Sid?: string }).Sid === "CreateSnapshotsOfGroupSources");
    const text = JSON.stringify(sources?.Resource);
    for (const id of [
      "volume/vol-0123456789abcdef0",
      "volume/vol-0123456789abcdef2",
      "instance/i-0123456789abcdef0",
    ]) {
      expect(text).toContain(id);
    }
    const tagged = statements.find((s) => (s as { Sid?: string }).Sid === "CreateGroupTaggedSnapshots");
    expect(tagged?.Condition).toEqual({
      StringEquals: {
        "aws:RequestTag/cgmirror:group": ["orders", "billing"],
        "aws:RequestTag/cgmirror:stack": "Test",
      },
    });
  });

  it("GIVEN every statement that deletes snapshots THEN it requires this stack's tag, a group tag and a configured source volume", () => {
    const deleters = TASK_NAMES.filter((t) => actions(policiesOf(t)).includes("ec2:DeleteSnapshot")).sort();
    expect(deleters).toEqual(["Recover", "ReleaseLock", "Revert", "Snapshot"]);
    for (const task of deleters) {
      for (const s of policiesOf(task).filter((st) => actions([st]).includes("ec2:DeleteSnapshot"))) {
        const c = s.Condition as {
          StringEquals: Record<string, unknown>;
          ArnEquals: Record<string, unknown>;
        };
        expect(c.StringEquals, task).toEqual({
          "aws:ResourceTag/cgmirror:group": ["orders", "billing"],
          "aws:ResourceTag/cgmirror:stack": "Test",
        });
        const parents = JSON.stringify(c.ArnEquals["ec2:ParentVolume"]);
        for (const v of [...orders.volumes, ...billing.volumes])
          expect(parents, task).toContain(`:volume/${v.id}`);
      }
    }
  });

  it("GIVEN a volume encrypted with a customer-managed key THEN only Plan and Transfer may use exactly that key, and only through EBS", () => {
    for (const task of TASK_NAMES) {
      const keyStatements = policiesOf(task).filter((s) => JSON.stringify(s.Resource).includes(ORDERS_KEY));
      if (task === "Plan" || task === "Transfer") {
        expect(keyStatements, task).toHaveLength(1);
        expect(keyStatements[0]?.Action).toEqual(["kms:Decrypt", "kms:DescribeKey"]);
        expect(keyStatements[0]?.Resource).toEqual(ORDERS_KEY);
        expect(JSON.stringify(keyStatements[0]?.Condition)).toMatch(
          /"StringEquals":\{"kms:ViaService":\{"Fn::Join":\["",\["ebs\.",\{"Ref":"AWS::Region"\},"\.amazonaws\.com"\]\]\}\}/,
        );
      } else {
        expect(keyStatements, task).toEqual([]);
      }
    }
  });

  it("GIVEN freeze THEN the Snapshot role runs only the stack's own freeze/thaw documents on the frozen groups' instances, never AWS-RunShellScript", () => {
    expect(JSON.stringify(json)).not.toContain("AWS-RunShellScript");
    const send = policiesOf("Snapshot").find((s) => actions([s]).includes("ssm:SendCommand"));
    const sendText = JSON.stringify(send?.Resource);
    const docs = Object.entries(json.Resources).filter(([, r]) => r.Type === "AWS::SSM::Document");
    expect(docs).toHaveLength(2);
    for (const [id] of docs) expect(sendText).toContain(`document/",{"Ref":"${id}"}`);
    expect(sendText).toContain("instance/i-0123456789abcdef1");
    // billing does not freeze: its instance gets no SendCommand.
    expect(sendText).not.toContain("i-0123456789abcdef9");
    expect(actions(policiesOf("Snapshot"))).toContain("ssm:CancelCommand");
    for (const [, doc] of docs) {
      const content = doc.Properties.Content as { parameters: Record<string, Record<string, unknown>> };
      for (const p of Object.values(content.parameters)) {
        expect(p).toMatchObject({
          interpolationType: "ENV_VAR",
          allowedPattern: expect.stringMatching(/^\^.*\$$/),
        });
      }
    }
    const snapshotFn = Object.values(json.Resources).find(
      (r) => r.Type === "AWS::Lambda::Function" && r.Properties.Description === "cgmirror task Snapshot",
    );
    if (!snapshotFn) throw new Error("no Snapshot function in the template");
    const env = (snapshotFn.Properties.Environment as { Variables: Record<string, unknown> }).Variables;
    expect(Object.keys(env)).toEqual(
      expect.arrayContaining(["CGM_FREEZE_DOCUMENT", "CGM_THAW_DOCUMENT", "CGM_STACK_NAME"]),
    );
  });

  it("GIVEN CheckSnapshots THEN it may only describe snapshots and read the lock and HEAD", () => {
    const all = actions(policiesOf("CheckSnapshots")).filter((a) => !a.startsWith("xray:"));
    expect(all.filter((a) => !a.startsWith("s3:") && !a.startsWith("kms:"))).toEqual([
      "ec2:DescribeSnapshots",
    ]);
    expect(all.filter((a) => a.startsWith("s3:"))).toEqual([
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:ListBucket",
      "s3:ListBucketVersions",
    ]);
  });
});

describe("the state machines and the schedules", () => {
  it("GIVEN two groups THEN one state machine each, logging ALL events and tracing with X-Ray", () => {
    // One consistency-group workflow per group, the maintenance workflow (maintenance-workflow.test.ts)
    // and the restore workflow (restore-infra.test.ts).
    template.resourceCountIs("AWS::StepFunctions::StateMachine", 4);
    const workflows = Object.keys(template.findResources("AWS::StepFunctions::StateMachine")).filter((id) =>
      id.startsWith("Workflow"),
    );
    expect(workflows).toHaveLength(2);
    for (const g of [orders, billing]) {
      template.hasResourceProperties("AWS::StepFunctions::StateMachine", {
        StateMachineName: stateMachineNameOf("Test", g.group),
        TracingConfiguration: { Enabled: true },
        LoggingConfiguration: Match.objectLike({ Level: "ALL", IncludeExecutionData: true }),
      });
    }
  });

  it("GIVEN groups with different run timeouts THEN each state machine times out at its group's run timeout, below its lock lease", () => {
    const { stack } = synth([orders, { ...billing, runTimeoutMinutes: 1440 }]);
    const t = Template.fromStack(stack).toJSON() as CfnTemplate;
    for (const [group, minutes] of [
      ["orders", orders.runTimeoutMinutes],
      ["billing", 1440],
    ] as const) {
      const def = definitionFromTemplate(t, undefined, stateMachineNameOf("Test", group));
      expect(def.TimeoutSeconds, group).toBe(minutes * 60);
      expect((minutes + LOCK_MARGIN_MINUTES) * 60, group).toBeGreaterThan(def.TimeoutSeconds as number);
    }
  });

  it("GIVEN the deployed definition THEN it is the local definition (same states) with a transfer Map that tolerates no failure", () => {
    const deployed = definitionFromTemplate(json, undefined, stateMachineNameOf("Test", "orders"));
    const local = localDefinition();
    const normalize = (d: unknown) =>
      JSON.parse(
        JSON.stringify(d)
          .replace(/"arn:aws:lambda:[^"]+"/g, '"FN"')
          .replace(/"TimeoutSeconds":\d+,?/g, ""),
      );
    expect(Object.keys(deployed.States).sort()).toEqual(Object.keys(local.States).sort());
    expect(normalize({ ...deployed, TimeoutSeconds: 0 })).toEqual(normalize({ ...local, TimeoutSeconds: 0 }));
    expect(deployed.States.TransferShards).toMatchObject({ ToleratedFailurePercentage: 0 });
  });

  it("GIVEN two groups THEN one schedule each, targeting its group's state machine with the parsed config as input", () => {
    // Two backup schedules and two maintenance (forget + prune) schedules (infra-maintenance.test.ts).
    template.resourceCountIs("AWS::Scheduler::Schedule", 4);
    const schedules = Object.fromEntries(
      Object.entries(template.findResources("AWS::Scheduler::Schedule")).filter(([id]) =>
        id.startsWith("Schedule"),
      ),
    );
    expect(Object.keys(schedules)).toHaveLength(2);
    const byExpr = Object.fromEntries(
      Object.values(schedules).map((r) => [r.Properties.ScheduleExpression, r.Properties]),
    );
    expect(byExpr["rate(1 hour)"].Target.Arn).toEqual({
      Ref: expect.stringMatching(/^WorkflowordersStateMachine/),
    });
    expect(byExpr["cron(0 2 * * ? *)"].Target.Arn).toEqual({
      Ref: expect.stringMatching(/^WorkflowbillingStateMachine/),
    });
    expect(JSON.parse(byExpr["rate(1 hour)"].Target.Input)).toEqual({ config: orders });
    expect(byExpr["cron(0 2 * * ? *)"].ScheduleExpressionTimezone).toBe("Europe/Berlin");
  });

  it("GIVEN AcquireLock THEN it may describe the executions of this stack's state machines, and nothing else of Step Functions", () => {
    const statements = policiesOf("AcquireLock").filter((st) =>
      actions([st]).some((a) => a.startsWith("states:")),
    );
    expect(statements).toHaveLength(1);
    expect(actions(statements)).toEqual(["states:DescribeExecution"]);
    const resources = JSON.stringify(statements[0]!.Resource);
    for (const g of ["orders", "billing"]) {
      expect(resources).toContain(`:execution:${stateMachineNameOf("Test", g)}:*`);
    }
    expect(resources).not.toContain("stateMachine:");
  });
});

describe("operations", () => {
  it("GIVEN the stack THEN it outputs each group's state machine ARN, the bucket and the dashboard", () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    expect(outputs.StateMachineArnOrders?.Value).toEqual({
      Ref: expect.stringMatching(/^WorkflowordersStateMachine/),
    });
    expect(outputs.StateMachineArnBilling?.Value).toEqual({
      Ref: expect.stringMatching(/^WorkflowbillingStateMachine/),
    });
    expect(outputs.StateMachineArn).toBeUndefined();
    expect(outputs.BucketName?.Value).toEqual({ Ref: expect.stringMatching(/^Repository/) });
    expect(outputs.DashboardName).toBeDefined();
    expect(outputs.DashboardUrl).toBeDefined();
  });

  it("GIVEN README.md and docs/operations.md THEN every stack output they tell users to copy exists", () => {
    const outputs = Object.keys(template.toJSON().Outputs as object);
    for (const doc of ["README.md", "docs/operations.md"]) {
      const text = readFileSync(new URL(`../../${doc}`, import.meta.url), "utf8");
      const named = [...text.matchAll(/<([A-Za-z]+) output>/g)].map((m) => m[1]);
      for (const n of named) expect(outputs, `${doc} names the output ${n}`).toContain(n);
      // `<StateMachineArn<Group> output>`: one output per group.
      const perGroup = text.includes("<StateMachineArn<Group> output>");
      if (perGroup) {
        expect(outputs, doc).toEqual(
          expect.arrayContaining(["StateMachineArnOrders", "StateMachineArnBilling"]),
        );
      }
      expect(named.length + (perGroup ? 1 : 0), `${doc} names stack outputs`).toBeGreaterThan(0);
    }
  });

  it("GIVEN each schedule THEN undeliverable invocations go to an encrypted dead-letter queue whose depth is alarmed", () => {
    const queues = template.findResources("AWS::SQS::Queue");
    const [queueId] = Object.keys(queues);
    expect(Object.keys(queues)).toHaveLength(1);
    // SSE-SQS: the Scheduler's role needs no KMS grant to deliver to it.
    expect(queues[queueId as string]?.Properties.SqsManagedSseEnabled).toBe(true);
    const schedulerPolicy = Object.entries(json.Resources).find(
      ([id, r]) => r.Type === "AWS::IAM::Policy" && id.startsWith("SchedulerRoleForTarget"),
    )?.[1];
    expect(JSON.stringify(schedulerPolicy?.Properties)).toContain('"Action":"sqs:SendMessage"');
    for (const schedule of Object.values(template.findResources("AWS::Scheduler::Schedule"))) {
      expect(schedule.Properties.Target.DeadLetterConfig).toEqual({
        Arn: { "Fn::GetAtt": [queueId, "Arn"] },
      });
    }
    template.hasResourceProperties("AWS::CloudWatch::Alarm", {
      MetricName: "ApproximateNumberOfMessagesVisible",
      Namespace: "AWS/SQS",
      Dimensions: [{ Name: "QueueName", Value: { "Fn::GetAtt": [queueId, "QueueName"] } }],
      ComparisonOperator: "GreaterThanOrEqualToThreshold",
      Threshold: 1,
      AlarmActions: [{ Ref: Match.stringLikeRegexp("^AlarmTopic") }],
    });
  });
});

describe("alarms", () => {
  it("GIVEN each group THEN an RPO alarm on GroupCommitted that treats missing data as breaching", () => {
    template.hasResourceProperties("AWS::CloudWatch::Alarm", {
      MetricName: "GroupCommitted",
      Namespace: "cgmirror",
      Dimensions: Match.arrayWith([{ Name: "Group", Value: "orders" }]),
      Period: 120 * 60,
      EvaluationPeriods: 1,
      ComparisonOperator: "LessThanThreshold",
      Threshold: 1,
      TreatMissingData: "breaching",
      AlarmActions: [{ Ref: Match.stringLikeRegexp("^AlarmTopic") }],
    });
    template.hasResourceProperties("AWS::CloudWatch::Alarm", {
      MetricName: "GroupCommitted",
      Dimensions: Match.arrayWith([{ Name: "Group", Value: "billing" }]),
      Period: 1440 * 60,
      EvaluationPeriods: 2,
      DatapointsToAlarm: 2,
    });
  });

  it("GIVEN each group THEN a repair alarm fires on the first run stopped by an ambiguous repository", () => {
    for (const group of ["orders", "billing"]) {
      template.hasResourceProperties("AWS::CloudWatch::Alarm", {
        MetricName: "RepositoryNeedsRepair",
        Namespace: "cgmirror",
        Dimensions: Match.arrayWith([{ Name: "Group", Value: group }]),
        ComparisonOperator: "GreaterThanOrEqualToThreshold",
        Threshold: 1,
        TreatMissingData: "notBreaching",
        AlarmActions: [{ Ref: Match.stringLikeRegexp("^AlarmTopic") }],
      });
    }
  });

  it("fails before synthesis when two groups share a repository, or would share a stack output", () => {
    const shared = { ...billing, group: "billing2", target: billing.target };
    expect(() => synth([billing, shared])).toThrow(/groups\/billing for both "billing" and "billing2"/);
    const twin = { ...billing, group: "bill_ing", target: { ...billing.target, prefix: "groups/b2" } };
    expect(() => synth([{ ...billing, group: "bill-ing" }, twin])).toThrow(/StateMachineArnBillIng/);
  });

  it("GIVEN a failed, timed-out or aborted run THEN its group's run-failed alarm notifies the encrypted topic", () => {
    const alarms = Object.entries(template.findResources("AWS::CloudWatch::Alarm"))
      .filter(([id]) => id.startsWith("RunFailedAlarm"))
      .map(([, a]) => a);
    expect(
      alarms.every((a) => JSON.stringify(a.Properties.Metrics ?? []).includes("failed + timedOut + aborted")),
    ).toBe(true);
    expect(alarms).toHaveLength(2);
    for (const [alarm, group] of alarms.map((a, i) => [a, ["orders", "billing"][i]] as const)) {
      expect(JSON.stringify(alarm.Properties.Metrics)).toContain(`Workflow${group}StateMachine`);
      expect(alarm.Properties).toMatchObject({
        ComparisonOperator: "GreaterThanOrEqualToThreshold",
        AlarmActions: [{ Ref: expect.stringMatching(/^AlarmTopic/) }],
      });
    }
    template.hasResourceProperties("AWS::SNS::Topic", { KmsMasterKeyId: Match.anyValue() });
    template.resourceCountIs("AWS::CloudWatch::Dashboard", 1);
  });

  it("GIVEN every RPO the config allows THEN the alarm deploys: period x evaluation periods <= 7 days (<= 1 day below hourly periods)", () => {
    for (let rpoMinutes = 2; rpoMinutes <= 10080; rpoMinutes++) {
      const { periodMinutes, evaluationPeriods } = rpoAlarmShape({ ...orders, alarms: { rpoMinutes } });
      expect(periodMinutes * evaluationPeriods).toBeGreaterThanOrEqual(rpoMinutes);
      expect(periodMinutes * evaluationPeriods * 60).toBeLessThanOrEqual(
        periodMinutes < 60 ? 86_400 : 604_800,
      );
      expect(periodMinutes).toBeLessThanOrEqual(1440);
    }
  });

  it("GIVEN RPOs beyond a day THEN the alarm spans whole periods of at most a day", () => {
    expect(rpoAlarmShape({ ...orders, alarms: { rpoMinutes: 120 } })).toEqual({
      periodMinutes: 120,
      evaluationPeriods: 1,
    });
    expect(rpoAlarmShape({ ...orders, alarms: { rpoMinutes: 4000 } })).toEqual({
      periodMinutes: 1334,
      evaluationPeriods: 3,
    });
  });
});

describe("cdk-nag AwsSolutions", () => {
  it("GIVEN the stack THEN no unacknowledged finding, and every acknowledgment carries a reason", () => {
    const report = validationReport.pluginReports[0];
    expect(report?.conclusion).toBe("success");
    expect(report?.violations).toEqual([]);
    const suppressed = report?.suppressedViolations as {
      ruleName: string;
      reason?: string;
      acknowledgedReason?: string;
    }[];
    expect(suppressed.length).toBeGreaterThan(0);
    for (const s of suppressed) expect(s.reason?.length ?? 0, s.ruleName).toBeGreaterThan(40);
  });

  it("fails to build a stack with two configs of one group name", () => {
    expect(() => synth([orders, orders])).toThrow(StackPropsError);
  });
});
