/**
 * The stack's logical ids are a contract with every deployed stack: CloudFormation replaces a resource
 * whose logical id changes (a new, empty repository bucket; new keys; new state machines). The ids of
 * three reference deployments are recorded in test/fixtures/infra/logical-ids.json (taken from the
 * stack before it was split into parts, infra/stack-part.ts). A new resource is added to the fixture
 * on purpose; an id that disappears means a deployed resource would be replaced.
 */
import { readFileSync } from "node:fs";
import { App, type CfnElement, CfnResource, Stack, type StackProps } from "aws-cdk-lib";
import { Construct } from "constructs";
import { describe, expect, it } from "vitest";
import { parseGroupConfig } from "#core/config/group-config.ts";
import { CgmirrorStack, type CgmirrorStackProps } from "#infra/stack.ts";
import { logicalIdWithoutParts, StackPart } from "#infra/stack-part.ts";

const FIXTURE = new URL("../fixtures/infra/logical-ids.json", import.meta.url);
const recorded = JSON.parse(readFileSync(FIXTURE, "utf8")) as Record<string, Record<string, string>>;

const orders = parseGroupConfig({
  group: "orders",
  volumes: [
    {
      id: "vol-0123456789abcdef0",
      instanceId: "i-0123456789abcdef0",
      mountPoint: "/data",
      kmsKeyArn: "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
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
const other = parseGroupConfig({
  group: "other_x",
  volumes: [{ id: "vol-0123456789abcdef7" }],
  target: { bucket: "other-backups", prefix: "o", objectLock: { mode: "GOVERNANCE", retentionDays: 7 } },
  schedule: { expression: "rate(2 hours)" },
});

/** one group with freeze; two groups in one bucket with an alarm e-mail; two buckets with Object Lock */
const CASES: Record<string, Omit<CgmirrorStackProps, keyof StackProps>> = {
  one: { groups: [orders] },
  two: { groups: [orders, billing], alarmEmail: "ops@example.com" },
  three: { groups: [billing, other], objectLock: true },
};

function logicalIds(props: (typeof CASES)[string]): Record<string, string> {
  const app = new App({
    // Ids and widgets only: the template's validation is test/unit/infra-stack.test.ts's.
    builtinCloudFormationValidation: false,
    context: { "aws:cdk:bundling-stacks": [] },
  });
  const stack = new CgmirrorStack(app, "Test", props);
  const template = app.synth().getStackArtifact(stack.artifactId).template as {
    Resources: Record<string, { Type: string }>;
  };
  return Object.fromEntries(
    Object.entries(template.Resources)
      .map(([id, r]) => [id, r.Type] as const)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
}

describe("the stack's logical ids", () => {
  for (const [name, props] of Object.entries(CASES)) {
    it(`GIVEN the reference deployment "${name}" THEN every resource keeps its recorded logical id and type`, () => {
      expect(logicalIds(props)).toEqual(recorded[name]);
    });
  }

  it("GIVEN a resource inside a StackPart THEN its logical id is the one it has directly in the stack; inside a plain construct it changes", () => {
    class Part extends StackPart {}
    class PartStack extends Stack {
      protected override allocateLogicalId(element: CfnElement): string {
        return logicalIdWithoutParts(element) ?? super.allocateLogicalId(element);
      }
    }
    const app = new App();
    const direct = new Stack(app, "Direct");
    const viaPart = new PartStack(app, "ViaPart");
    const viaConstruct = new PartStack(app, "ViaConstruct");
    const bucket = (scope: Construct) => new CfnResource(scope, "Repository", { type: "AWS::S3::Bucket" });
    const ids = {
      direct: direct.resolve(bucket(new Construct(direct, "Nested")).logicalId),
      part: viaPart.resolve(bucket(new Construct(new Part(viaPart, "Storage"), "Nested")).logicalId),
      plain: viaConstruct.resolve(
        bucket(new Construct(new Construct(viaConstruct, "Storage"), "Nested")).logicalId,
      ),
    };
    expect(ids.part).toBe(ids.direct);
    expect(ids.plain).not.toBe(ids.direct);
  });
});
