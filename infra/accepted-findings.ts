/**
 * The cdk-nag (AwsSolutions) findings this stack accepts, each with its reason, acknowledged finding
 * by finding on the construct it concerns. `npm run synth` fails on any finding not listed here.
 */
import { type CfnElement, type Stack, Validations } from "aws-cdk-lib";
import type * as nodejs from "aws-cdk-lib/aws-lambda-nodejs";
import type * as sqs from "aws-cdk-lib/aws-sqs";
import type * as sfn from "aws-cdk-lib/aws-stepfunctions";
import type { Construct } from "constructs";
import type { GroupConfig } from "#core/config/group-config.ts";
import type { TaskName } from "#workflows/tasks.ts";
import { stateMachineNameOf } from "./group-workflows.ts";
import { areaPattern, REPOSITORY_AREAS } from "./repository-access.ts";

/** Why each accepted cdk-nag finding is acceptable. Every suppression in this stack uses one of these. */
export const ACCEPTED_FINDINGS = {
  basicExecution:
    "AWSLambdaBasicExecutionRole only allows writing this function's CloudWatch Logs; it is the AWS-managed minimum for Lambda logging.",
  describeStar:
    "ec2:DescribeSnapshots, ec2:DescribeInstances, ssm:GetCommandInvocation and ssm:CancelCommand do not support resource-level permissions; CancelCommand only stops a command this role sent to an instance it may target.",
  snapshotStar:
    "Snapshot ids are created at run time, so snapshot ARNs end in /*; every such statement is conditioned on the cgmirror:group tag (aws:ResourceTag or aws:RequestTag) of this deployment's groups.",
  prefixStar:
    "Objects are created at run time under each group's key prefix; each task gets only the areas of <bucket>/<group prefix>/ its step needs (TASK_S3_ACCESS) and list access to that prefix.",
  deadLetterQueue:
    "This queue is itself the dead-letter queue of the EventBridge Scheduler schedules; a dead-letter queue of a dead-letter queue adds nothing (its depth is alarmed).",
  kmsStar:
    "kms:GenerateDataKey* / kms:ReEncrypt* are the actions S3 needs for SSE-KMS; the statement names the one bucket key and is limited to calls via S3 (kms:ViaService).",
  xray: "X-Ray PutTraceSegments/PutTelemetryRecords do not support resource-level permissions (added by Tracing.ACTIVE).",
  distributedMap:
    "The distributed Map starts child executions of this state machine; their ARNs are only known at run time (CDK scopes them to this state machine's executions).",
  logDelivery:
    "CloudWatch Logs vended log delivery for Step Functions requires logs:*LogDelivery actions on resource * (AWS documented requirement).",
  lambdaVersions:
    "Step Functions invokes the task functions by ARN; the :* suffix covers their versions/aliases (CDK's LambdaInvoke grant).",
  ownExecutions:
    "AcquireLock may describe the executions of this stack's state machines only (states:DescribeExecution): a live lock's holder is one of them, named by its run id, known only at run time.",
  accessLogBucket:
    "This bucket receives the repository bucket's server access logs; logging the log bucket itself would recurse.",
};

export interface AcceptedFindingsScope {
  readonly stack: Stack;
  readonly groups: readonly GroupConfig[];
  readonly functions: Readonly<Record<TaskName, nodejs.NodejsFunction>>;
  /** Each group's state machine, by group name. */
  readonly stateMachines: ReadonlyMap<string, sfn.StateMachine>;
  readonly scheduleDeadLetters: sqs.Queue;
}

/** Acknowledges, finding by finding, every accepted cdk-nag finding, each with its reason. */
export function acknowledgeAcceptedFindings(s: AcceptedFindingsScope): void {
  const nag = (id: string) => `AwsSolutions::AwsSolutions-${id}`;
  const logicalId = (c: Construct) =>
    s.stack.resolve(s.stack.getLogicalId(c.node.defaultChild as CfnElement)) as string;
  for (const fn of Object.values(s.functions)) {
    const v = Validations.of(fn);
    v.acknowledge({
      id: nag("IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]"),
      reason: ACCEPTED_FINDINGS.basicExecution,
    });
    v.acknowledge({
      id: nag("IAM5[Resource::*]"),
      reason: `${ACCEPTED_FINDINGS.describeStar} ${ACCEPTED_FINDINGS.xray}`,
    });
    v.acknowledge({ id: nag("IAM5[Action::kms:GenerateDataKey*]"), reason: ACCEPTED_FINDINGS.kmsStar });
    v.acknowledge({
      id: nag("IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>::snapshot/*]"),
      reason: ACCEPTED_FINDINGS.snapshotStar,
    });
    for (const g of s.groups) {
      for (const area of REPOSITORY_AREAS.filter((a) => a !== "HEAD")) {
        v.acknowledge({
          id: nag(
            `IAM5[Resource::arn:<AWS::Partition>:s3:::${g.target.bucket}/${g.target.prefix}/${areaPattern(area)}]`,
          ),
          reason: ACCEPTED_FINDINGS.prefixStar,
        });
      }
    }
  }
  Validations.of(s.scheduleDeadLetters).acknowledge({
    id: "AwsSolutions-SQS3",
    reason: ACCEPTED_FINDINGS.deadLetterQueue,
  });
  for (const g of s.groups) {
    const machine = s.stateMachines.get(g.group) as sfn.StateMachine;
    const v = Validations.of(machine);
    v.acknowledge({
      id: nag("IAM5[Resource::*]"),
      reason: `${ACCEPTED_FINDINGS.logDelivery} ${ACCEPTED_FINDINGS.xray}`,
    });
    for (const fn of Object.values(s.functions)) {
      v.acknowledge({
        id: nag(`IAM5[Resource::<${logicalId(fn)}.Arn>:*]`),
        reason: ACCEPTED_FINDINGS.lambdaVersions,
      });
    }
    const name = `{"Fn::Select":[6,{"Fn::Split":[":",{"Ref":"${logicalId(machine)}"}]}]}`;
    for (const suffix of [":*", "/TransferShards:*"]) {
      v.acknowledge({
        id: nag(
          `IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:${name}${suffix}]`,
        ),
        reason: ACCEPTED_FINDINGS.distributedMap,
      });
    }
    Validations.of(s.functions.AcquireLock).acknowledge({
      id: nag(
        `IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:${stateMachineNameOf(s.stack.stackName, g.group)}:*]`,
      ),
      reason: ACCEPTED_FINDINGS.ownExecutions,
    });
  }
}
