/** `cgmirror local …`: the embedded local stack (S3 server + EBS emulator) and simulated volumes. */
import { createHash } from "node:crypto";
import { Command } from "commander";
import type { LocalEndpoints } from "../../local/stack.ts";
import { BusyError, EnvironmentError, UsageError } from "../errors.ts";
import { formatBytes, printJson, table } from "../output.ts";
import { parseNonNegativeInt, parsePositiveInt } from "../parse.ts";
import { stateDirOf, stateDirOption } from "../state.ts";

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

async function simulator(stateDir: string) {
  const { VolumeSimulator } = await import("../../local/volumes/simulator.ts");
  return new VolumeSimulator({ stateDir });
}

function describeUp(e: LocalEndpoints, stateDir: string, already: boolean): void {
  console.log(
    `local stack ${already ? "already running" : "up"} (pid ${e.pid}): S3 ${e.s3Endpoint} bucket ${e.bucket}, EBS ${e.ebsEndpoint}`,
  );
  console.log(
    `state in ${stateDir}; point other shells and the AWS CLI at it with: eval "$(npx cgmirror local env)"`,
  );
}

export function localCommands(): Command {
  const local = new Command("local").description(
    "the embedded local stack (S3 server + EBS direct API emulator) and simulated volumes",
  );

  local
    .command("up")
    .description(
      "start the local S3 server and EBS emulator in the background (says so when already running)",
    )
    .addOption(stateDirOption())
    .option("--json", "print the endpoints as JSON")
    .action(async (opts: { stateDir?: string; json?: boolean }) => {
      const stateDir = stateDirOf(opts);
      const { mkdir, readFile } = await import("node:fs/promises");
      const { openSync } = await import("node:fs");
      const { spawn } = await import("node:child_process");
      const { join } = await import("node:path");
      const { runningStack, stackLockFile, isAlive } = await import("../../local/names.ts");
      await mkdir(stateDir, { recursive: true });
      let e = await runningStack(stateDir);
      const already = e !== undefined;
      if (!e) {
        const holder = Number((await readFile(stackLockFile(stateDir), "utf8").catch(() => "")).trim());
        if (holder > 0 && isAlive(holder)) {
          throw new BusyError(
            `another cgmirror command (pid ${holder}) is using the local stack in ${stateDir}; run \`local up\` again when it has finished`,
          );
        }
        const log = openSync(join(stateDir, "stack.log"), "a");
        const daemon = join(import.meta.dirname, "..", "..", "local", "stack-daemon.ts");
        const child = spawn(process.execPath, [daemon, stateDir], {
          detached: true,
          stdio: ["ignore", log, log],
        });
        let exited = false;
        child.once("exit", () => {
          exited = true;
        });
        child.unref();
        await waitFor(async () => exited || (await runningStack(stateDir)) !== undefined, 600_000);
        e = await runningStack(stateDir);
        if (!e) {
          const tail = (await readFile(join(stateDir, "stack.log"), "utf8").catch(() => ""))
            .trim()
            .split("\n")
            .at(-1);
          throw new EnvironmentError(
            `the local stack did not start: ${tail || "no output"} (log: ${join(stateDir, "stack.log")})`,
          );
        }
      }
      if (opts.json) printJson({ ...e, alreadyRunning: already });
      else describeUp(e, stateDir, already);
    });

  local
    .command("down")
    .description("stop the background local stack (its data stays under the state directory)")
    .addOption(stateDirOption())
    .action(async (opts: { stateDir?: string }) => {
      const stateDir = stateDirOf(opts);
      const { runningStack, isAlive, endpointsFile } = await import("../../local/names.ts");
      const { rm } = await import("node:fs/promises");
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
    .description(
      "print `export NAME=value` lines that point cgmirror, the AWS CLI and AWS SDKs at the local stack (AWS_ENDPOINT_URL_S3, region, credentials)",
    )
    .addOption(stateDirOption())
    .option("--json", "print as JSON")
    .action(async (opts: { stateDir?: string; json?: boolean }) => {
      const { runningStack } = await import("../../local/names.ts");
      const e = await runningStack(stateDirOf(opts));
      if (!e)
        throw new EnvironmentError("the local stack is not running; start it with: npx cgmirror local up");
      const { localEnvironment } = await import("../../local/stack.ts");
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
    .requiredOption("--size-gib <n>", "size in GiB", parsePositiveInt)
    .option("--instance <i-id>", "the instance it is attached to, like i-a")
    .addOption(stateDirOption())
    .option("--json", "print the volume as JSON")
    .action(
      async (opts: { id: string; sizeGib: number; instance?: string; stateDir?: string; json?: boolean }) => {
        const sim = await simulator(stateDirOf(opts));
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
    .addOption(stateDirOption())
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
        const { readFile } = await import("node:fs/promises");
        const { seededBytes } = await import("../seeded.ts");
        let data: Buffer;
        if (opts.file !== undefined) {
          data = await readFile(opts.file).catch((error: NodeJS.ErrnoException) => {
            throw new UsageError(`cannot read --file ${opts.file}: ${error.code ?? error.message}`);
          });
        } else data = seededBytes(opts.random!, opts.seed);
        const sim = await simulator(stateDirOf(opts));
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
    .addOption(stateDirOption())
    .action(async (opts: { id: string; out: string; stateDir?: string }) => {
      const { resolve } = await import("node:path");
      const sim = await simulator(stateDirOf(opts));
      await sim.exportImage(opts.id, resolve(opts.out));
      console.log(`wrote the image of ${opts.id} to ${opts.out}`);
    });

  volume
    .command("list")
    .description("list simulated volumes")
    .addOption(stateDirOption())
    .option("--json", "print as JSON")
    .action(async (opts: { stateDir?: string; json?: boolean }) => {
      const sim = await simulator(stateDirOf(opts));
      const vols = await sim.list();
      if (opts.json) printJson(vols);
      else if (vols.length === 0)
        console.log("no simulated volumes; create one with: npx cgmirror local volume create");
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
    .command("delete")
    .description(
      "delete a simulated volume (its snapshots in the EBS emulator and its backups in the bucket stay)",
    )
    .requiredOption("--id <vol-id>", "volume id")
    .addOption(stateDirOption())
    .option("--json", "print what was deleted as JSON")
    .action(async (opts: { id: string; stateDir?: string; json?: boolean }) => {
      const sim = await simulator(stateDirOf(opts));
      await sim.get(opts.id); // VolumeSimulatorError naming the volumes that exist
      await sim.delete(opts.id);
      if (opts.json) printJson({ deleted: opts.id });
      else console.log(`deleted ${opts.id}`);
    });

  volume
    .command("snapshot")
    .description("take a snapshot of a simulated volume now (outside any backup; for experiments)")
    .requiredOption("--id <vol-id>", "volume id")
    .addOption(stateDirOption())
    .option("--json", "print as JSON")
    .action(async (opts: { id: string; stateDir?: string; json?: boolean }) => {
      const { attachOrStartLocalStack } = await import("../../local/stack.ts");
      const { localClients } = await import("../../local/clients.ts");
      const stack = await attachOrStartLocalStack({ stateDir: stateDirOf(opts) });
      const clients = localClients(stack);
      try {
        const snap = await clients.simulator.initiateSnapshot(opts.id);
        await snap.completed;
        const out = { volumeId: opts.id, snapshotId: snap.snapshotId, changedBlocks: snap.changedBlocks };
        if (opts.json) printJson(out);
        else console.log(`snapshot ${out.snapshotId} of ${opts.id}: ${out.changedBlocks} changed blocks`);
      } finally {
        clients.destroy();
        await stack.stop();
      }
    });

  return local;
}
