#!/usr/bin/env node
// Launcher for `npx ebs-emulator`: the emulator is TypeScript run by Node 24's type stripping, so an
// older Node gets one clear line instead of a syntax error. Plain JS so that any Node can read it.
const major = Number(process.versions.node.split(".")[0]);
if (major < 24) {
  console.error(`ebs-emulator: needs Node >= 24 (this is ${process.versions.node})`);
  process.exit(2);
}
await import("../main.ts");
