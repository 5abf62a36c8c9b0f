/** Runs the real `cgmirror` CLI (bin/cgmirror.js) in a child process, as a user would. */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { S3Client } from "@aws-sdk/client-s3";
import type { LocalEndpoints } from "#local/stack.ts";

const bin = join(import.meta.dirname, "..", "..", "bin", "cgmirror.js");

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function cgmirror(
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv },
): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { cwd: options.cwd, env: { ...process.env, ...options.env }, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** `cgmirror local up` in a new temporary directory, and an S3 client on that stack. */
export async function cliLocalStack(prefix: string): Promise<{
  cwd: string;
  endpoints: LocalEndpoints;
  s3: S3Client;
  down(): Promise<void>;
}> {
  const cwd = await mkdtemp(join(tmpdir(), prefix));
  const up = await cgmirror(["local", "up", "--json"], { cwd });
  if (up.code !== 0) throw new Error(`cgmirror local up failed: ${up.stderr}`);
  const endpoints = JSON.parse(up.stdout) as LocalEndpoints;
  const s3 = new S3Client({
    endpoint: endpoints.s3Endpoint,
    region: endpoints.region,
    forcePathStyle: true,
    credentials: { accessKeyId: endpoints.accessKeyId, secretAccessKey: endpoints.secretAccessKey },
  });
  return {
    cwd,
    endpoints,
    s3,
    async down() {
      s3.destroy();
      try {
        const r = await cgmirror(["local", "down"], { cwd });
        if (r.code !== 0) throw new Error(`cgmirror local down failed: ${r.stderr}`);
      } finally {
        // Whatever `local down` did, no daemon outlives the test (a stack left running was found).
        const pid = Number(await readFile(join(cwd, ".cgmirror", "stack.pid"), "utf8").catch(() => ""));
        if (pid > 0) {
          try {
            process.kill(pid, "SIGTERM");
          } catch {
            // already gone
          }
        }
        await rm(cwd, { recursive: true, force: true });
      }
    },
  };
}
