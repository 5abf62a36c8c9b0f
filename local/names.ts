/**
 * Names of the local stack that commands need before (or without) starting it: cheap to import (no
 * SDK, no servers), so `cgmirror --help` and `config init` stay fast.
 */
import { existsSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { LocalEndpoints } from "./stack.ts";

export const LOCAL_BUCKET = "cgmirror-local";

export function defaultStateDir(cwd: string = process.cwd()): string {
  return resolve(cwd, ".cgmirror");
}

export function endpointsFile(stateDir: string): string {
  return join(stateDir, "endpoints.json");
}

/** Held (O_EXCL, the holder's pid inside) by whoever runs the stack on a state directory. */
export function stackLockFile(stateDir: string): string {
  return join(stateDir, "stack.pid");
}

/** True while a process with this pid exists. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The running daemon's endpoints, or undefined when no live daemon serves `stateDir`. */
export async function runningStack(stateDir: string): Promise<LocalEndpoints | undefined> {
  const file = endpointsFile(stateDir);
  if (!existsSync(file)) return undefined;
  const e = JSON.parse(await readFile(file, "utf8")) as LocalEndpoints;
  if (e.pid === undefined || !isAlive(e.pid)) {
    await rm(file, { force: true });
    return undefined;
  }
  return e;
}
