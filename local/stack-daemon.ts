/**
 * The background process behind `cgmirror local up`: runs the local stack for a state directory until
 * SIGTERM/SIGINT, recording its endpoints in `<stateDir>/endpoints.json` (removed on stop).
 * Usage: node local/stack-daemon.ts <stateDir>
 */
import { rename, rm, writeFile } from "node:fs/promises";
import { endpointsFile, lockStateDir, startLocalStack } from "./stack.ts";

const stateDir = process.argv[2];
if (!stateDir) {
  console.error("usage: node local/stack-daemon.ts <stateDir>");
  process.exit(2);
}
try {
  const release = await lockStateDir(stateDir);
  const stack = await startLocalStack({ stateDir, log: (l) => console.error(l) });
  const { emulator: _e, stop: _s, ...endpoints } = stack;
  // Written whole, then renamed into place: `local up` polls for the file and must never read half of it.
  const file = endpointsFile(stateDir);
  await writeFile(`${file}.tmp`, JSON.stringify({ ...endpoints, pid: process.pid }, null, 2));
  await rename(`${file}.tmp`, file);
  const stop = async (): Promise<void> => {
    await rm(endpointsFile(stateDir), { force: true });
    await stack.stop();
    await release();
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop());
  process.once("SIGINT", () => void stop());
} catch (err) {
  console.error(`cgmirror local stack: ${(err as Error).message}`);
  process.exit(1);
}
