/**
 * Lists the functions (declarations, methods, constructors, accessors, function expressions and
 * arrow functions) of core/ longer than a limit, longest first: `file:line name lines`.
 *
 *   node scripts/long-functions.ts            functions in core/ over 80 lines
 *   node scripts/long-functions.ts 60 core adapters
 *
 * A function's length is its lines from the first line of its signature to its closing brace,
 * nested functions included (they are listed on their own too). Always exits 0: a list to work on.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import ts from "typescript";
import { ROOT } from "./import-graph.ts";

export interface LongFunction {
  readonly file: string;
  readonly line: number;
  readonly name: string;
  readonly lines: number;
}

function files(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) files(path, out);
    else if (name.endsWith(".ts") && !name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

function nameOf(node: ts.Node, source: ts.SourceFile): string {
  const named = node as ts.Node & { name?: ts.Node };
  if (ts.isConstructorDeclaration(node)) return `${classOf(node)}constructor`;
  if (named.name && (ts.isMethodDeclaration(node) || ts.isGetAccessor(node) || ts.isSetAccessor(node))) {
    return `${classOf(node)}${named.name.getText(source)}`;
  }
  if (named.name) return named.name.getText(source);
  const parent = node.parent;
  if (parent && ts.isVariableDeclaration(parent)) return parent.name.getText(source);
  if (parent && ts.isPropertyAssignment(parent)) return parent.name.getText(source);
  if (parent && ts.isPropertyDeclaration(parent)) return `${classOf(parent)}${parent.name.getText(source)}`;
  return "(anonymous)";
}

function classOf(node: ts.Node): string {
  const c = node.parent;
  return c && ts.isClassLike(c) && c.name ? `${c.name.text}.` : "";
}

/** Every function in `dirs` (repository-relative) longer than `limit` lines, longest first. */
export function longFunctions(limit = 80, dirs: readonly string[] = ["core"]): LongFunction[] {
  const out: LongFunction[] = [];
  for (const dir of dirs) {
    for (const path of files(join(ROOT, dir))) {
      const text = readFileSync(path, "utf8");
      const source = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true);
      const visit = (node: ts.Node) => {
        if (ts.isFunctionLike(node) && "body" in node && node.body) {
          const start = source.getLineAndCharacterOfPosition(node.getStart(source)).line;
          const end = source.getLineAndCharacterOfPosition(node.getEnd()).line;
          const lines = end - start + 1;
          if (lines > limit) {
            out.push({ file: relative(ROOT, path), line: start + 1, name: nameOf(node, source), lines });
          }
        }
        ts.forEachChild(node, visit);
      };
      visit(source);
    }
  }
  return out.sort((a, b) => b.lines - a.lines || a.file.localeCompare(b.file));
}

if (process.argv[1] && import.meta.filename === process.argv[1]) {
  const [limitArg, ...dirs] = process.argv.slice(2);
  const limit = limitArg ? Number(limitArg) : 80;
  const list = longFunctions(limit, dirs.length ? dirs : ["core"]);
  for (const f of list) console.log(`${f.file}:${f.line} ${f.name} ${f.lines}`);
  console.log(`${list.length} functions over ${limit} lines`);
}
