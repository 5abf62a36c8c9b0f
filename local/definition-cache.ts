/**
 * A disk cache of the state machine definition the local runner executes. Synthesizing CgmirrorStack
 * costs seconds (aws-cdk-lib alone takes about a second to load); the definition only changes when the
 * group config or the code that shapes it changes, so a local backup reads it from here instead.
 *
 * The key is the SHA-256 of: the parts of the group config that shape the definition
 * (`definitionShape`: the run timeout; the rest of the config reaches the run as its input, and
 * test/unit/definition-cache.test.ts proves two configs alike only there get the same definition), every source file under
 * infra/, workflows/, lambdas/ and core/ (anything the stack imports), and the installed aws-cdk-lib
 * version. Any change to one of them is a miss, which synthesizes and stores a new entry. Entries are
 * written whole and renamed into place, so concurrent commands never read half a file; an entry that
 * does not parse is treated as a miss.
 *
 * Where: $CGM_CACHE_DIR/definitions, else `.cache/definitions/` in the project (next to the local S3
 * server's build). The restore workflow's definition is cached the same way (`restoreDefinitionCacheKey`).
 * `npm test` points CGM_CACHE_DIR into its own temporary directory (one synth per
 * config per run, removed at the end).
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { GroupConfig } from "#core/config/group-config.ts";
import type { AslDefinition } from "#workflows/definition.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const SHAPING_DIRS = ["infra", "workflows", "lambdas", "core"];

let codeHash: string | undefined;

function listSources(dir: string, out: string[]): void {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
    a.name.localeCompare(b.name),
  )) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) listSources(path, out);
    else if (entry.name.endsWith(".ts") || entry.name.endsWith(".json")) out.push(path);
  }
}

/** SHA-256 over the code that shapes the definition (computed once per process, a few ms). */
export function definitionCodeHash(): string {
  if (codeHash) return codeHash;
  const hash = createHash("sha256");
  const files: string[] = [];
  for (const d of SHAPING_DIRS) listSources(join(ROOT, d), files);
  for (const f of files) {
    hash.update(f.slice(ROOT.length));
    hash.update("\0");
    hash.update(readFileSync(f));
    hash.update("\0");
  }
  for (const pkg of ["aws-cdk-lib", "constructs"]) {
    try {
      hash.update(readFileSync(join(ROOT, "node_modules", pkg, "package.json")));
    } catch {
      hash.update(`${pkg}:missing`);
    }
  }
  codeHash = hash.digest("hex");
  return codeHash;
}

export function definitionCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.CGM_CACHE_DIR ? join(env.CGM_CACHE_DIR, "definitions") : join(ROOT, ".cache", "definitions");
}

/**
 * What of a group config the synthesized definition depends on: only the run timeout (the state
 * machine's TimeoutSeconds). Volumes, bucket, freeze, policies, transfer settings and the rest reach
 * the run as its input. Keying the cache by this lets every group (and every test) share one synth.
 */
export function definitionShape(config: GroupConfig): { runTimeoutMinutes: number } {
  return { runTimeoutMinutes: config.runTimeoutMinutes };
}

export function definitionCacheKey(config: GroupConfig): string {
  return createHash("sha256")
    .update(definitionCodeHash())
    .update("\0")
    .update(JSON.stringify(definitionShape(config)))
    .digest("hex");
}

function isDefinition(value: unknown): value is AslDefinition {
  const v = value as AslDefinition | undefined;
  return typeof v?.StartAt === "string" && typeof v.States === "object" && v.States !== null;
}

/**
 * The key of the restore workflow's definition (workflows/restore.ts, one per stack): only the code
 * shapes it (the config travels in the execution's input).
 */
export function restoreDefinitionCacheKey(): string {
  return createHash("sha256").update(definitionCodeHash()).update("\0restore").digest("hex");
}

/** The cached definition for `config`, or the result of `synth()` (then stored). */
export function cachedDefinition(
  config: GroupConfig,
  synth: () => Promise<AslDefinition>,
): Promise<{ definition: AslDefinition; cached: boolean }> {
  return cachedDefinitionByKey(definitionCacheKey(config), synth);
}

/** The cached definition under `key`, or the result of `synth()` (then stored). */
export async function cachedDefinitionByKey(
  key: string,
  synth: () => Promise<AslDefinition>,
): Promise<{ definition: AslDefinition; cached: boolean }> {
  const dir = definitionCacheDir();
  const file = join(dir, `${key}.json`);
  try {
    const value = JSON.parse(await readFile(file, "utf8")) as unknown;
    if (isDefinition(value)) return { definition: value, cached: true };
  } catch {
    // a miss (absent or unreadable): synthesize
  }
  const definition = await synth();
  try {
    await mkdir(dir, { recursive: true });
    const temp = `${file}.${randomBytes(6).toString("hex")}.tmp`;
    await writeFile(temp, JSON.stringify(definition));
    await rename(temp, file).catch(async (error) => {
      await rm(temp, { force: true });
      throw error;
    });
  } catch {
    // A read-only or full cache directory only costs the next run a synth.
  }
  return { definition, cached: false };
}
