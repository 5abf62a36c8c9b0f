/**
 * The server: `npx ebs-emulator [options]` (the package's bin), `npm start` in the package or
 * `npm run ebs:serve` in cgmirror. Starts the EBS direct API emulator, prints its endpoint as one JSON
 * line on stdout, stops on SIGINT/SIGTERM. Options override the environment variables CGM_EBS_HOST,
 * CGM_EBS_PORT, CGM_EBS_DATA_DIR, CGM_EBS_OWNER_ID, CGM_EBS_LIST_SCAN_WINDOW, CGM_EBS_SYNTHETIC_WORKERS;
 * the fault and quota knobs are read from CGM_EBS_* (README.md). Bad input: one line on stderr, exit 2.
 */

import { parseArgs } from "node:util";
import { startEbsEmulator } from "./emulator.ts";
import { EbsFaultConfigError } from "./faults.ts";
import { DataDirInUseError, PersistenceFormatError } from "./persistence.ts";

const USAGE = `Usage: ebs-emulator [options]

An emulator of the Amazon EBS direct APIs. Prints {"endpoint","port","dataDir"} as one JSON line on
stdout when it listens; stops on SIGINT or SIGTERM.

Options (each overrides its environment variable):
  --host <address>            interface to listen on (CGM_EBS_HOST, default 127.0.0.1)
  --port <n>                  port, 0 = a free one (CGM_EBS_PORT, default 0)
  --data-dir <dir>            persist snapshots and blocks here (CGM_EBS_DATA_DIR, default: in memory)
  --owner-id <id>             account id reported as OwnerId (CGM_EBS_OWNER_ID, default 123456789012)
  --list-scan-window <n>      block indices one List page scans at most (CGM_EBS_LIST_SCAN_WINDOW)
  --synthetic-workers <n>     worker threads for synthetic block content (CGM_EBS_SYNTHETIC_WORKERS)
  -h, --help                  print this help

Fault and quota knobs come from the environment: CGM_EBS_LATENCY_MS, CGM_EBS_DATA_RPS_PER_SNAPSHOT,
CGM_EBS_ERROR_RATE, ... (see the package's README.md). Admin API: <endpoint>/_cgm/...`;

function fail(message: string): never {
  console.error(`ebs-emulator: ${message}`);
  process.exit(2);
}

function readArgs(): Record<string, string | boolean | undefined> {
  try {
    return parseArgs({
      options: {
        host: { type: "string" },
        port: { type: "string" },
        "data-dir": { type: "string" },
        "owner-id": { type: "string" },
        "list-scan-window": { type: "string" },
        "synthetic-workers": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    return fail(`${(e as Error).message}; see ebs-emulator --help`);
  }
}

const args = readArgs();

/** An option's value, else its environment variable's, else undefined (empty counts as unset). */
function setting(option: string, env: string): { value: string; from: string } | undefined {
  const flag = args[option];
  if (typeof flag === "string") return { value: flag, from: `--${option}` };
  const raw = process.env[env];
  return raw === undefined || raw === "" ? undefined : { value: raw, from: env };
}

function intSetting(option: string, env: string): number | undefined {
  const s = setting(option, env);
  if (s === undefined) return undefined;
  if (!/^\d+$/.test(s.value)) fail(`${s.from} must be a non-negative integer, got "${s.value}"`);
  return Number(s.value);
}

if (args.help === true) {
  console.log(USAGE);
  process.exit(0);
}

const port = intSetting("port", "CGM_EBS_PORT");
try {
  const emulator = await startEbsEmulator({
    host: setting("host", "CGM_EBS_HOST")?.value,
    port,
    dataDir: setting("data-dir", "CGM_EBS_DATA_DIR")?.value,
    ownerId: setting("owner-id", "CGM_EBS_OWNER_ID")?.value,
    listScanWindowBlocks: intSetting("list-scan-window", "CGM_EBS_LIST_SCAN_WINDOW"),
    syntheticWorkers: intSetting("synthetic-workers", "CGM_EBS_SYNTHETIC_WORKERS"),
    useEnv: true,
  });
  console.log(
    JSON.stringify({ endpoint: emulator.endpoint, port: emulator.port, dataDir: emulator.dataDir ?? null }),
  );
  const stop = (signal: string): void => {
    emulator.close().then(
      () => {
        console.error(`ebs-emulator: stopped (${signal})`);
        process.exit(0);
      },
      () => process.exit(1),
    );
  };
  process.once("SIGINT", () => stop("SIGINT"));
  process.once("SIGTERM", () => stop("SIGTERM"));
} catch (e) {
  const err = e as NodeJS.ErrnoException;
  if (err.code === "EADDRINUSE") {
    fail(`port ${port} is in use; pass --port (or CGM_EBS_PORT) with a free port or 0`);
  } else if (
    e instanceof EbsFaultConfigError ||
    e instanceof DataDirInUseError ||
    e instanceof PersistenceFormatError
  ) {
    fail(err.message);
  } else {
    fail(`could not start: ${err.message}`);
  }
}
