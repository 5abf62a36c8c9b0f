/**
 * The CDK app: `npx cdk deploy -c config=group.json` (several: `-c config=a.json,b.json`).
 * The config path can also come from CGMIRROR_CONFIG. A bad config fails synth with the
 * GroupConfigError text (every problem listed) and no stack trace.
 *
 * Other context keys: stackName (default "Cgmirror"), alarmEmail, objectLock=true.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { App, Validations } from "aws-cdk-lib";
import cdkNag from "cdk-nag";
import { type GroupConfig, GroupConfigError, parseGroupConfig } from "#core/config/group-config.ts";
import { CgmirrorStack, StackPropsError } from "../stack.ts";

// cdk-nag is CommonJS without named-export hints for Node's ESM loader.
const { AwsSolutionsChecks } = cdkNag;

class UsageError extends Error {
  override readonly name = "UsageError";
}

function loadGroups(spec: string | undefined): GroupConfig[] {
  if (!spec) {
    throw new UsageError(
      "no group config given: pass -c config=path/to/group.json (comma-separate several) or set CGMIRROR_CONFIG. " +
        "See docs/config.md; infra/examples/group.json is a template.",
    );
  }
  return spec
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p !== "")
    .map((path) => {
      let text: string;
      try {
        text = readFileSync(resolve(path), "utf8");
      } catch (cause) {
        throw new UsageError(`cannot read group config ${path}: ${(cause as Error).message}`, { cause });
      }
      const config = parseGroupConfig(text, path);
      const local = localOnlyProblems(config, path);
      if (local.length > 0) throw new UsageError(local.join("\n"));
      return config;
    });
}

const EBS_VOLUME_ID = /^vol-([0-9a-f]{8}|[0-9a-f]{17})$/;
const EC2_INSTANCE_ID = /^i-([0-9a-f]{8}|[0-9a-f]{17})$/;

/** A config written by `cgmirror config init --local` names simulated volumes and the local bucket: refuse it. */
export function localOnlyProblems(g: GroupConfig, path: string): string[] {
  const problems: string[] = [];
  if (g.target.bucket === "cgmirror-local")
    problems.push(`target.bucket is the local stack's bucket "cgmirror-local"`);
  for (const v of g.volumes) {
    if (!EBS_VOLUME_ID.test(v.id))
      problems.push(`volume ${v.id} is not an EBS volume id (vol- and 8 or 17 hex digits)`);
    if (v.instanceId && !EC2_INSTANCE_ID.test(v.instanceId)) {
      problems.push(`instance ${v.instanceId} of ${v.id} is not an EC2 instance id`);
    }
  }
  return problems.length === 0
    ? []
    : [
        `${path} is a local-only config (made by \`cgmirror config init --local\`?): ${problems.join("; ")}. ` +
          "For AWS write one with: npx cgmirror config init --group <name> --tag Key=Value --bucket <bucket> --out group.json",
      ];
}

/**
 * aws-cdk-lib writes "Bundling asset <path>..." to stderr for every function it bundles, with no
 * option to turn it off; ten such lines on every synth and deploy say nothing a user acts on.
 * CGMIRROR_SHOW_BUNDLING=1 shows them.
 */
function quietBundling(): void {
  if (process.env.CGMIRROR_SHOW_BUNDLING === "1") return;
  const write = process.stderr.write.bind(process.stderr) as (chunk: unknown, ...rest: unknown[]) => boolean;
  process.stderr.write = ((chunk: unknown, ...rest: unknown[]) =>
    typeof chunk === "string" && /^Bundling asset [^\n]*\.\.\.\n$/.test(chunk)
      ? true
      : write(chunk, ...rest)) as typeof process.stderr.write;
}

function main(): void {
  quietBundling();
  const app = new App();
  const spec = (app.node.tryGetContext("config") as string | undefined) ?? process.env.CGMIRROR_CONFIG;
  const groups = loadGroups(spec);
  const alarmEmail = app.node.tryGetContext("alarmEmail") as string | undefined;
  const objectLock = String(app.node.tryGetContext("objectLock") ?? "false") === "true";
  new CgmirrorStack(app, (app.node.tryGetContext("stackName") as string | undefined) ?? "Cgmirror", {
    description:
      "cgmirror: consistency groups of EBS volumes, copied incrementally to S3 and committed atomically",
    groups,
    objectLock,
    ...(alarmEmail ? { alarmEmail } : {}),
  });
  // cdk-nag AwsSolutions: any unacknowledged finding interrupts synthesis.
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
  app.synth();
}

try {
  main();
} catch (error) {
  if (error instanceof GroupConfigError || error instanceof UsageError || error instanceof StackPropsError) {
    process.stderr.write(`cgmirror: ${error.message}\n`);
    process.exit(1);
  }
  throw error;
}
