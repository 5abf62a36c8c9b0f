/**
 * LocalStack (community, `localstack-core`) as a second, independent interpreter for the LocalStack lane
 * (`npm run test:localstack`, docs/localstack.md): installed at a pinned version into the git-ignored
 * cache with Python >= 3.12, started in host mode (no Docker) on 127.0.0.1, stopped with its whole
 * process group.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { cacheDir, PrerequisiteError } from "./s3-server/install.ts";
import { freePort } from "./s3-server/server.ts";

export const LOCALSTACK_VERSION = "2026.3.0";
/**
 * Exact pins: LocalStack 2026.3.0 breaks with the cbor2 and pyOpenSSL releases of 2026-04 and later,
 * and `[runtime]` brings the host-mode server (hypercorn) and the moto-based providers.
 */
export const LOCALSTACK_REQUIREMENTS = [
  `localstack-core[runtime]==${LOCALSTACK_VERSION}`,
  "cbor2==5.9.0",
  "pyOpenSSL==26.0.0",
] as const;
/** 3.11 fails with a syntax error that LocalStack's plugin loader hides. */
export const MIN_PYTHON: readonly [number, number] = [3, 12];

export function localstackDir(): string {
  return join(cacheDir(), `localstack-${LOCALSTACK_VERSION}`);
}

function pythonVersion(python: string, env: NodeJS.ProcessEnv): [number, number] | undefined {
  const r = spawnSync(python, ["-c", "import sys; print(sys.version_info[0], sys.version_info[1])"], {
    encoding: "utf8",
    timeout: 20_000,
    env,
  });
  if (r.status !== 0) return undefined;
  const [major, minor] = r.stdout.trim().split(" ").map(Number);
  return major !== undefined && minor !== undefined ? [major, minor] : undefined;
}

const atLeast = (v: [number, number], min: readonly [number, number]) =>
  v[0] > min[0] || (v[0] === min[0] && v[1] >= min[1]);

/**
 * A Python >= 3.12: `CGM_PYTHON`, else `python3.13`/`python3.12`/`python3` on PATH, else pyenv's
 * versions (~/.pyenv/versions/3.1x.*).
 * @throws PrerequisiteError naming every candidate tried.
 */
export function findPython(env: NodeJS.ProcessEnv = process.env): string {
  const candidates: string[] = [];
  if (env.CGM_PYTHON) candidates.push(env.CGM_PYTHON);
  candidates.push("python3.14", "python3.13", "python3.12", "python3");
  const pyenv = join(env.PYENV_ROOT ?? join(homedir(), ".pyenv"), "versions");
  if (existsSync(pyenv)) {
    for (const v of readdirSync(pyenv).sort().reverse()) candidates.push(join(pyenv, v, "bin", "python3"));
  }
  const tried: string[] = [];
  for (const c of candidates) {
    const v = pythonVersion(c, env);
    tried.push(`${c} (${v ? v.join(".") : "not found"})`);
    if (v && atLeast(v, MIN_PYTHON)) return c;
  }
  throw new PrerequisiteError(
    `the LocalStack lane needs Python ${MIN_PYTHON.join(".")} or newer (LocalStack ${LOCALSTACK_VERSION} ` +
      `fails on 3.11 with a syntax error its plugin loader hides). Tried: ${tried.join(", ")}. ` +
      "Install one (e.g. pyenv install 3.12) or set CGM_PYTHON=/path/to/python3.12.",
  );
}

/**
 * The venv's python with LocalStack installed, installing it on first use (a few minutes, then cached):
 * a fresh venv in the cache, pip install of the pins, then a marker naming them.
 */
export async function ensureLocalStack(log: (line: string) => void = () => {}): Promise<string> {
  const dir = localstackDir();
  const python = join(dir, "venv", "bin", "python");
  const marker = join(dir, "installed.json");
  const want = JSON.stringify({ requirements: LOCALSTACK_REQUIREMENTS });
  if (existsSync(python) && (await readFile(marker, "utf8").catch(() => "")) === want) return python;
  const base = findPython();
  log(
    `installing LocalStack ${LOCALSTACK_VERSION} with ${base} into ${dir} (first run only; a few minutes)…`,
  );
  try {
    // Built in place (a venv's scripts name their absolute path); the marker is written last, so an
    // interrupted install is redone.
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const venv = spawnSync(base, ["-m", "venv", join(dir, "venv")], { encoding: "utf8" });
    if (venv.status !== 0) {
      throw new PrerequisiteError(`python -m venv failed with ${base}: ${venv.stderr.trim().slice(-400)}`);
    }
    const pip = spawnSync(
      python,
      ["-m", "pip", "install", "--disable-pip-version-check", "--no-input", ...LOCALSTACK_REQUIREMENTS],
      { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 },
    );
    if (pip.status !== 0) {
      throw new PrerequisiteError(
        `pip install ${LOCALSTACK_REQUIREMENTS.join(" ")} failed (exit ${pip.status}); is PyPI reachable? ` +
          `Last output: ${`${pip.stdout}\n${pip.stderr}`.trim().split("\n").slice(-3).join(" | ")}`,
      );
    }
    await writeFile(marker, want);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return python;
}

export interface LocalStackOptions {
  /** The venv's python (ensureLocalStack). */
  readonly python: string;
  /** Services to start. @default ["s3", "stepfunctions", "sts"] */
  readonly services?: readonly string[];
  /** Step Functions mock config file (SFN_MOCK_CONFIG); LocalStack re-reads it when it changes. */
  readonly sfnMockConfig?: string;
  /** @default 120000 */
  readonly startTimeoutMs?: number;
  readonly log?: (line: string) => void;
}

export interface LocalStack {
  /** http://127.0.0.1:<port> */
  readonly endpoint: string;
  readonly port: number;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}
let hooked = false;

/** Starts LocalStack in host mode on 127.0.0.1:<free port>; resolves once its health check says ready. */
export async function startLocalStack(options: LocalStackOptions): Promise<LocalStack> {
  const port = await freePort();
  const home = await mkdtemp(join(tmpdir(), "cgmirror-localstack-"));
  const log = options.log ?? (() => {});
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    LANG: "C.UTF-8",
    // hypercorn binds exactly the address given; the default server binds every interface.
    GATEWAY_SERVER: "hypercorn",
    GATEWAY_LISTEN: `127.0.0.1:${port}`,
    LOCALSTACK_HOST: `127.0.0.1:${port}`,
    SERVICES: (options.services ?? ["s3", "stepfunctions", "sts"]).join(","),
    DNS_ADDRESS: "0",
    DISABLE_EVENTS: "1",
    SKIP_SSL_CERT_DOWNLOAD: "1",
    PERSISTENCE: "0",
    FILESYSTEM_ROOT: join(home, "fs"),
    LOCALSTACK_VOLUME_DIR: join(home, "volume"),
    TMPDIR: join(home, "tmp"),
    ...(options.sfnMockConfig ? { SFN_MOCK_CONFIG: options.sfnMockConfig } : {}),
  };
  await mkdir(join(home, "tmp"), { recursive: true });
  const child = spawn(options.python, ["-m", "localstack.runtime.main"], {
    cwd: home,
    env,
    detached: true, // its own process group: stop() ends everything it started
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(child);
  if (!hooked) {
    hooked = true;
    process.once("exit", () => {
      for (const c of live) killGroup(c, "SIGKILL");
    });
  }
  let output = "";
  const collect = (d: Buffer) => {
    output = (output + d.toString()).slice(-8000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  let exited = false;
  const gone = new Promise<void>((r) =>
    child.once("exit", () => {
      exited = true;
      live.delete(child);
      r();
    }),
  );
  const stop = async () => {
    if (!exited) {
      killGroup(child, "SIGTERM");
      const timer = setTimeout(() => killGroup(child, "SIGKILL"), 10_000);
      await gone;
      clearTimeout(timer);
    }
    // Anything it forked into its group that outlived it.
    killGroup(child, "SIGKILL");
    await rm(home, { recursive: true, force: true });
  };
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (options.startTimeoutMs ?? 120_000);
  while (Date.now() < deadline && !exited) {
    const ready = await fetch(`${endpoint}/_localstack/health`)
      .then(async (r) => (r.ok ? ((await r.json()) as { services?: Record<string, string> }) : undefined))
      .catch(() => undefined);
    const services = ready?.services ?? {};
    if (
      ready &&
      (options.services ?? ["s3", "stepfunctions"]).every((s) =>
        ["available", "running"].includes(services[s] ?? ""),
      )
    ) {
      log(`LocalStack ${LOCALSTACK_VERSION} ready on ${endpoint}`);
      return {
        endpoint,
        port,
        region: "us-east-1",
        accessKeyId: "test",
        secretAccessKey: "test",
        stop,
      };
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  await stop();
  throw new PrerequisiteError(
    `LocalStack did not become ready on ${endpoint} ${exited ? "(it exited)" : "in time"}; last output: ${output
      .trim()
      .split("\n")
      .slice(-5)
      .join(" | ")}`,
  );
}
