/** Writes docs/group-config.schema.json from the zod schema in core/config/group-config.ts (Biome-formatted). */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { groupConfigJsonSchema } from "#core/config/group-config.ts";

const out = fileURLToPath(new URL("../docs/group-config.schema.json", import.meta.url));
writeFileSync(out, `${JSON.stringify(groupConfigJsonSchema(), null, 2)}\n`);
execFileSync(
  fileURLToPath(new URL("../node_modules/.bin/biome", import.meta.url)),
  ["format", "--write", out],
  {
    stdio: "ignore",
  },
);
console.log(`wrote ${out}`);
