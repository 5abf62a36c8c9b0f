/**
 * The project's import graph, read with the TypeScript compiler's pre-processor (static imports,
 * `export … from`, `import type` and dynamic `import("…")` alike), and the layer rules it must keep
 * (docs/architecture.md, "Layers"). test/unit/architecture.test.ts asserts the rules;
 *
 *   node scripts/import-graph.ts            prints rule breaks (layers and workspace packages' boundaries)
 *                                           and import cycles among core/ files
 *   node scripts/import-graph.ts --layers   also prints which layer imports which (edge counts)
 *
 * Exits 1 when a rule is broken or core/ has a cycle.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Folders whose .ts files make the graph. */
const SOURCE_DIRS = [
  "core",
  "adapters",
  "lambdas",
  "workflows",
  "infra",
  "local",
  "cli",
  "test",
  "bench",
  "scripts",
];
const SKIP = new Set(["node_modules", ".cache", "cdk.out", ".cgmirror"]);

/**
 * A layer: the files under `paths` (repository-relative folder prefixes; a file belongs to the layer
 * with the longest matching prefix), the layers it may import, and the packages it must not import.
 *
 * `mayImport` names layers; a name also allows its sub-layers ("core" allows "core/format" once that
 * row exists). A layer absent from the table (test, bench, scripts) has no rule.
 */
export interface LayerRule {
  readonly name: string;
  readonly paths: readonly string[];
  readonly mayImport: readonly string[];
  readonly forbiddenPackages?: readonly RegExp[];
  /** Why, for the failure message. */
  readonly because: string;
}

/** Anything that talks to AWS or builds its infrastructure: not in the pure core. */
const AWS_PACKAGES = [
  /^@aws-sdk\//,
  /^@smithy\//,
  /^aws-cdk-lib(\/|$)/,
  /^constructs$/,
  /^aws-lambda$/,
  /^@aws-lambda-powertools\//,
];

/**
 * The allowed directions. To give core/ sub-domains their own rules, add a row per folder
 * (e.g. `{ name: "core/format", paths: ["core/format/"], mayImport: ["core/format", "core/ports"] }`):
 * the longest prefix decides a file's layer, so the "core" row then covers only what is left.
 */
export const LAYERS: readonly LayerRule[] = [
  {
    name: "core",
    paths: ["core/"],
    mayImport: ["core"],
    forbiddenPackages: AWS_PACKAGES,
    because: "core/ is pure: it reaches AWS only through the ports in core/ports/",
  },
  {
    name: "adapters",
    paths: ["adapters/"],
    mayImport: ["core", "adapters"],
    because: "adapters implement core's ports; nothing that drives them",
  },
  {
    name: "workflows",
    paths: ["workflows/"],
    mayImport: ["core", "workflows"],
    forbiddenPackages: [/^@aws-sdk\//, /^@smithy\//],
    because: "workflows/ describes the state machines; it calls no AWS API itself",
  },
  {
    name: "lambdas",
    paths: ["lambdas/"],
    mayImport: ["core", "adapters", "workflows", "lambdas"],
    because: "lambdas are thin handlers over core and adapters; infrastructure, CLI and local runs use them",
  },
];

export interface ImportEdge {
  /** Repository-relative path of the importing file (forward slashes). */
  readonly from: string;
  /** Repository-relative path of the imported file, or `package:<name>` / `node:<name>`. */
  readonly to: string;
  readonly specifier: string;
  readonly line: number;
}

function walk(dir: string, out: string[]): void {
  for (const name of readdirSync(dir)) {
    if (SKIP.has(name)) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path, out);
    else if (name.endsWith(".ts") && !name.endsWith(".d.ts")) out.push(path);
  }
}

const posix = (p: string) => p.split(sep).join("/");

/** Every .ts file of the project, repository-relative. */
export function sourceFiles(root = ROOT): string[] {
  const out: string[] = [];
  for (const d of SOURCE_DIRS) {
    try {
      walk(join(root, d), out);
    } catch {
      // a folder this checkout does not have
    }
  }
  return out.map((p) => posix(relative(root, p))).sort();
}

const packageImports = (root: string): Record<string, string> =>
  (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { imports?: Record<string, string> })
    .imports ?? {};

/** Where `specifier` imported from `from` points: a repository path, `package:x` or `node:x`. */
export function resolveSpecifier(from: string, specifier: string, aliases: Record<string, string>): string {
  if (specifier.startsWith("node:")) return specifier;
  if (specifier.startsWith(".")) return posix(normalize(join(dirname(from), specifier)));
  if (specifier.startsWith("#")) {
    for (const [pattern, target] of Object.entries(aliases)) {
      const prefix = pattern.replace(/\*$/, "");
      if (specifier.startsWith(prefix)) {
        return posix(normalize(target.replace(/\*$/, specifier.slice(prefix.length))));
      }
    }
    return `package:${specifier}`;
  }
  return `package:${specifier}`;
}

/** The imports of one file (static, re-exports, type-only and dynamic). */
export function importsOf(file: string, root = ROOT, aliases = packageImports(root)): ImportEdge[] {
  const text = readFileSync(join(root, file), "utf8");
  const info = ts.preProcessFile(text, true, true);
  const lineOf = (pos: number) => text.slice(0, pos).split("\n").length;
  return info.importedFiles.map((f) => ({
    from: file,
    to: resolveSpecifier(file, f.fileName, aliases),
    specifier: f.fileName,
    line: lineOf(f.pos),
  }));
}

/** The whole graph: every file's imports. */
export function importGraph(root = ROOT): ImportEdge[] {
  const aliases = packageImports(root);
  return sourceFiles(root).flatMap((f) => importsOf(f, root, aliases));
}

/** The layer a repository path belongs to (longest prefix), or undefined. */
export function layerOf(path: string, layers: readonly LayerRule[] = LAYERS): LayerRule | undefined {
  let best: LayerRule | undefined;
  let bestLength = -1;
  for (const l of layers) {
    for (const p of l.paths) {
      if (path.startsWith(p) && p.length > bestLength) {
        best = l;
        bestLength = p.length;
      }
    }
  }
  return best;
}

/** The top folder of a path, for messages about files outside every layer. */
const topFolder = (path: string) => path.split("/")[0]!;

const allows = (rule: LayerRule, target: string) =>
  rule.mayImport.some((m) => target === m || target.startsWith(`${m}/`));

/** One line per import that breaks a rule: `file:line imports X: reason`. */
export function ruleBreaks(edges: readonly ImportEdge[], layers: readonly LayerRule[] = LAYERS): string[] {
  const out: string[] = [];
  for (const e of edges) {
    const rule = layerOf(e.from, layers);
    if (!rule) continue;
    if (e.to.startsWith("package:")) {
      const pkg = e.to.slice("package:".length);
      if (rule.forbiddenPackages?.some((re) => re.test(pkg))) {
        out.push(`${e.from}:${e.line} imports the package ${pkg}: ${rule.because}`);
      }
      continue;
    }
    if (e.to.startsWith("node:")) continue;
    const target = layerOf(e.to, layers)?.name ?? topFolder(e.to);
    if (!allows(rule, target)) {
      out.push(`${e.from}:${e.line} imports ${e.to} (${target}): ${rule.because}`);
    }
  }
  return out;
}

/**
 * A package of the repository that the rest consumes like any dependency (an npm workspace, e.g.
 * local/ebs-emulator/): its folder, its name, and the packages its files and its tests may import.
 */
export interface WorkspacePackage {
  /** Repository-relative folder with a trailing slash. */
  readonly dir: string;
  readonly name: string;
  /** Packages the package's own files may import (its "dependencies"). */
  readonly dependencies: readonly string[];
  /** Packages its tests and tool configs (`<dir>test/…`, `<dir>*.config.ts`) may import besides (its "devDependencies"). */
  readonly devDependencies: readonly string[];
}

/** The workspaces named in the root package.json, read from their own package.json. */
export function workspacePackages(root = ROOT): WorkspacePackage[] {
  const rootPkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { workspaces?: string[] };
  return (rootPkg.workspaces ?? []).map((dir) => {
    const pkg = JSON.parse(readFileSync(join(root, dir, "package.json"), "utf8")) as {
      name: string;
      dependencies?: Record<string, string>;
      devDependencies?: Record<string, string>;
    };
    return {
      dir: `${posix(normalize(dir)).replace(/\/$/, "")}/`,
      name: pkg.name,
      dependencies: Object.keys(pkg.dependencies ?? {}),
      devDependencies: Object.keys(pkg.devDependencies ?? {}),
    };
  });
}

/** `@scope/name/sub` or `name/sub` → the package name. */
const packageName = (specifier: string) =>
  specifier
    .split("/")
    .slice(0, specifier.startsWith("@") ? 2 : 1)
    .join("/");

/**
 * One line per import that breaks a workspace package's boundary: a file outside the package that
 * imports one of its files by path (instead of by the package's name), or a file of the package that
 * imports anything but Node built-ins, its own files and its declared dependencies (its tests and tool
 * configs: also its devDependencies).
 */
export function packageBreaks(edges: readonly ImportEdge[], packages: readonly WorkspacePackage[]): string[] {
  const out: string[] = [];
  for (const e of edges) {
    const home = packages.find((p) => e.from.startsWith(p.dir));
    if (home === undefined) {
      const into = packages.find((p) => e.to.startsWith(p.dir));
      if (into !== undefined) {
        out.push(
          `${e.from}:${e.line} imports ${e.to} by path: import "${into.name}" (its public entry point) instead`,
        );
      }
      continue;
    }
    if (e.to.startsWith("node:") || e.to.startsWith(home.dir)) continue;
    if (e.to.startsWith("package:")) {
      const pkg = packageName(e.to.slice("package:".length));
      const rest = e.from.slice(home.dir.length);
      const isDev = rest.startsWith("test/") || /^[^/]+\.config\.ts$/.test(rest);
      if (home.dependencies.includes(pkg) || (isDev && home.devDependencies.includes(pkg))) continue;
      out.push(
        `${e.from}:${e.line} imports the package ${pkg}: ${home.name} declares no such ${isDev ? "dev" : ""}dependency`,
      );
      continue;
    }
    out.push(`${e.from}:${e.line} imports ${e.to} from the project: ${home.name} stands on its own`);
  }
  return out;
}

/** The import cycles among files whose path starts with `prefix` (strongly connected components). */
export function cycles(edges: readonly ImportEdge[], prefix: string): string[][] {
  const next = new Map<string, Set<string>>();
  for (const e of edges) {
    if (!e.from.startsWith(prefix) || !e.to.startsWith(prefix)) continue;
    if (!next.has(e.from)) next.set(e.from, new Set());
    next.get(e.from)!.add(e.to);
  }
  // Tarjan's algorithm, iterative enough for a few hundred files.
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, idx.get(w)!));
      }
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || next.get(v)?.has(v)) out.push(scc.sort());
    }
  };
  for (const v of [...next.keys()].sort()) if (!idx.has(v)) visit(v);
  return out;
}

/** Which layer (or top folder) imports which, with edge counts: `from → to: n`. */
export function layerMatrix(edges: readonly ImportEdge[]): string[] {
  const counts = new Map<string, number>();
  for (const e of edges) {
    if (e.to.startsWith("node:")) continue;
    const from = layerOf(e.from)?.name ?? topFolder(e.from);
    const to = e.to.startsWith("package:") ? e.to : (layerOf(e.to)?.name ?? topFolder(e.to));
    const k = `${from} → ${to}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return [...counts.entries()].sort().map(([k, n]) => `${k}: ${n}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const edges = importGraph();
  if (process.argv.includes("--layers")) for (const line of layerMatrix(edges)) console.log(line);
  const breaks = [...ruleBreaks(edges), ...packageBreaks(edges, workspacePackages())];
  const loops = cycles(edges, "core/");
  for (const b of breaks) console.log(`rule: ${b}`);
  for (const c of loops) console.log(`cycle: ${c.join(" ↔ ")}`);
  console.log(
    `${edges.length} imports in ${sourceFiles().length} files; ${breaks.length} rule breaks; ${loops.length} cycles in core/`,
  );
  process.exitCode = breaks.length > 0 || loops.length > 0 ? 1 : 0;
}
