/**
 * Turns zod issues into plain sentences: where (a path like `volumes[1].id`), what was expected,
 * what was received. Used by the group config and the state payload contracts.
 */
import type { z } from "zod";

/** One validation problem, ready to print. */
export interface ValidationProblem {
  /** JSON path like `volumes[1].id`; `(root)` for the document itself. */
  readonly path: string;
  /** What was wrong, with what was expected and what was received. */
  readonly message: string;
}

/** Renders a zod path as `a.b[2].c`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? String(part) : `.${String(part)}`;
  }
  return out === "" ? "(root)" : out;
}

/** Short, safe rendering of a received value. */
export function describeValue(value: unknown): string {
  if (value === undefined) return "nothing (the field is missing)";
  if (value === null) return "null";
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === "object") return "an object";
  const text = JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

type Issue = z.core.$ZodIssue & { input?: unknown };

// zod's own messages start like this; messages written in our schemas never do.
const ZOD_DEFAULT = /^(Invalid|Too (big|small)|Unrecognized)/;

function describeIssue(issue: Issue): string {
  if (!ZOD_DEFAULT.test(issue.message)) return issue.message;
  const received = describeValue(issue.input);
  switch (issue.code) {
    case "invalid_type":
      return `expected ${issue.expected}, got ${received}`;
    case "invalid_value":
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}, got ${received}`;
    case "unrecognized_keys":
      return `unknown key${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((k) => JSON.stringify(k)).join(", ")} (check the spelling; see docs/config.md)`;
    case "too_small":
      return issue.origin === "array"
        ? `expected at least ${issue.minimum} item(s), got ${received}`
        : issue.origin === "string"
          ? `expected at least ${issue.minimum} character(s), got ${received}`
          : `expected a number >= ${issue.minimum}, got ${received}`;
    case "too_big":
      return issue.origin === "array"
        ? `expected at most ${issue.maximum} item(s), got ${received}`
        : issue.origin === "string"
          ? `expected at most ${issue.maximum} character(s), got ${received}`
          : `expected a number <= ${issue.maximum}, got ${received}`;
    case "invalid_union":
      return `${issue.message}, got ${received}`;
    default:
      // Custom messages written in the schemas already say what was expected and received.
      return issue.message;
  }
}

/** Every issue as a {path, message} pair, in the order zod found them. */
export function toProblems(error: z.ZodError): ValidationProblem[] {
  return error.issues.map((issue) => ({
    path: formatPath(issue.path),
    message: describeIssue(issue as Issue),
  }));
}

/** Renders problems as an indented list, one per line. */
export function formatProblems(problems: readonly ValidationProblem[]): string {
  return problems.map((p) => `  - ${p.path}: ${p.message}`).join("\n");
}
