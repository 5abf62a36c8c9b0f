/**
 * Headless Chromium for tests that must see a page as a browser renders it. Uses Debian's
 * `chromium`; when it is missing, installs it with apt (root only; needs the package registry). If it
 * cannot be installed, `ensureChromium` says why and the caller skips with that reason.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];

export type ChromiumStatus = { readonly path: string } | { readonly missing: string };

async function apt(args: string[]): Promise<void> {
  await run("apt-get", args, {
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    timeout: 600_000,
    maxBuffer: 64 * 1024 * 1024,
  });
}

/** The Chromium binary, installing Debian's package when it is missing and the process is root. */
export async function ensureChromium(): Promise<ChromiumStatus> {
  const found = CANDIDATES.find((p) => existsSync(p));
  if (found) return { path: found };
  if (process.getuid?.() !== 0)
    return { missing: "chromium is not installed and this is not root (apt-get install chromium)" };
  try {
    await apt(["install", "-y", "--no-install-recommends", "chromium"]);
  } catch {
    try {
      await apt(["update"]);
      await apt(["install", "-y", "--no-install-recommends", "chromium"]);
    } catch (error) {
      return { missing: `apt-get install chromium failed: ${(error as Error).message.split("\n")[0]}` };
    }
  }
  const installed = CANDIDATES.find((p) => existsSync(p));
  return installed ? { path: installed } : { missing: "apt-get installed chromium but no binary was found" };
}

/** The DOM of a local page after its scripts ran (`--dump-dom`), with no network and a fresh profile. */
export async function renderedDom(chromium: string, file: string): Promise<string> {
  const profile = await mkdtemp(join(tmpdir(), "cgm-chromium-"));
  try {
    const { stdout } = await run(
      chromium,
      [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        `--user-data-dir=${profile}`,
        "--dump-dom",
        `file://${file}`,
      ],
      { timeout: 120_000, maxBuffer: 64 * 1024 * 1024 },
    );
    return stdout;
  } finally {
    await rm(profile, { recursive: true, force: true });
  }
}
