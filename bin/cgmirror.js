#!/usr/bin/env node
// Launcher for `npx cgmirror`: runs the CLI (TypeScript, run by Node 24's type stripping) on the
// project's pinned Node (the `node` package in node_modules), whichever Node started this file.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const entry = fileURLToPath(new URL("../cli/cgmirror.ts", import.meta.url));
const major = Number(process.versions.node.split(".")[0]);
if (major >= 24) {
  await import(entry);
} else {
  const pinned = fileURLToPath(new URL("../node_modules/node/bin/node", import.meta.url));
  if (!existsSync(pinned)) {
    console.error(
      `cgmirror: needs Node >= 24 (this is ${process.versions.node}); run \`npm ci\` in the project first.`,
    );
    process.exit(1);
  }
  const result = spawnSync(pinned, [entry, ...process.argv.slice(2)], { stdio: "inherit" });
  process.exit(result.status ?? 1);
}
