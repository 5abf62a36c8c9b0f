/**
 * The stack under `target.objectLock` (infra/stack.ts, infra/maintenance.ts): the bucket is created
 * Object Lock enabled with no default retention (uncommitted objects must stay deletable), only
 * Commit may set retentions (never on HEAD or locks/), the deleting tasks may read them, and cdk-nag
 * stays clean. Synthesized without bundling.
 */
import { readFileSync } from "node:fs";
import { App, Validations } from "aws-cdk-lib";
import { Template } from "aws-cdk-lib/assertions";
import cdkNag from "cdk-nag";
import { beforeAll, describe, expect, it } from "vitest";
import { type GroupConfig, parseGroupConfig } from "#core/config/group-config.ts";
import { CgmirrorStack } from "#infra/stack.ts";

const { AwsSolutionsChecks } = cdkNag;

const locked = parseGroupConfig({
  group: "ledger",
  volumes: [{ id: "vol-0123456789abcdef0" }],
  target: {
    bucket: "acme-vault",
    prefix: "groups/ledger",
    objectLock: { mode: "COMPLIANCE", retentionDays: 30 },
  },
  schedule: { expression: "rate(1 hour)" },
});
const plain = parseGroupConfig({
  group: "scratch",
  volumes: [{ id: "vol-0123456789abcdef9" }],
  target: { bucket: "acme-scratch", prefix: "groups/scratch" },
  schedule: { expression: "rate(1 hour)" },
});

type Resources = Record<string, { Type: string; Properties: Record<string, unknown> }>;
let resources: Resources;
let nag: { conclusion: string; violations: unknown[] } | undefined;

function synth(groups: readonly GroupConfig[]) {
  const app = new App({
    // cdk-nag (the report checked here) runs; CDK's own template validation is infra-app.test.ts's.
    builtinCloudFormationValidation: false,
    context: { "aws:cdk:bundling-stacks": [] },
  });
  const stack = new CgmirrorStack(app, "Test", { groups });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  const assembly = app.synth();
  const report = JSON.parse(readFileSync(`${assembly.directory}/validation-report.json`, "utf8"));
  return { template: Template.fromStack(stack), nag: report.pluginReports[0] };
}

beforeAll(() => {
  const out = synth([locked, plain]);
  resources = out.template.toJSON().Resources as Resources;
  nag = out.nag;
});

function bucket(name: string) {
  return Object.values(resources).find(
    (r) => r.Type === "AWS::S3::Bucket" && r.Properties.BucketName === name,
  )?.Properties;
}

/** Every (action, resource) of the policies of roles whose logical id starts with `prefix`. */
function grants(prefix: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const [id, r] of Object.entries(resources)) {
    if (r.Type !== "AWS::IAM::Policy" || !id.startsWith(prefix)) continue;
    for (const s of (r.Properties.PolicyDocument as { Statement: { Action: unknown; Resource: unknown }[] })
      .Statement) {
      const acts = Array.isArray(s.Action) ? s.Action : [s.Action];
      const res = Array.isArray(s.Resource) ? s.Resource : [s.Resource];
      for (const a of acts) for (const x of res) out.push([String(a), JSON.stringify(x)]);
    }
  }
  return out;
}

describe("target.objectLock in the stack", () => {
  it("GIVEN a group with objectLock THEN its bucket is created Object Lock enabled without a default retention; the other bucket is not", () => {
    expect(bucket("acme-vault")?.ObjectLockEnabled).toBe(true);
    expect(bucket("acme-vault")?.ObjectLockConfiguration).toBeUndefined();
    expect(bucket("acme-scratch")?.ObjectLockEnabled ?? false).toBe(false);
  });

  it("THEN only Commit may set retentions, on the locked group's commits/, generations/, volumes/ and segments/ only", () => {
    const all = Object.keys(resources).filter((id) => resources[id]!.Type === "AWS::IAM::Policy");
    const setters = all.filter((id) => grants(id).some(([a]) => a === "s3:PutObjectRetention"));
    expect(setters.length).toBe(1);
    expect(setters[0]).toMatch(/^Commit/);
    const areas = grants(setters[0]!)
      .filter(([a]) => a === "s3:PutObjectRetention")
      .map(([, r]) => /acme-[a-z]+\/groups\/[a-z]+\/([A-Za-z]+)/.exec(r)?.slice(0, 2).join(" "));
    expect(new Set(areas)).toEqual(
      new Set(
        ["commits", "generations", "volumes", "segments"].map((a) => `acme-vault/groups/ledger/${a} ${a}`),
      ),
    );
    // Nobody may bypass a GOVERNANCE lock or change the bucket's lock configuration.
    for (const id of all) {
      for (const [a] of grants(id))
        expect(a).not.toMatch(/BypassGovernanceRetention|PutBucketObjectLockConfiguration/);
    }
  });

  it("THEN the tasks that delete versions (Revert, Recover, Prune) may read retentions of the locked group only", () => {
    for (const task of ["Revert", "Recover", "MaintenancePrune"]) {
      const reads = grants(task).filter(([a]) => a === "s3:GetObjectRetention");
      expect(reads.length, task).toBeGreaterThan(0);
      for (const [, r] of reads) expect(r, task).toContain("acme-vault/groups/ledger/");
    }
  });

  it("THEN cdk-nag AwsSolutions reports no unacknowledged finding", () => {
    expect(nag?.conclusion).toBe("success");
    expect(nag?.violations).toEqual([]);
  });
});
