/**
 * CLI: `npm run ebs:serve` — starts the EBS direct API emulator, prints its endpoint, stops on SIGINT/SIGTERM.
 * Environment: CGM_EBS_HOST, CGM_EBS_PORT, CGM_EBS_DATA_DIR, CGM_EBS_OWNER_ID, CGM_EBS_LIST_SCAN_WINDOW,
 * CGM_EBS_SYNTHETIC_WORKERS
 * and the fault knobs CGM_EBS_* (docs/ebs-emulator.md).
 */

import { startEbsEmulator } from "./emulator.ts";
import { EbsFaultConfigError } from "./faults.ts";
import { DataDirInUseError, PersistenceFormatError } from "./persistence.ts";

function intEnv(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return undefined;
  if (!/^\d+$/.test(raw)) {
    console.error(`cgmirror ebs emulator: ${name} must be a non-negative integer, got "${raw}"`);
    process.exit(2);
  }
  return Number(raw);
}

try {
  const emulator = await startEbsEmulator({
    host: process.env.CGM_EBS_HOST || undefined,
    port: intEnv("CGM_EBS_PORT"),
    dataDir: process.env.CGM_EBS_DATA_DIR || undefined,
    ownerId: process.env.CGM_EBS_OWNER_ID || undefined,
    listScanWindowBlocks: intEnv("CGM_EBS_LIST_SCAN_WINDOW"),
    syntheticWorkers: intEnv("CGM_EBS_SYNTHETIC_WORKERS"),
    useEnv: true,
  });
  console.log(
    JSON.stringify({ endpoint: emulator.endpoint, port: emulator.port, dataDir: emulator.dataDir ?? null }),
  );
  const stop = (signal: string): void => {
    emulator.close().then(
      () => {
        console.error(`cgmirror ebs emulator: stopped (${signal})`);
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
    console.error(
      `cgmirror ebs emulator: port ${process.env.CGM_EBS_PORT} is in use; set CGM_EBS_PORT to a free port or 0`,
    );
  } else if (
    e instanceof EbsFaultConfigError ||
    e instanceof DataDirInUseError ||
    e instanceof PersistenceFormatError
  ) {
    console.error(`cgmirror ebs emulator: ${err.message}`);
  } else {
    console.error(`cgmirror ebs emulator: could not start: ${err.message}`);
  }
  process.exit(2);
}
