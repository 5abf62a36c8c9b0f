/**
 * Finds the constructs that aws-local-stepfunctions 3.0.0 cannot run (DESIGN.md section 5) in a
 * definition. The workflow must have none, so one definition runs in AWS and locally; the local
 * runner can call this to refuse a definition early with a clear message.
 */

export interface CompatFinding {
  /** Where: state names joined by " > " (Map item processors nest). */
  readonly where: string;
  readonly problem: string;
}

const TYPE_TESTS = ["IsPresent", "IsNull", "IsNumeric", "IsString", "IsBoolean", "IsTimestamp"];
const JSONATA_FIELDS = ["Arguments", "Output", "Assign"];

function checkChoiceRule(rule: Record<string, unknown>, where: string, out: CompatFinding[]): void {
  for (const op of TYPE_TESTS) {
    if (rule[op] === false) {
      out.push({ where, problem: `Choice rule uses ${op}: false, which never matches locally` });
    }
  }
  for (const key of ["And", "Or"]) {
    const list = rule[key];
    if (Array.isArray(list)) for (const r of list) checkChoiceRule(r as Record<string, unknown>, where, out);
  }
  if (rule.Not && typeof rule.Not === "object")
    checkChoiceRule(rule.Not as Record<string, unknown>, where, out);
  if (typeof rule.Condition === "string")
    out.push({ where, problem: "Choice rule uses a JSONata Condition" });
}

function checkStates(
  states: Record<string, Record<string, unknown>>,
  path: string,
  out: CompatFinding[],
): void {
  for (const [name, state] of Object.entries(states)) {
    const where = path === "" ? name : `${path} > ${name}`;
    if (state.QueryLanguage === "JSONata") out.push({ where, problem: "uses JSONata" });
    for (const field of JSONATA_FIELDS) {
      if (field in state) out.push({ where, problem: `uses ${field} (JSONata / Variables)` });
    }
    if (state.ResultPath === "$")
      out.push({ where, problem: 'uses ResultPath "$", which is broken locally' });
    if ("ItemReader" in state)
      out.push({ where, problem: "uses ItemReader, which is not supported locally" });
    if (state.Type === "Pass" && "Result" in state && !state.Result) {
      out.push({ where, problem: "is a Pass state with a falsy Result, which passes its input locally" });
    }
    if (
      state.Type === "Task" &&
      state.TimeoutSeconds === undefined &&
      state.TimeoutSecondsPath === undefined
    ) {
      out.push({
        where,
        problem: "is a Task without TimeoutSeconds (the local interpreter stops it at 60 s)",
      });
    }
    if (state.Type === "Choice" && Array.isArray(state.Choices)) {
      for (const rule of state.Choices) checkChoiceRule(rule as Record<string, unknown>, where, out);
    }
    const processor = (state.ItemProcessor ?? state.Iterator) as
      | { States?: Record<string, Record<string, unknown>> }
      | undefined;
    if (processor?.States) checkStates(processor.States, where, out);
    if (Array.isArray(state.Branches)) {
      for (const branch of state.Branches as { States: Record<string, Record<string, unknown>> }[]) {
        checkStates(branch.States, where, out);
      }
    }
  }
}

/** Every construct in `definition` the local interpreter cannot run; empty when it is portable. */
export function findLocalIncompatibilities(definition: {
  States: Record<string, Record<string, unknown>>;
  QueryLanguage?: unknown;
}): CompatFinding[] {
  const out: CompatFinding[] = [];
  if (definition.QueryLanguage === "JSONata") out.push({ where: "(top level)", problem: "uses JSONata" });
  checkStates(definition.States, "", out);
  return out;
}
