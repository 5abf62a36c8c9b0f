/**
 * Builds (once) the local S3-compatible server cgmirror tests and demos run against:
 * Versity S3 Gateway, from its Go module at a pinned version, into a git-ignored cache folder.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rename, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw";
export const VERSITYGW_VERSION = "v1.8.0";

export class PrerequisiteError extends Error {
  override readonly name = "PrerequisiteError";
}

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The cache folder: CGM_CACHE_DIR, else `.cache/` at the repository root (git-ignored). */
export function cacheDir(): string {
  return process.env.CGM_CACHE_DIR ? resolve(process.env.CGM_CACHE_DIR) : join(repoRoot, ".cache");
}

export function s3ServerBinaryPath(): string {
  return join(cacheDir(), `versitygw-${VERSITYGW_VERSION}`, "versitygw");
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; output: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => resolvePromise({ code: code ?? 1, output }));
  });
}

/**
 * Returns the path of the server binary, building it with `go install` if it is not cached yet.
 * The build goes to a temporary folder and is renamed into place, so concurrent callers are safe.
 */
export async function ensureS3ServerBinary(log: (line: string) => void = () => {}): Promise<string> {
  const target = s3ServerBinaryPath();
  if (existsSync(target)) return target;
  const goVersion = await run("go", ["version"], process.env).catch(() => undefined);
  if (goVersion?.code !== 0) {
    throw new PrerequisiteError(
      `Go is needed to build the local S3 server (${VERSITYGW_MODULE}@${VERSITYGW_VERSION}) and was not found on PATH. ` +
        "Install Go 1.24 or newer, or point cgmirror at another S3 endpoint with CGM_S3_ENDPOINT (see docs/local-endpoints.md).",
    );
  }
  await mkdir(dirname(dirname(target)), { recursive: true });
  const staging = await mkdtemp(join(dirname(dirname(target)), "build-"));
  log(
    `building the local S3 server ${VERSITYGW_MODULE}@${VERSITYGW_VERSION} (first run only; a few minutes)…`,
  );
  try {
    const result = await run("go", ["install", "-trimpath", `${VERSITYGW_MODULE}@${VERSITYGW_VERSION}`], {
      ...process.env,
      GOBIN: staging,
      CGO_ENABLED: "0",
      GOFLAGS: "-mod=mod",
    });
    if (result.code !== 0) {
      throw new PrerequisiteError(
        `building the local S3 server failed (go install ${VERSITYGW_MODULE}@${VERSITYGW_VERSION}, exit ${result.code}). ` +
          `Check that the Go module proxy is reachable. Last output: ${result.output.trim().split("\n").slice(-3).join(" | ")}`,
      );
    }
    await mkdir(dirname(target), { recursive: true });
    await rename(join(staging, "versitygw"), target);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return target;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    const path = await ensureS3ServerBinary((l) => console.error(l));
    console.log(path);
  } catch (err) {
    console.error(err instanceof PrerequisiteError ? `cgmirror: ${err.message}` : err);
    process.exit(1);
  }
}
