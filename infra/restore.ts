/**
 * Restore into EBS in AWS: the RestoreVolume function (lambdas/restore-volume.ts), its state machine
 * (workflows/restore.ts) and least-privilege IAM. Started by `cgmirror restore --to-snapshots
 * --state-machine-arn <RestoreStateMachineArn>` (docs/operations.md, "Restore into EBS snapshots").
 * The stack only wires it.
 */
import { Aws, type CfnElement, Stack, Validations } from "aws-cdk-lib";
import * as iam from "aws-cdk-lib/aws-iam";
import type * as kms from "aws-cdk-lib/aws-kms";
import * as nodejs from "aws-cdk-lib/aws-lambda-nodejs";
import { Construct } from "constructs";
import type { GroupConfig } from "#core/config/group-config.ts";
import { RESTORE_TAGS } from "#core/restore/restore-snapshots.ts";
import { LIFECYCLE_TASKS } from "#workflows/lifecycle-tasks.ts";
import { RestoreWorkflow } from "#workflows/restore.ts";
import { cgmirrorFunctionProps, functionLogGroup, stateMachineLogs } from "./function-props.ts";

/** Areas of a group's repository (below its prefix) a restore reads. */
export const RESTORE_S3_READ = ["HEAD", "commits", "generations", "volumes", "segments", "leases"] as const;
/** The one area a restore writes and deletes versions in: its read lease (docs/format.md §10.2). */
export const RESTORE_S3_WRITE = ["leases"] as const;

export interface GroupRestoreProps {
  readonly groups: readonly GroupConfig[];
  /** The repository buckets' KMS key. */
  readonly repositoryKey: kms.IKey;
}

export class GroupRestore extends Construct {
  readonly restoreFunction: nodejs.NodejsFunction;
  readonly workflow: RestoreWorkflow;

  constructor(scope: Construct, id: string, props: GroupRestoreProps) {
    super(scope, id);
    const spec = LIFECYCLE_TASKS.RestoreVolume;
    this.restoreFunction = new nodejs.NodejsFunction(
      this,
      "RestoreFunction",
      cgmirrorFunctionProps({
        description: "cgmirror task RestoreVolume (restore a generation into EBS snapshots)",
        spec,
        logGroup: functionLogGroup(this, "RestoreLogs"),
      }),
    );
    this.grant(props);
    this.workflow = new RestoreWorkflow(this, "Workflow", {
      restoreFunction: this.restoreFunction,
      logs: stateMachineLogs(this, "WorkflowLogs", "restore"),
      tracingEnabled: true,
    });
    this.acknowledge(props.groups);
  }

  private grant(props: GroupRestoreProps): void {
    const p = Aws.PARTITION;
    const groups = props.groups;
    const fn = this.restoreFunction;
    const area = (a: string) => (a === "HEAD" ? "HEAD" : `${a}/*`);
    const buckets = [...new Set(groups.map((g) => g.target.bucket))];
    const snapshots = `arn:${p}:ec2:${Aws.REGION}::snapshot/*`;
    const groupNames = groups.map((g) => g.group);
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
        resources: groups.flatMap((g) =>
          RESTORE_S3_READ.map((a) => `arn:${p}:s3:::${g.target.bucket}/${g.target.prefix}/${area(a)}`),
        ),
      }),
    );
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "ReadLeaseWrite",
        actions: ["s3:PutObject", "s3:DeleteObjectVersion"],
        resources: groups.flatMap((g) =>
          RESTORE_S3_WRITE.map((a) => `arn:${p}:s3:::${g.target.bucket}/${g.target.prefix}/${area(a)}`),
        ),
      }),
    );
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "RepositoryKey",
        // GenerateDataKey: the read lease is written under the bucket key.
        actions: ["kms:Decrypt", "kms:GenerateDataKey*"],
        resources: [props.repositoryKey.keyArn],
        conditions: { StringEquals: { "kms:ViaService": `s3.${Aws.REGION}.amazonaws.com` } },
      }),
    );
    // New snapshots only with the restore's tags for these groups (StartSnapshot tags on creation,
    // which needs ec2:CreateTags too: Service Authorization Reference, Amazon EBS).
    const tagged = {
      StringEquals: { [`aws:RequestTag/${RESTORE_TAGS.group}`]: groupNames },
      Null: { [`aws:RequestTag/${RESTORE_TAGS.restoreId}`]: "false" },
    };
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "StartRestoreSnapshots",
        actions: ["ebs:StartSnapshot", "ec2:CreateTags"],
        resources: [snapshots],
        conditions: tagged,
      }),
    );
    // Writing, completing and deleting: only snapshots a restore of these groups tagged.
    const own = {
      StringEquals: { [`aws:ResourceTag/${RESTORE_TAGS.group}`]: groupNames },
      Null: { [`aws:ResourceTag/${RESTORE_TAGS.restoreId}`]: "false" },
    };
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "WriteRestoreSnapshots",
        actions: ["ebs:PutSnapshotBlock", "ebs:CompleteSnapshot", "ec2:DeleteSnapshot"],
        resources: [snapshots],
        conditions: own,
      }),
    );
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "DescribeSnapshots",
        actions: ["ec2:DescribeSnapshots"],
        resources: ["*"],
      }),
    );
  }

  /** Acknowledges the accepted cdk-nag findings of these resources, each with its reason. */
  private acknowledge(groups: readonly GroupConfig[]): void {
    const nag = (id: string) => `AwsSolutions::AwsSolutions-${id}`;
    const stack = Stack.of(this);
    const logicalId = (c: Construct) =>
      stack.resolve(stack.getLogicalId(c.node.defaultChild as CfnElement)) as string;
    const fn = Validations.of(this.restoreFunction);
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
        "S3 needs kms:GenerateDataKey* to write the restore's read lease under SSE-KMS; the statement names the one bucket key and is limited to calls via S3 (kms:ViaService).",
    });
    fn.acknowledge({
      id: nag("IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>::snapshot/*]"),
      reason:
        "Snapshot ids are only known at run time; creating needs the restore's group and restore-id tags in the request, writing and deleting them on the snapshot.",
    });
    for (const g of groups) {
      for (const a of RESTORE_S3_READ) {
        if (a === "HEAD") continue;
        fn.acknowledge({
          id: nag(`IAM5[Resource::arn:<AWS::Partition>:s3:::${g.target.bucket}/${g.target.prefix}/${a}/*]`),
          reason:
            "Objects are created at run time under the group's prefix; a restore reads only these areas.",
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
      id: nag(`IAM5[Resource::<${logicalId(this.restoreFunction)}.Arn>:*]`),
      reason:
        "Step Functions invokes the function by ARN; :* covers its versions (CDK's LambdaInvoke grant).",
    });
  }
}
