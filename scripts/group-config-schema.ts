/** Writes docs/group-config.schema.json from the zod schema in core/group-config.ts. */
import { writeFileSync } from "node:fs";
import { groupConfigJsonSchema } from "#core/group-config.ts";

const out = new URL("../docs/group-config.schema.json", import.meta.url);
writeFileSync(out, `${JSON.stringify(groupConfigJsonSchema(), null, 2)}\n`);
console.log(`wrote ${out.pathname}`);
