/**
 * Restore into EBS in AWS (infra/restore.ts, workflows/restore.ts): the function, its least-privilege
 * IAM, the state machine (the same definition the local runner executes) and its output; cdk-nag clean.
 */
import { readFileSync } from "node:fs";
import { App, Validations } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import cdkNag from "cdk-nag";
import { beforeAll, describe, expect, it } from "vitest";
import { parseGroupConfig } from "#core/config/group-config.ts";
import { RESTORE_TAGS } from "#core/restore/restore-snapshots.ts";
import { CgmirrorStack } from "#infra/stack.ts";
import {
  type CfnTemplate,
  definitionByLogicalId,
  LOCAL_RESTORE_FUNCTION_ARN,
  restoreDefinition,
} from "#workflows/definition.ts";

const { AwsSolutionsChecks } = cdkNag;

const orders = parseGroupConfig({
  group: "orders",
  volumes: [{ id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0" }],
  target: { bucket: "acme-backups", prefix: "groups/orders" },
  schedule: { expression: "rate(1 hour)" },
});

type Statement = { Sid?: string; Action: string | string[]; Resource: unknown; Condition?: unknown };
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

function restorePolicy(): Statement[] {
  const entry = Object.entries(json.Resources).find(
    ([id, r]) =>
      r.Type === "AWS::IAM::Policy" && id.startsWith("RestoreRestoreFunctionServiceRoleDefaultPolicy"),
  );
  if (!entry) throw new Error("no policy of the RestoreVolume function in the template");
  return (entry[1].Properties.PolicyDocument as { Statement: Statement[] }).Statement;
}

const actionsOf = (s: Statement) => (Array.isArray(s.Action) ? s.Action : [s.Action]);

describe("the restore stack resources", () => {
  it("GIVEN a group THEN a RestoreVolume function (900 s) and a restore state machine whose ARN is an output", () => {
    template.hasResourceProperties("AWS::Lambda::Function", {
      Description: Match.stringLikeRegexp("RestoreVolume"),
      Timeout: 900,
    });
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    expect(JSON.stringify(outputs.RestoreStateMachineArn?.Value)).toMatch(/RestoreWorkflowStateMachine/);
  });

  it("GIVEN the stack's restore state machine THEN its definition is the one the local runner executes", async () => {
    const fnId = Object.keys(json.Resources).find(
      (id) => id.startsWith("RestoreRestoreFunction") && json.Resources[id]!.Type === "AWS::Lambda::Function",
    )!;
    const deployed = definitionByLogicalId(json, "RestoreWorkflow", (id) =>
      id === fnId ? LOCAL_RESTORE_FUNCTION_ARN : `unexpected:${id}`,
    );
    expect(JSON.stringify(deployed)).not.toMatch(/unexpected:/);
    expect(deployed).toEqual(await restoreDefinition());
    expect(Object.keys(deployed.States)).toEqual(
      expect.arrayContaining([
        "PrepareRestore",
        "RestoreVolumes",
        "FinalizeRestore",
        "CleanupRestore",
        "RestoreFailed",
      ]),
    );
  });

  it("GIVEN RestoreVolume's role THEN it reads the repository and writes only its read lease, creates snapshots only with the restore's tags, and writes or deletes only snapshots a restore tagged", () => {
    const statements = restorePolicy();
    const all = statements.flatMap(actionsOf);
    expect(all.filter((a) => a.startsWith("s3:")).sort()).toEqual([
      "s3:DeleteObjectVersion",
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:ListBucket",
      "s3:ListBucketVersions",
      "s3:PutObject",
    ]);
    // Writes and deletes: only leases/ of the group's prefix (docs/format.md §10.2).
    const writes = statements.filter((s) =>
      actionsOf(s).some((a) => a === "s3:PutObject" || a === "s3:DeleteObjectVersion"),
    );
    expect(writes).toHaveLength(1);
    expect(JSON.stringify(writes[0]!.Resource)).toMatch(/\/leases\/\*/);
    expect(JSON.stringify(writes[0]!.Resource)).not.toMatch(/segments|volumes|generations|commits|HEAD/);
    expect(all).not.toContain("ebs:GetSnapshotBlock");
    const start = statements.find((s) => actionsOf(s).includes("ebs:StartSnapshot"))!;
    expect(actionsOf(start).sort()).toEqual(["ebs:StartSnapshot", "ec2:CreateTags"]);
    expect(start.Condition).toEqual({
      StringEquals: { [`aws:RequestTag/${RESTORE_TAGS.group}`]: ["orders"] },
      Null: { [`aws:RequestTag/${RESTORE_TAGS.restoreId}`]: "false" },
    });
    for (const action of ["ebs:PutSnapshotBlock", "ebs:CompleteSnapshot", "ec2:DeleteSnapshot"]) {
      const s = statements.filter((x) => actionsOf(x).includes(action));
      expect(s, action).toHaveLength(1);
      expect(s[0]!.Condition, action).toEqual({
        StringEquals: { [`aws:ResourceTag/${RESTORE_TAGS.group}`]: ["orders"] },
        Null: { [`aws:ResourceTag/${RESTORE_TAGS.restoreId}`]: "false" },
      });
    }
    const kms = statements.find((s) => actionsOf(s).includes("kms:Decrypt"))!;
    expect(actionsOf(kms)).toEqual(["kms:Decrypt", "kms:GenerateDataKey*"]);
    expect(JSON.stringify(kms.Condition)).toMatch(/kms:ViaService/);
  });

  it("GIVEN cdk-nag THEN no unacknowledged finding", () => {
    expect(report.pluginReports[0]).toMatchObject({ conclusion: "success", violations: [] });
  });
});
