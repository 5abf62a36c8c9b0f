/** `cgmirror config init` and `cgmirror config check`. */
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { Command } from "commander";
import type { GroupConfig, GroupConfigInput } from "#core/config/group-config.ts";
import { LOCAL_BUCKET } from "../../local/names.ts";
import { printJson, UsageError } from "../output.ts";
import { applyAwsOptions, awsOptions, stateDirOf, stateDirOption } from "../state.ts";

/** Reads and validates a group config file; every problem is listed in the error. */
export async function loadConfigFile(path: string): Promise<GroupConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(
      code === "ENOENT"
        ? `config file ${path} does not exist; create one with: npx cgmirror config init --group <name> --out ${path}`
        : `cannot read config file ${path}: ${(err as Error).message}`,
    );
  }
  const { parseGroupConfig } = await import("#core/config/group-config.ts");
  return parseGroupConfig(text, path);
}

function parseTag(value: string): { key: string; value: string } {
  const at = value.indexOf("=");
  if (at <= 0) throw new UsageError(`expected --tag Key=Value, got "${value}"`);
  return { key: value.slice(0, at), value: value.slice(at + 1) };
}

export function configCommands(): Command {
  const config = new Command("config").description("write and check group config files");

  config
    .command("init")
    .description("write a valid starter config for a group")
    .requiredOption("--group <name>", "consistency group name")
    .requiredOption("--out <file>", "where to write the config")
    .option("--local", "use the simulated volumes of the local stack and its bucket")
    .option("--tag <Key=Value>", "in AWS: the group's volumes are those with this tag")
    .option("--bucket <name>", "target bucket (AWS)")
    .option("--force", "overwrite --out if it exists")
    .addOption(stateDirOption())
    .addOption(awsOptions()[0]!)
    .addOption(awsOptions()[1]!)
    .option("--json", "also print the config")
    .action(
      async (opts: {
        group: string;
        out: string;
        local?: boolean;
        tag?: string;
        bucket?: string;
        force?: boolean;
        stateDir?: string;
        region?: string;
        profile?: string;
        json?: boolean;
      }) => {
        const { parseGroupConfig } = await import("#core/config/group-config.ts");
        if (existsSync(opts.out) && !opts.force) {
          throw new UsageError(`${opts.out} already exists; add --force to overwrite it`);
        }
        let volumes: { id: string; instanceId?: string; kmsKeyArn?: string }[];
        let bucket: string;
        if (opts.local) {
          const { VolumeSimulator } = await import("../../local/volumes/simulator.ts");
          const sim = new VolumeSimulator({ stateDir: stateDirOf(opts) });
          volumes = (await sim.list()).map((v) => ({
            id: v.id,
            ...(v.instanceId ? { instanceId: v.instanceId } : {}),
          }));
          if (volumes.length === 0) {
            throw new UsageError(
              "there are no simulated volumes; create some first with: npx cgmirror local volume create --id vol-a --size-gib 4 --instance i-a",
            );
          }
          bucket = LOCAL_BUCKET;
        } else {
          if (!opts.tag || !opts.bucket) {
            throw new UsageError(
              "in AWS, give --tag Key=Value (which volumes) and --bucket (where the copies go); or use --local",
            );
          }
          applyAwsOptions(opts);
          const { findTaggedVolumes } = await import("#adapters/ec2-volumes.ts");
          const { EC2Client } = await import("@aws-sdk/client-ec2");
          const ec2 = new EC2Client({});
          try {
            volumes = await findTaggedVolumes(ec2, parseTag(opts.tag));
          } finally {
            ec2.destroy();
          }
          if (volumes.length === 0)
            throw new UsageError(`no EBS volume has the tag ${opts.tag} in this account and Region`);
          bucket = opts.bucket;
        }
        const doc: GroupConfigInput = {
          $schema: "https://raw.githubusercontent.com/cgmirror/cgmirror/main/docs/group-config.schema.json",
          group: opts.group,
          volumes,
          target: { bucket, prefix: `groups/${opts.group}` },
          schedule: { expression: "rate(1 hour)" },
          freeze: { enabled: false, maxCoordinationSeconds: 10 },
          prepare: { policy: "failFast" },
          snapshots: { keep: 1 },
          retention: { keepLast: 24, keepDaily: 7, keepWeekly: 4, keepMonthly: 6 },
        };
        parseGroupConfig(doc, opts.out); // a starter config must itself be valid
        await writeFile(opts.out, `${JSON.stringify(doc, null, 2)}\n`);
        if (opts.json) printJson(doc);
        else {
          console.log(
            `wrote ${opts.out}: group ${opts.group} with ${volumes.length} volumes → s3://${bucket}/groups/${opts.group}`,
          );
          const keys = [...new Set(volumes.flatMap((v) => (v.kmsKeyArn ? [v.kmsKeyArn] : [])))];
          if (keys.length > 0) {
            console.log(
              `${keys.length} KMS key(s) encrypt these volumes (volumes[].kmsKeyArn): ${keys.join(", ")}. ` +
                "A customer-managed key's policy must let the stack's Plan and Transfer roles decrypt through EBS: " +
                'see docs/operations.md, "Encrypted volumes".',
            );
          }
        }
      },
    );

  config
    .command("check")
    .description("validate a config file and explain each problem")
    .argument("<file>", "the config file")
    .option("--json", "print the parsed config (defaults applied)")
    .action(async (file: string, opts: { json?: boolean }) => {
      const parsed = await loadConfigFile(file);
      if (opts.json) printJson(parsed);
      else
        console.log(
          `${file}: OK (group ${parsed.group}, ${parsed.volumes.length} volumes, ${parsed.schedule.expression})`,
        );
    });

  return config;
}
