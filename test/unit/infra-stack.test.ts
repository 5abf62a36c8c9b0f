/**
 * The CDK stack, synthesized once (function bundling skipped via the `aws:cdk:bundling-stacks`
 * context; `npm run synth` bundles for real) with the cdk-nag AwsSolutions plugin on.
 */
import { readFileSync } from "node:fs";
import { App, Validations } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import cdkNag from "cdk-nag";
import { beforeAll, describe, expect, it } from "vitest";
import { type GroupConfig, parseGroupConfig } from "#core/group-config.ts";
import { CgmirrorStack, repositoryLifecycle, rpoAlarmShape, StackPropsError } from "#infra/stack.ts";
import { type CfnTemplate, definitionFromTemplate, localDefinition } from "#workflows/definition.ts";

const { AwsSolutionsChecks } = cdkNag;

const orders = parseGroupConfig({
  group: "orders",
  volumes: [
    { id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0", mountPoint: "/data" },
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
  const app = new App({ context: { "aws:cdk:bundling-stacks": [] } });
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
      expect(rule.expiration, rule.id).toBeUndefined();
      if (rule.noncurrentVersionExpiration !== undefined) {
        expect(rule.prefix, rule.id).toMatch(/^groups\/(orders|billing)\/(locks\/|runs\/|HEAD)$/);
      }
    }
    expect(rules.map((r) => r.id)).toContain("abort-incomplete-multipart");
  });
});

describe("the functions", () => {
  it("GIVEN every task THEN Node 24 on arm64 with X-Ray and the Powertools environment", () => {
    template.resourceCountIs("AWS::Lambda::Function", 10);
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
    expect(JSON.stringify(put?.Resource)).toContain(":s3:::acme-backups/groups/orders/*");
    expect(JSON.stringify(put?.Resource)).toContain(":s3:::acme-backups/groups/billing/*");
    expect(JSON.stringify(put?.Resource)).not.toMatch(/acme-backups\/\*"/);
    const list = statements.find((s) => actions([s]).includes("s3:ListBucketVersions"));
    expect(list?.Condition).toEqual({
      StringLike: { "s3:prefix": ["groups/orders", "groups/orders/*", "groups/billing", "groups/billing/*"] },
    });
    expect(actions(statements)).not.toContain("s3:DeleteObjectVersion");
    expect(actions(policiesOf("Revert"))).toContain("s3:DeleteObjectVersion");
  });

  it("GIVEN Snapshot THEN it creates snapshots only of the group's volumes/instances, tagged for the group, and freezes only its instances", () => {
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
      StringEquals: { "aws:RequestTag/cgmirror:group": ["orders", "billing"] },
    });
    const send = statements.find((s) => actions([s]).includes("ssm:SendCommand"));
    const sendText = JSON.stringify(send?.Resource);
    expect(sendText).toContain("document/AWS-RunShellScript");
    expect(sendText).toContain("instance/i-0123456789abcdef1");
    // billing does not freeze: its instance gets no SendCommand.
    expect(sendText).not.toContain("i-0123456789abcdef9");
    const del = statements.find((s) => actions([s]).includes("ec2:DeleteSnapshot"));
    expect(del?.Condition).toEqual({
      StringEquals: { "aws:ResourceTag/cgmirror:group": ["orders", "billing"] },
    });
  });

  it("GIVEN CheckSnapshots THEN it may only describe snapshots", () => {
    expect(actions(policiesOf("CheckSnapshots")).filter((a) => !a.startsWith("xray:"))).toEqual([
      "ec2:DescribeSnapshots",
    ]);
  });
});

describe("the state machine and the schedules", () => {
  it("GIVEN the state machine THEN it logs ALL events and traces with X-Ray", () => {
    template.hasResourceProperties("AWS::StepFunctions::StateMachine", {
      TracingConfiguration: { Enabled: true },
      LoggingConfiguration: Match.objectLike({ Level: "ALL", IncludeExecutionData: true }),
    });
  });

  it("GIVEN the deployed definition THEN it is the local definition (same states) with a transfer Map that tolerates no failure", () => {
    const deployed = definitionFromTemplate(json);
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

  it("GIVEN two groups THEN one schedule each, targeting the state machine with the parsed config as input", () => {
    template.resourceCountIs("AWS::Scheduler::Schedule", 2);
    const schedules = template.findResources("AWS::Scheduler::Schedule");
    const byExpr = Object.fromEntries(
      Object.values(schedules).map((r) => [r.Properties.ScheduleExpression, r.Properties]),
    );
    expect(byExpr["rate(1 hour)"].Target.Arn).toEqual({
      Ref: expect.stringMatching(/^WorkflowStateMachine/),
    });
    expect(JSON.parse(byExpr["rate(1 hour)"].Target.Input)).toEqual({ config: orders });
    expect(byExpr["cron(0 2 * * ? *)"].ScheduleExpressionTimezone).toBe("Europe/Berlin");
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

  it("fails before synthesis when two groups share a repository or a lease is shorter than the execution timeout", () => {
    const shared = { ...billing, group: "billing2", target: billing.target };
    expect(() => synth([billing, shared])).toThrow(/groups\/billing for both "billing" and "billing2"/);
    expect(() => synth([orders, { ...billing, runTimeoutMinutes: 1440 }])).toThrow(
      /orders\.runTimeoutMinutes: expected a lock lease/,
    );
  });

  it("GIVEN a failed, timed-out or aborted run THEN the run-failed alarm notifies the encrypted topic", () => {
    template.hasResourceProperties("AWS::CloudWatch::Alarm", {
      Metrics: Match.arrayWith([Match.objectLike({ Expression: "failed + timedOut + aborted" })]),
      ComparisonOperator: "GreaterThanOrEqualToThreshold",
      AlarmActions: [{ Ref: Match.stringLikeRegexp("^AlarmTopic") }],
    });
    template.hasResourceProperties("AWS::SNS::Topic", { KmsMasterKeyId: Match.anyValue() });
    template.resourceCountIs("AWS::CloudWatch::Dashboard", 1);
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
