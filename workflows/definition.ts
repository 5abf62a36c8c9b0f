/**
 * The synthesized state machine definition (Amazon States Language) as a plain JSON object.
 *
 * `localDefinition()` synthesizes the same ConsistencyGroupWorkflow construct the stack deploys, in a
 * throwaway stack whose task functions are fixed placeholder ARNs, and returns the definition: this is
 * what the local runner executes with aws-local-stepfunctions (binding each Task state to its
 * handler by state name, see tasks.ts). `definitionFromTemplate()` extracts the definition from any
 * synthesized template, replacing CloudFormation references by placeholders.
 */
import { App, Stack } from "aws-cdk-lib";
import * as lambda from "aws-cdk-lib/aws-lambda";
import { ConsistencyGroupWorkflow } from "./consistency-group.ts";
import { TASK_NAMES, type TaskName } from "./tasks.ts";

/** ASL JSON; typed loosely on purpose (tests walk it generically). */
export type AslDefinition = {
  StartAt: string;
  States: Record<string, Record<string, unknown>>;
  [key: string]: unknown;
};

export const LOCAL_ACCOUNT = "000000000000";
export const LOCAL_REGION = "us-east-1";

/** The placeholder ARN of a task's function in the local definition. */
export function localFunctionArn(task: TaskName): string {
  return `arn:aws:lambda:${LOCAL_REGION}:${LOCAL_ACCOUNT}:function:cgmirror-${task}`;
}

type CfnValue = string | number | boolean | null | CfnValue[] | { [k: string]: CfnValue };

/** Resolves `Fn::Join`, `Ref` and `Fn::GetAtt` into strings; references become `placeholder(logicalId)`. */
function resolveCfn(value: CfnValue, placeholder: (ref: string) => string): string {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && !Array.isArray(value)) {
    if ("Fn::Join" in value) {
      const [sep, parts] = value["Fn::Join"] as [string, CfnValue[]];
      return parts.map((p) => resolveCfn(p, placeholder)).join(sep);
    }
    if ("Ref" in value) {
      const ref = value.Ref as string;
      if (ref === "AWS::Partition") return "aws";
      if (ref === "AWS::Region") return LOCAL_REGION;
      if (ref === "AWS::AccountId") return LOCAL_ACCOUNT;
      if (ref === "AWS::URLSuffix") return "amazonaws.com";
      return placeholder(ref);
    }
    if ("Fn::GetAtt" in value) {
      const [logicalId] = value["Fn::GetAtt"] as [string, string];
      return placeholder(logicalId);
    }
  }
  throw new TypeError(`expected a CloudFormation string expression, got ${JSON.stringify(value)}`);
}

/** A synthesized CloudFormation template (as JSON). */
export type CfnTemplate = {
  Resources: Record<string, { Type: string; Properties?: Record<string, unknown> }>;
};

const defaultPlaceholder = (id: string) => `arn:aws:lambda:${LOCAL_REGION}:${LOCAL_ACCOUNT}:function:${id}`;

/**
 * A state machine definition of a synthesized template (`Template.fromStack(s).toJSON()`): the only
 * one, or the one named `stateMachineName` (the stack has one per group, infra/stack.ts).
 */
export function definitionFromTemplate(
  template: CfnTemplate,
  placeholder: (logicalId: string) => string = defaultPlaceholder,
  stateMachineName?: string,
): AslDefinition {
  return JSON.parse(definitionTextFromTemplate(template, placeholder, stateMachineName)) as AslDefinition;
}

/**
 * The definition exactly as the template writes it (text, references replaced by placeholders): what
 * a Step Functions service parses. It differs from `JSON.stringify(definitionFromTemplate(...))`
 * in number formatting (`0.0`), which some parsers care about.
 */
export function definitionTextFromTemplate(
  template: CfnTemplate,
  placeholder: (logicalId: string) => string = defaultPlaceholder,
  stateMachineName?: string,
): string {
  // A consistency-group workflow (construct id "Workflow-<group>", named stateMachineName when given);
  // the stack's other state machines (the maintenance workflow, infra/maintenance.ts) have other ids.
  const all = Object.entries(template.Resources).filter(
    ([, r]) =>
      r.Type === "AWS::StepFunctions::StateMachine" &&
      (stateMachineName === undefined || r.Properties?.StateMachineName === stateMachineName),
  );
  const machines = (all.length > 1 ? all.filter(([id]) => id.startsWith("Workflow")) : all).map(([, r]) => r);
  if (machines.length !== 1) {
    throw new TypeError(
      `expected exactly one consistency-group state machine${stateMachineName ? ` named ${stateMachineName}` : ""} in the template, got ${machines.length}`,
    );
  }
  const body = (machines[0] as unknown as { Properties: { DefinitionString: CfnValue } }).Properties
    .DefinitionString;
  return resolveCfn(body, placeholder);
}

/** The workflow's definition with placeholder function ARNs, for local execution. */
export function localDefinition(): AslDefinition {
  return JSON.parse(localDefinitionText()) as AslDefinition;
}

/** The text of `localDefinition()`, exactly as synthesized (for services that parse it themselves). */
export function localDefinitionText(): string {
  // The definition is what is read: CDK's template validation is for the deployed stack (`cdk synth`).
  const app = new App({ builtinCloudFormationValidation: false });
  const stack = new Stack(app, "CgmirrorLocalWorkflow", {
    env: { account: LOCAL_ACCOUNT, region: LOCAL_REGION },
  });
  const functions = Object.fromEntries(
    TASK_NAMES.map((task) => [task, lambda.Function.fromFunctionArn(stack, task, localFunctionArn(task))]),
  ) as Record<TaskName, lambda.IFunction>;
  new ConsistencyGroupWorkflow(stack, "Workflow", { functions });
  const template = app.synth().getStackByName(stack.stackName).template as CfnTemplate;
  return definitionTextFromTemplate(template);
}

/**
 * The definition of the state machine whose logical id starts with `logicalIdPrefix` (the stack's
 * restore workflow is `RestoreWorkflowStateMachine…`, infra/restore.ts), references as placeholders.
 */
export function definitionByLogicalId(
  template: CfnTemplate,
  logicalIdPrefix: string,
  placeholder: (logicalId: string) => string = defaultPlaceholder,
): AslDefinition {
  const machines = Object.entries(template.Resources).filter(
    ([id, r]) => r.Type === "AWS::StepFunctions::StateMachine" && id.startsWith(logicalIdPrefix),
  );
  if (machines.length !== 1) {
    throw new TypeError(
      `expected exactly one state machine whose logical id starts with ${logicalIdPrefix}, got ${machines.length}`,
    );
  }
  const body = (machines[0]![1] as unknown as { Properties: { DefinitionString: CfnValue } }).Properties
    .DefinitionString;
  return JSON.parse(resolveCfn(body, placeholder)) as AslDefinition;
}

/** The placeholder ARN of the RestoreVolume function in `restoreDefinition()`. */
export const LOCAL_RESTORE_FUNCTION_ARN = `arn:aws:lambda:${LOCAL_REGION}:${LOCAL_ACCOUNT}:function:cgmirror-RestoreVolume`;

/**
 * The restore workflow's definition (workflows/restore.ts), the construct the stack deploys, with a
 * placeholder function ARN: what the local runner executes (local/restore-runner.ts).
 */
export async function restoreDefinition(): Promise<AslDefinition> {
  const { RestoreWorkflow } = await import("./restore.ts");
  const app = new App({ builtinCloudFormationValidation: false });
  const stack = new Stack(app, "CgmirrorLocalRestore", {
    env: { account: LOCAL_ACCOUNT, region: LOCAL_REGION },
  });
  new RestoreWorkflow(stack, "Workflow", {
    restoreFunction: lambda.Function.fromFunctionArn(stack, "RestoreVolume", LOCAL_RESTORE_FUNCTION_ARN),
  });
  const template = app.synth().getStackByName(stack.stackName).template as CfnTemplate;
  return definitionByLogicalId(template, "Workflow");
}
