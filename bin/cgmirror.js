#!/usr/bin/env node
// Launcher for `npx cgmirror`: runs the CLI (TypeScript, run by Node 24's type stripping) on the
// project's pinned Node (the `node` package in node_modules), whichever Node started this file.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import module from "node:module";
import { fileURLToPath } from "node:url";

const entry = fileURLToPath(new URL("../cli/cgmirror.ts", import.meta.url));
// V8's code cache for every module the CLI loads (its own TypeScript and the AWS SDK), kept beside the
// dependencies like other tools' caches: a call that does little work spends most of its time
// compiling, and the cache halves that. Node ignores it when NODE_DISABLE_COMPILE_CACHE is set, and a
// directory it cannot write only costs the speed-up.
const compileCache = fileURLToPath(new URL("../node_modules/.cache/cgmirror-compile", import.meta.url));
const major = Number(process.versions.node.split(".")[0]);
if (major >= 24) {
  module.enableCompileCache?.(compileCache);
  await import(entry);
} else {
  const pinned = fileURLToPath(new URL("../node_modules/node/bin/node", import.meta.url));
  if (!existsSync(pinned)) {
    console.error(
      `cgmirror: needs Node >= 24 (this is ${process.versions.node}); run \`npm ci\` in the project first.`,
    );
    process.exit(1);
  }
  const result = spawnSync(pinned, [entry, ...process.argv.slice(2)], {
    stdio: "inherit",
    env: { NODE_COMPILE_CACHE: compileCache, ...process.env },
  });
  process.exit(result.status ?? 1);
}
