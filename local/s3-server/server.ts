/**
 * Starts and stops the local S3 server (Versity S3 Gateway, posix backend with versioning) on a free
 * 127.0.0.1 port, its data in a temporary directory unless one is given.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureS3ServerBinary, PrerequisiteError } from "./install.ts";

export interface S3ServerOptions {
  /** Where objects and versions live. @default a new temporary directory, removed on stop */
  readonly dataDir?: string;
  /** @default a free port chosen by the OS */
  readonly port?: number;
  /** @default "cgmirror-local" */
  readonly accessKeyId?: string;
  /** @default "cgmirror-local-secret" */
  readonly secretAccessKey?: string;
  /** @default "us-east-1" */
  readonly region?: string;
  /** How long to wait for the server to accept connections. @default 20000 */
  readonly startTimeoutMs?: number;
  readonly log?: (line: string) => void;
}

export interface S3Server {
  readonly endpoint: string;
  readonly port: number;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly region: string;
  readonly dataDir: string;
  readonly pid: number;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolvePromise(port));
    });
  });
}

/** True once an S3 server (not merely some process) answers on the port: it sends x-amz-request-id. */
function answersS3(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const req = request({ host: "127.0.0.1", port, path: "/", method: "GET", timeout: 1000 }, (res) => {
      res.resume();
      resolvePromise(res.headers["x-amz-request-id"] !== undefined);
    });
    req.once("timeout", () => req.destroy());
    req.once("error", () => resolvePromise(false));
    req.end();
  });
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Never leave a server behind, even when the parent dies on an uncaught error.
  process.once("exit", () => {
    for (const child of live) child.kill("SIGKILL");
  });
}

export async function startS3Server(options: S3ServerOptions = {}): Promise<S3Server> {
  const binary = await ensureS3ServerBinary(options.log);
  const ownsDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), "cgmirror-s3-")));
  await mkdir(join(dataDir, "buckets"), { recursive: true });
  await mkdir(join(dataDir, "versions"), { recursive: true });
  const accessKeyId = options.accessKeyId ?? "cgmirror-local";
  const secretAccessKey = options.secretAccessKey ?? "cgmirror-local-secret";
  const region = options.region ?? "us-east-1";
  const timeoutMs = options.startTimeoutMs ?? 20_000;

  for (let attempt = 0; attempt < 3; attempt++) {
    const port = options.port ?? (await freePort());
    const child = spawn(
      binary,
      [
        "--port",
        `127.0.0.1:${port}`,
        "--access",
        accessKeyId,
        "--secret",
        secretAccessKey,
        "--region",
        region,
        "--quiet",
        "posix",
        "--versioning-dir",
        join(dataDir, "versions"),
        join(dataDir, "buckets"),
      ],
      {
        stdio: ["ignore", "ignore", "pipe"],
        env: { ...process.env, ROOT_ACCESS_KEY_ID: "", ROOT_SECRET_ACCESS_KEY: "" },
      },
    );
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-2000);
    });
    let exited = false;
    child.once("exit", () => {
      exited = true;
      live.delete(child);
    });
    live.add(child);
    installExitHook();

    const deadline = Date.now() + timeoutMs;
    while (!exited && Date.now() < deadline) {
      if (await answersS3(port)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (!exited && (await answersS3(port))) {
      const stop = async (): Promise<void> => {
        if (!exited) {
          const gone = new Promise<void>((r) => child.once("exit", () => r()));
          child.kill("SIGTERM");
          const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
          await gone;
          clearTimeout(timer);
        }
        if (ownsDir) await rm(dataDir, { recursive: true, force: true });
      };
      return {
        endpoint: `http://127.0.0.1:${port}`,
        port,
        accessKeyId,
        secretAccessKey,
        region,
        dataDir,
        pid: child.pid ?? -1,
        stop,
      };
    }
    child.kill("SIGKILL");
    // A port taken between freePort() and the bind is retried; anything else is reported.
    if (options.port !== undefined || !/address already in use/i.test(stderr)) {
      if (ownsDir) await rm(dataDir, { recursive: true, force: true });
      throw new PrerequisiteError(
        exited
          ? `the local S3 server exited at start (port ${port}): ${stderr.trim().split("\n").slice(-2).join(" | ") || "no output"}. ` +
              "Check that the port is free and the data directory is writable."
          : `the local S3 server did not accept connections on 127.0.0.1:${port} within ${timeoutMs} ms. ` +
              "The machine may be overloaded; raise CGM_S3_START_TIMEOUT_MS or retry.",
      );
    }
  }
  throw new PrerequisiteError(
    "no free 127.0.0.1 port could be bound for the local S3 server after 3 attempts.",
  );
}
