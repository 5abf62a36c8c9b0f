/** Step Functions ARNs (no SDK import: the local runner and the CLI load it cheaply). */

const STATE_MACHINE_ARN =
  /^arn:(aws[a-z-]*):states:([a-z0-9-]+):(\d{12}):stateMachine:([A-Za-z0-9_-]{1,80})(?::[A-Za-z0-9_-]+)?$/;
/**
 * Run ids that can be execution names: a run id is [A-Za-z0-9][A-Za-z0-9._:-]{0,127} (core/format/layout.ts),
 * an execution name at most 80 characters without ':' (among others).
 */
const EXECUTION_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$/;

/**
 * The ARN of the execution named `name` of the state machine `stateMachineArn` (a version or alias
 * qualifier is dropped: executions belong to the state machine). `undefined` when either cannot be one.
 */
export function executionArnOf(stateMachineArn: string, name: string): string | undefined {
  const m = STATE_MACHINE_ARN.exec(stateMachineArn);
  if (!m || !EXECUTION_NAME.test(name)) return undefined;
  return `arn:${m[1]}:states:${m[2]}:${m[3]}:execution:${m[4]}:${name}`;
}
