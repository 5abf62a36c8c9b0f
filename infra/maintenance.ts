/**
 * Group maintenance in AWS: the Prune function (lambdas/prune.ts: forget + prune + snapshot
 * retention), its state machine (workflows/maintenance.ts), one EventBridge Scheduler schedule per
 * group (`prune.schedule`), least-privilege IAM, and an alarm when a maintenance run fails. The stack
 * only wires it (docs/operations.md, "Retention and prune").
 */
import { Aws, type CfnElement, Duration, Stack, TimeZone, Validations } from "aws-cdk-lib";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as iam from "aws-cdk-lib/aws-iam";
import type * as kms from "aws-cdk-lib/aws-kms";
import * as nodejs from "aws-cdk-lib/aws-lambda-nodejs";
import * as scheduler from "aws-cdk-lib/aws-scheduler";
import * as schedulerTargets from "aws-cdk-lib/aws-scheduler-targets";
import type * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import type { GroupConfig } from "#core/config/group-config.ts";
import { SNAPSHOT_TAGS } from "#core/protocol/snapshot-group.ts";
import { PRUNE_METRICS } from "#lambdas/prune.ts";
import { LIFECYCLE_TASKS } from "#workflows/lifecycle-tasks.ts";
import { MaintenanceWorkflow } from "#workflows/maintenance.ts";
import { cgmirrorFunctionProps, functionLogGroup, stateMachineLogs } from "./function-props.ts";
import { failedExecutionsAlarm } from "./monitoring.ts";

/** Areas of a group's repository (below its prefix) that prune reads, writes and deletes versions in. */
export const PRUNE_S3_ACCESS = {
  // leases/: running restores' read leases (forget and prune keep what they pin).
  read: ["HEAD", "locks", "commits", "generations", "volumes", "segments", "runs", "gc", "leases"],
  write: ["HEAD", "locks", "commits", "segments", "gc"],
  deleteVersion: ["commits", "generations", "volumes", "segments", "runs"],
} as const;

export interface GroupMaintenanceProps {
  readonly groups: readonly GroupConfig[];
  /** The repository buckets' KMS key. */
  readonly repositoryKey: kms.IKey;
  /** Where the maintenance-failed alarm goes. */
  readonly alarmAction: cloudwatch.IAlarmAction;
  /** Receives schedule invocations the Scheduler could not deliver. */
  readonly scheduleDeadLetters: sqs.IQueue;
}

export class GroupMaintenance extends Construct {
  readonly pruneFunction: nodejs.NodejsFunction;
  readonly workflow: MaintenanceWorkflow;
  readonly failedAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: GroupMaintenanceProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const spec = LIFECYCLE_TASKS.Prune;
    this.pruneFunction = new nodejs.NodejsFunction(
      this,
      "PruneFunction",
      cgmirrorFunctionProps({
        description: "cgmirror task Prune (forget + prune + snapshot retention)",
        spec,
        logGroup: functionLogGroup(this, "PruneLogs"),
        environment: {
          // Finds and deletes only snapshots this stack created (docs/operations.md).
          CGM_STACK_NAME: stack.stackName,
        },
      }),
    );
    this.grant(props);

    this.workflow = new MaintenanceWorkflow(this, "Workflow", {
      pruneFunction: this.pruneFunction,
      logs: stateMachineLogs(this, "WorkflowLogs", "maintenance"),
      tracingEnabled: true,
    });
    const machine = this.workflow.stateMachine;
    for (const g of props.groups) {
      new scheduler.Schedule(this, `Schedule-${g.group}`, {
        description: `cgmirror: forget + prune consistency group ${g.group}`,
        schedule: scheduler.ScheduleExpression.expression(
          g.prune.schedule.expression,
          g.prune.schedule.timezone === "UTC" ? undefined : TimeZone.of(g.prune.schedule.timezone),
        ),
        enabled: g.prune.schedule.enabled,
        target: new schedulerTargets.StepFunctionsStartExecution(machine, {
          input: scheduler.ScheduleTargetInput.fromObject({ config: g }),
          retryAttempts: 3,
          maxEventAge: Duration.hours(1),
          deadLetterQueue: props.scheduleDeadLetters,
        }),
      });
    }
    this.failedAlarm = failedExecutionsAlarm(this, "FailedAlarm", machine, {
      description:
        "A cgmirror maintenance run (forget + prune) failed; nothing a retained generation needs was deleted and the next schedule retries. See docs/operations.md, Alarms.",
      label: "Failed, timed out or aborted maintenance runs",
    });
    this.failedAlarm.addAlarmAction(props.alarmAction);
    this.acknowledge(props.groups);
  }

  /** The metric of what prune reclaimed for a group (bytes per run). */
  static bytesReclaimed(group: string, namespace: string, service: string): cloudwatch.Metric {
    return new cloudwatch.Metric({
      namespace,
      metricName: PRUNE_METRICS.bytesReclaimed,
      dimensionsMap: { service, Group: group },
      statistic: "Sum",
      period: Duration.days(1),
    });
  }

  private grant(props: GroupMaintenanceProps): void {
    const p = Aws.PARTITION;
    const groups = props.groups;
    const fn = this.pruneFunction;
    const area = (a: string) => (a === "HEAD" ? "HEAD" : `${a}/*`);
    const arns = (areas: readonly string[]) =>
      groups.flatMap((g) =>
        areas.map((a) => `arn:${p}:s3:::${g.target.bucket}/${g.target.prefix}/${area(a)}`),
      );
    const buckets = [...new Set(groups.map((g) => g.target.bucket))];
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "RepositoryList",
        actions: ["s3:ListBucket", "s3:ListBucketVersions"],
        resources: buckets.map((b) => `arn:${p}:s3:::${b}`),
        conditions: {
          StringLike: { "s3:prefix": groups.flatMap((g) => [g.target.prefix, `${g.target.prefix}/*`]) },
        },
      }),
    );
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "RepositoryRead",
        actions: ["s3:GetObject", "s3:GetObjectVersion"],
        resources: arns(PRUNE_S3_ACCESS.read),
      }),
    );
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "RepositoryWrite",
        actions: ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
        resources: arns(PRUNE_S3_ACCESS.write),
      }),
    );
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "RepositoryDeleteVersion",
        actions: ["s3:DeleteObjectVersion"],
        resources: arns(PRUNE_S3_ACCESS.deleteVersion),
      }),
    );
    const locking = groups.filter((g) => g.target.objectLock !== undefined);
    if (locking.length > 0) {
      // Prune keeps garbage whose Object Lock retention has not passed: a refused delete is AccessDenied
      // for a lock and an IAM deny alike, and the version's retention tells them apart.
      fn.addToRolePolicy(
        new iam.PolicyStatement({
          sid: "RepositoryReadRetention",
          actions: ["s3:GetObjectRetention"],
          resources: locking.flatMap((g) =>
            PRUNE_S3_ACCESS.deleteVersion.map(
              (a) => `arn:${p}:s3:::${g.target.bucket}/${g.target.prefix}/${area(a)}`,
            ),
          ),
        }),
      );
    }
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "RepositoryKey",
        actions: ["kms:Decrypt", "kms:GenerateDataKey*"],
        resources: [props.repositoryKey.keyArn],
        conditions: { StringEquals: { "kms:ViaService": `s3.${Aws.REGION}.amazonaws.com` } },
      }),
    );
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "DescribeSnapshots",
        actions: ["ec2:DescribeSnapshots"],
        resources: ["*"],
      }),
    );
    // Only snapshots this stack created (its stack tag) of the configured volumes, for these groups.
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "DeleteOwnGroupSnapshots",
        actions: ["ec2:DeleteSnapshot"],
        resources: [`arn:${p}:ec2:${Aws.REGION}::snapshot/*`],
        conditions: {
          StringEquals: {
            [`aws:ResourceTag/${SNAPSHOT_TAGS.group}`]: groups.map((g) => g.group),
            [`aws:ResourceTag/${SNAPSHOT_TAGS.stack}`]: Stack.of(this).stackName,
          },
          ArnEquals: {
            "ec2:ParentVolume": groups.flatMap((g) =>
              g.volumes.map((v) => `arn:${p}:ec2:${Aws.REGION}:${Aws.ACCOUNT_ID}:volume/${v.id}`),
            ),
          },
        },
      }),
    );
  }

  /** Acknowledges the accepted cdk-nag findings of these resources, each with its reason. */
  private acknowledge(groups: readonly GroupConfig[]): void {
    const nag = (id: string) => `AwsSolutions::AwsSolutions-${id}`;
    const stack = Stack.of(this);
    const logicalId = (c: Construct) =>
      stack.resolve(stack.getLogicalId(c.node.defaultChild as CfnElement)) as string;
    const fn = Validations.of(this.pruneFunction);
    fn.acknowledge({
      id: nag("IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]"),
      reason: "AWSLambdaBasicExecutionRole only allows writing this function's CloudWatch Logs.",
    });
    fn.acknowledge({
      id: nag("IAM5[Resource::*]"),
      reason:
        "ec2:DescribeSnapshots and the X-Ray PutTraceSegments/PutTelemetryRecords actions do not support resource-level permissions.",
    });
    fn.acknowledge({
      id: nag("IAM5[Action::kms:GenerateDataKey*]"),
      reason:
        "kms:GenerateDataKey* is what S3 needs for SSE-KMS; the statement names the bucket key, via S3 only.",
    });
    fn.acknowledge({
      id: nag("IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>::snapshot/*]"),
      reason:
        "Snapshot ids are only known at run time; deletion is conditioned on the group and stack tags and the volume.",
    });
    for (const g of groups) {
      for (const a of new Set<string>([
        ...PRUNE_S3_ACCESS.read,
        ...PRUNE_S3_ACCESS.write,
        ...PRUNE_S3_ACCESS.deleteVersion,
      ])) {
        if (a === "HEAD") continue;
        fn.acknowledge({
          id: nag(`IAM5[Resource::arn:<AWS::Partition>:s3:::${g.target.bucket}/${g.target.prefix}/${a}/*]`),
          reason:
            "Objects are created at run time under the group's prefix; prune gets only the areas it reads, writes and cleans.",
        });
      }
    }
    const sm = Validations.of(this.workflow.stateMachine);
    sm.acknowledge({
      id: nag("IAM5[Resource::*]"),
      reason:
        "CloudWatch Logs vended delivery for Step Functions needs logs:*LogDelivery on *, and X-Ray actions have no resource-level permissions.",
    });
    sm.acknowledge({
      id: nag(`IAM5[Resource::<${logicalId(this.pruneFunction)}.Arn>:*]`),
      reason:
        "Step Functions invokes the function by ARN; :* covers its versions (CDK's LambdaInvoke grant).",
    });
  }
}
