/**
 * cgmirror's command-line interface. Every command has --help; data commands take --json; the exit code
 * is 0 only on success. User mistakes print one line (`cgmirror: …`), never a stack trace.
 */
import { spawn } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import { openSync } from "node:fs";
import { mkdir, readFile, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { EBSClient } from "@aws-sdk/client-ebs";
import { Command, CommanderError, Option } from "commander";
import {
  attachOrStartLocalStack,
  defaultStateDir,
  endpointsFile,
  isAlive,
  type LocalEndpoints,
  localEnvironment,
  runningStack,
} from "../local/stack.ts";
import { VolumeSimulator } from "../local/volumes/simulator.ts";
import { backupCommand } from "./commands/backup.ts";
import { configCommands } from "./commands/config.ts";
import { demoCommand } from "./commands/demo.ts";
import { forgetCommand, pruneCommand } from "./commands/lifecycle.ts";
import { repairCommand, restoreCommand, statusCommand, verifyCommand } from "./commands/repo.ts";
import { formatBytes, isUserFacing, printJson, table, UsageError } from "./output.ts";
import { parseNonNegativeInt } from "./parse.ts";

const here = dirname(fileURLToPath(import.meta.url));

function stateDirOf(opts: { stateDir?: string }): string {
  return resolve(opts.stateDir ?? process.env.CGM_LOCAL_STATE_DIR ?? defaultStateDir());
}

/** Deterministic pseudo-random bytes for `--random N --seed S` (AES-256-CTR keystream). */
export function seededBytes(length: number, seed: number): Buffer {
  const key = createHash("sha256").update(`cgmirror-random:${seed}`).digest();
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(length)), cipher.final()]);
}

function ebsClientFor(e: LocalEndpoints): EBSClient {
  return new EBSClient({
    endpoint: e.ebsEndpoint,
    region: e.region,
    credentials: { accessKeyId: e.accessKeyId, secretAccessKey: e.secretAccessKey },
  });
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

function localCommands(): Command {
  const local = new Command("local").description(
    "the embedded local stack (S3 server + EBS direct API emulator) and simulated volumes",
  );
  const stateOption = () =>
    new Option("--state-dir <dir>", "state directory (default: .cgmirror/ in the current directory)");

  local
    .command("up")
    .description("start the local S3 server and EBS emulator in the background")
    .addOption(stateOption())
    .option("--json", "print the endpoints as JSON")
    .action(async (opts: { stateDir?: string; json?: boolean }) => {
      const stateDir = stateDirOf(opts);
      await mkdir(stateDir, { recursive: true });
      let e = await runningStack(stateDir);
      if (!e) {
        const log = openSync(join(stateDir, "stack.log"), "a");
        const child = spawn(process.execPath, [join(here, "..", "local", "stack-daemon.ts"), stateDir], {
          detached: true,
          stdio: ["ignore", log, log],
        });
        child.unref();
        const up = await waitFor(async () => (await runningStack(stateDir)) !== undefined, 600_000);
        e = await runningStack(stateDir);
        if (!up || !e) {
          const tail = (await readFile(join(stateDir, "stack.log"), "utf8").catch(() => ""))
            .trim()
            .split("\n")
            .at(-1);
          throw new UsageError(
            `the local stack did not start: ${tail || "no output"} (log: ${join(stateDir, "stack.log")})`,
          );
        }
      }
      if (opts.json) printJson(e);
      else {
        console.log(
          `local stack up (pid ${e.pid}): S3 ${e.s3Endpoint} bucket ${e.bucket}, EBS ${e.ebsEndpoint}`,
        );
        console.log(`state in ${stateDir}; point other shells at it with: eval "$(npx cgmirror local env)"`);
      }
    });

  local
    .command("down")
    .description("stop the background local stack (its data stays under the state directory)")
    .addOption(stateOption())
    .action(async (opts: { stateDir?: string }) => {
      const stateDir = stateDirOf(opts);
      const e = await runningStack(stateDir);
      if (!e?.pid) {
        console.log("the local stack is not running");
        return;
      }
      const pid = e.pid;
      process.kill(pid, "SIGTERM");
      const down = await waitFor(async () => !isAlive(pid), 15_000);
      if (!down) process.kill(pid, "SIGKILL");
      await rm(endpointsFile(stateDir), { force: true });
      console.log("local stack stopped");
    });

  local
    .command("env")
    .description("print `export NAME=value` lines that point other commands and AWS SDKs at the local stack")
    .addOption(stateOption())
    .option("--json", "print as JSON")
    .action(async (opts: { stateDir?: string; json?: boolean }) => {
      const e = await runningStack(stateDirOf(opts));
      if (!e) throw new UsageError("the local stack is not running; start it with: npx cgmirror local up");
      const env = localEnvironment(e);
      if (opts.json) printJson(env);
      else for (const [k, v] of Object.entries(env)) console.log(`export ${k}=${v}`);
    });

  const volume = local
    .command("volume")
    .description("simulated EBS volumes (sparse images with dirty-block tracking)");

  volume
    .command("create")
    .description("create a simulated volume")
    .requiredOption("--id <vol-id>", "volume id, like vol-a")
    .requiredOption("--size-gib <n>", "size in GiB", parseNonNegativeInt)
    .option("--instance <i-id>", "the instance it is attached to, like i-a")
    .addOption(stateOption())
    .option("--json", "print the volume as JSON")
    .action(
      async (opts: { id: string; sizeGib: number; instance?: string; stateDir?: string; json?: boolean }) => {
        const sim = new VolumeSimulator({ stateDir: stateDirOf(opts) });
        const v = await sim.create({
          id: opts.id,
          sizeGiB: opts.sizeGib,
          ...(opts.instance ? { instanceId: opts.instance } : {}),
        });
        if (opts.json) printJson(v);
        else console.log(`created ${v.id} (${v.sizeGiB} GiB${v.instanceId ? `, on ${v.instanceId}` : ""})`);
      },
    );

  volume
    .command("write")
    .description("write bytes at any byte offset (from a file, or seeded random bytes)")
    .requiredOption("--id <vol-id>", "volume id")
    .requiredOption("--offset <bytes>", "byte offset (need not be block-aligned)", parseNonNegativeInt)
    .option("--file <path>", "write this file's bytes")
    .option("--random <bytes>", "write this many pseudo-random bytes", parseNonNegativeInt)
    .option("--seed <n>", "seed for --random", parseNonNegativeInt, 1)
    .addOption(stateOption())
    .option("--json", "print what was written as JSON")
    .action(
      async (opts: {
        id: string;
        offset: number;
        file?: string;
        random?: number;
        seed: number;
        stateDir?: string;
        json?: boolean;
      }) => {
        if ((opts.file === undefined) === (opts.random === undefined)) {
          throw new UsageError("give exactly one of --file <path> or --random <bytes>");
        }
        const data =
          opts.file !== undefined ? await readFile(opts.file) : seededBytes(opts.random!, opts.seed);
        const sim = new VolumeSimulator({ stateDir: stateDirOf(opts) });
        await sim.write(opts.id, opts.offset, data);
        const sha256 = createHash("sha256").update(data).digest("hex");
        if (opts.json) printJson({ volumeId: opts.id, offset: opts.offset, bytes: data.length, sha256 });
        else console.log(`wrote ${formatBytes(data.length)} to ${opts.id} at offset ${opts.offset}`);
      },
    );

  volume
    .command("read")
    .description("copy a volume's whole image to a file (sparse where never written)")
    .requiredOption("--id <vol-id>", "volume id")
    .requiredOption("--out <path>", "output file")
    .addOption(stateOption())
    .action(async (opts: { id: string; out: string; stateDir?: string }) => {
      const sim = new VolumeSimulator({ stateDir: stateDirOf(opts) });
      await sim.exportImage(opts.id, resolve(opts.out));
      console.log(`wrote the image of ${opts.id} to ${opts.out}`);
    });

  volume
    .command("list")
    .description("list simulated volumes")
    .addOption(stateOption())
    .option("--json", "print as JSON")
    .action(async (opts: { stateDir?: string; json?: boolean }) => {
      const sim = new VolumeSimulator({ stateDir: stateDirOf(opts) });
      const vols = await sim.list();
      if (opts.json) printJson(vols);
      else
        console.log(
          table(
            ["VOLUME", "SIZE", "INSTANCE", "SNAPSHOTS", "LAST SNAPSHOT"],
            vols.map((v) => [
              v.id,
              `${v.sizeGiB} GiB`,
              v.instanceId ?? "-",
              v.snapshots.length,
              v.lastSnapshotId ?? "-",
            ]),
          ),
        );
    });

  volume
    .command("snapshot")
    .description("take a snapshot of a simulated volume now (outside any backup; for experiments)")
    .requiredOption("--id <vol-id>", "volume id")
    .addOption(stateOption())
    .option("--json", "print as JSON")
    .action(async (opts: { id: string; stateDir?: string; json?: boolean }) => {
      const stack = await attachOrStartLocalStack({ stateDir: stateDirOf(opts) });
      const ebs = ebsClientFor(stack);
      try {
        const sim = new VolumeSimulator({ stateDir: stack.stateDir, ebs });
        const snap = await sim.initiateSnapshot(opts.id);
        await snap.completed;
        const out = { volumeId: opts.id, snapshotId: snap.snapshotId, changedBlocks: snap.changedBlocks };
        if (opts.json) printJson(out);
        else console.log(`snapshot ${out.snapshotId} of ${opts.id}: ${out.changedBlocks} changed blocks`);
      } finally {
        ebs.destroy();
        await stack.stop();
      }
    });

  return local;
}

export function buildProgram(): Command {
  const program = new Command("cgmirror")
    .description(
      "consistency groups across EBS volumes, backed up incrementally into S3 and committed atomically",
    )
    .version("0.1.0")
    .showHelpAfterError("(add --help for usage)")
    .exitOverride();
  program.addCommand(localCommands());
  program.addCommand(configCommands());
  program.addCommand(backupCommand());
  program.addCommand(demoCommand());
  program.addCommand(statusCommand());
  program.addCommand(restoreCommand());
  program.addCommand(verifyCommand());
  program.addCommand(repairCommand());
  program.addCommand(forgetCommand());
  program.addCommand(pruneCommand());
  const override = (c: Command): void => {
    c.exitOverride();
    c.commands.forEach(override);
  };
  override(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    // A command that completed but found something wrong (verify's problems) sets process.exitCode.
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? 0 : 2;
    }
    if (isUserFacing(err)) {
      console.error(`cgmirror: ${err.message}`);
      return err instanceof UsageError ? 2 : 1;
    }
    console.error(`cgmirror: unexpected error: ${(err as Error)?.message ?? String(err)}`);
    if (process.env.CGM_DEBUG) console.error(err);
    else console.error("(set CGM_DEBUG=1 to see the stack trace, and please report it)");
    return 1;
  }
}
