/**
 * core/ is split by sub-domain (core/README.md): each folder may import only the folders below it.
 * This test reads every import in core/ and holds the tree to that table, so the structure cannot
 * rot one convenient import at a time.
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = resolve(new URL("../../", import.meta.url).pathname);
const CORE = join(ROOT, "core");

/** Who may import whom (besides itself, `ports/`, `util/` and `core/errors.ts`, which every folder may use). */
const ALLOWED: Record<string, readonly string[]> = {
  ports: [],
  util: [],
  config: [],
  format: [],
  protocol: ["format", "config"],
  transfer: ["format"],
  restore: ["format", "protocol", "transfer"],
  lifecycle: ["format", "protocol", "transfer"],
};
const SHARED = new Set(["ports", "util", "errors"]);

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

/** The sub-domain of a file under core/: its folder, or "errors" for core/errors.ts. */
function domainOf(file: string): string {
  const rel = relative(CORE, file).split("/");
  return rel.length === 1 ? rel[0]!.replace(/\.ts$/, "") : rel[0]!;
}

/** Every core/ file a source imports (relative and #core/ specifiers), resolved to a path. */
function coreImports(file: string, text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)["']([^"']+)["']/g)) {
    const spec = m[1]!;
    if (spec.startsWith("#core/")) out.push(join(CORE, spec.slice("#core/".length)));
    else if (spec.startsWith(".")) {
      const target = resolve(dirname(file), spec);
      if (target.startsWith(`${CORE}/`)) out.push(target);
    }
  }
  return out;
}

/** The rule each import breaks, as "from -> to (file)". */
function violations(files: ReadonlyArray<{ file: string; text: string }>): string[] {
  const broken: string[] = [];
  for (const { file, text } of files) {
    const from = domainOf(file);
    for (const target of coreImports(file, text)) {
      const to = domainOf(target);
      if (to === from || SHARED.has(to)) continue;
      if (!(ALLOWED[from] ?? []).includes(to)) {
        broken.push(`core/${from} may not import core/${to} (${relative(ROOT, file)})`);
      }
    }
  }
  return broken;
}

describe("core/ by sub-domain", () => {
  const files = sources(CORE).map((file) => ({ file, text: readFileSync(file, "utf8") }));

  it("GIVEN every source in core/ THEN each lives in a sub-domain folder of the table (only errors.ts at the top)", () => {
    const misplaced = files
      .map(({ file }) => relative(CORE, file))
      .filter((rel) => (rel.includes("/") ? !(rel.split("/")[0]! in ALLOWED) : rel !== "errors.ts"));
    expect(misplaced).toEqual([]);
    expect(files.length).toBeGreaterThan(30);
  });

  it("GIVEN every import in core/ THEN it goes only where core/README.md allows", () => {
    expect(violations(files)).toEqual([]);
  });

  it("GIVEN an import against the table THEN the check names it (the rule can fail)", () => {
    const bad = {
      file: join(CORE, "format", "x.ts"),
      text: 'import { acquireLock } from "../protocol/lock.ts";',
    };
    const upward = {
      file: join(CORE, "transfer", "y.ts"),
      text: 'import { restoreVolume } from "#core/restore/restore.ts";',
    };
    expect(violations([bad, upward])).toEqual([
      "core/format may not import core/protocol (core/format/x.ts)",
      "core/transfer may not import core/restore (core/transfer/y.ts)",
    ]);
  });
});
