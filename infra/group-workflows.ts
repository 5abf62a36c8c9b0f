/**
 * One consistency-group state machine per group (workflows/consistency-group.ts), each with the
 * group's own run timeout (the group lock's lease always exceeds it), logging to one shared log group.
 */
import { createHash } from "node:crypto";
import { Aws, Duration, RemovalPolicy, Stack } from "aws-cdk-lib";
import * as iam from "aws-cdk-lib/aws-iam";
import type * as nodejs from "aws-cdk-lib/aws-lambda-nodejs";
import * as logs from "aws-cdk-lib/aws-logs";
import * as sfn from "aws-cdk-lib/aws-stepfunctions";
import type { Construct } from "constructs";
import type { GroupConfig } from "#core/config/group-config.ts";
import { ConsistencyGroupWorkflow } from "#workflows/consistency-group.ts";
import type { TaskName } from "#workflows/tasks.ts";
import { StackPart } from "./stack-part.ts";

export interface GroupWorkflowsProps {
  readonly groups: readonly GroupConfig[];
  /** The task functions the state machines invoke. */
  readonly functions: Readonly<Record<TaskName, nodejs.NodejsFunction>>;
}

export class GroupWorkflows extends StackPart {
  /** One workflow per group, by group name. */
  readonly workflows: ReadonlyMap<string, ConsistencyGroupWorkflow>;
  /** Execution history of every group's state machine (level ALL, with execution data). */
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: GroupWorkflowsProps) {
    super(scope, id);
    const stackName = Stack.of(this).stackName;
    this.logGroup = new logs.LogGroup(this, "WorkflowLogs", {
      logGroupName: `/aws/vendedlogs/states/${stackName}-consistency-group`,
      retention: logs.RetentionDays.THREE_MONTHS,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const workflows = new Map<string, ConsistencyGroupWorkflow>();
    for (const g of props.groups) {
      workflows.set(
        g.group,
        new ConsistencyGroupWorkflow(this, `Workflow-${g.group}`, {
          functions: props.functions,
          stateMachineName: stateMachineNameOf(stackName, g.group),
          // The group's own run timeout; its lock lease is this + LOCK_MARGIN_MINUTES.
          timeout: Duration.minutes(g.runTimeoutMinutes),
          logs: { destination: this.logGroup, level: sfn.LogLevel.ALL, includeExecutionData: true },
          tracingEnabled: true,
        }),
      );
    }
    this.workflows = workflows;
    // AcquireLock asks whether a live lock's holder (an execution of the group's state machine) still
    // runs: DescribeExecution on these state machines' executions only. The ARNs are built from the
    // names (a reference to the state machines would make a cycle: they invoke the function).
    props.functions.AcquireLock.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "DescribeOwnExecutions",
        actions: ["states:DescribeExecution"],
        resources: props.groups.map(
          (g) =>
            `arn:${Aws.PARTITION}:states:${Aws.REGION}:${Aws.ACCOUNT_ID}:execution:${stateMachineNameOf(stackName, g.group)}:*`,
        ),
      }),
    );
  }

  /** The state machine of `group`. */
  stateMachine(group: string): sfn.StateMachine {
    const workflow = this.workflows.get(group);
    if (!workflow) throw new Error(`no workflow for group ${JSON.stringify(group)}`);
    return workflow.stateMachine;
  }

  /** Every group's state machine, by group name. */
  get stateMachines(): ReadonlyMap<string, sfn.StateMachine> {
    return new Map([...this.workflows].map(([group, w]) => [group, w.stateMachine]));
  }
}

/** The longest state machine name Step Functions accepts. */
const MAX_STATE_MACHINE_NAME = 80;

/**
 * The name of a group's state machine: `<stack>-<group>` (a name the console shows and that IAM can
 * name without a reference to the state machine), shortened with a hash when longer than 80.
 */
export function stateMachineNameOf(stackName: string, group: string): string {
  const name = `${stackName}-${group}`;
  if (name.length <= MAX_STATE_MACHINE_NAME) return name;
  const hash = createHash("sha256").update(name).digest("hex").slice(0, 8);
  return `${stackName.slice(0, MAX_STATE_MACHINE_NAME - group.length - 10)}-${hash}-${group}`.slice(
    0,
    MAX_STATE_MACHINE_NAME,
  );
}

/** The stack output of a group's state machine ARN: `StateMachineArn` + the group in PascalCase. */
export function stateMachineOutputId(group: string): string {
  return `StateMachineArn${group
    .split(/[-_]/)
    .filter((p) => p !== "")
    .map((p) => p[0]!.toUpperCase() + p.slice(1))
    .join("")}`;
}
