// `npm ci` / `npm install` do not link a project's own "bin" into its node_modules/.bin; this does, so
// that `npx cgmirror` works in a checkout. Plain JS: it may run on any Node that runs npm.
import { chmodSync, existsSync, lstatSync, mkdirSync, symlinkSync, unlinkSync } from "node:fs";
import { join } from "node:path";

const dir = join("node_modules", ".bin");
const link = join(dir, "cgmirror");
if (existsSync("node_modules")) {
  mkdirSync(dir, { recursive: true });
  try {
    if (lstatSync(link)) unlinkSync(link);
  } catch {}
  symlinkSync(join("..", "..", "bin", "cgmirror.js"), link);
  chmodSync(join("bin", "cgmirror.js"), 0o755);
}
