/**
 * The deployable cgmirror stack, composed of parts a reader can name: the repository (bucket(s) and
 * key), the task functions (one per task, shared by the groups, least privilege), the workflows (one
 * consistency-group state machine per group; its timeout is the group's run timeout, which the group
 * lock's lease always exceeds), the schedules (EventBridge Scheduler, one per group), monitoring
 * (alarms to an encrypted SNS topic, a dashboard), maintenance (forget + prune) and restore. Account
 * and Region agnostic (synthesizes offline).
 *
 * Construct ids are a contract: renaming one replaces the resource (the bucket and keys are
 * retained, but a new empty one would be created). The parts are `StackPart`s, which keep their
 * resources' logical ids as if the stack created them directly (infra/stack-part.ts;
 * test/unit/infra-logical-ids.test.ts). docs/operations.md explains the operations side.
 */
import { Aws, type CfnElement, CfnOutput, Stack, type StackProps } from "aws-cdk-lib";
import type * as kms from "aws-cdk-lib/aws-kms";
import type * as nodejs from "aws-cdk-lib/aws-lambda-nodejs";
import type * as s3 from "aws-cdk-lib/aws-s3";
import type * as sns from "aws-cdk-lib/aws-sns";
import type * as sqs from "aws-cdk-lib/aws-sqs";
import type { Construct } from "constructs";
import { type GroupConfig, groupSetProblems } from "#core/config/group-config.ts";
import type { TaskName } from "#workflows/tasks.ts";
import { acknowledgeAcceptedFindings } from "./accepted-findings.ts";
import { FreezeDocuments } from "./freeze-documents.ts";
import { GroupSchedules } from "./group-schedules.ts";
import { GroupWorkflows, stateMachineOutputId } from "./group-workflows.ts";
import { GroupMaintenance } from "./maintenance.ts";
import { Monitoring } from "./monitoring.ts";
import { Repository } from "./repository.ts";
import { GroupRestore } from "./restore.ts";
import { logicalIdWithoutParts } from "./stack-part.ts";
import { TaskFunctions } from "./task-functions.ts";

export interface CgmirrorStackProps extends StackProps {
  /** Parsed group configs (core/config/group-config.ts); at least one. */
  readonly groups: readonly GroupConfig[];
  /**
   * Enable S3 Object Lock on the bucket(s) (no default retention: Revert deletes exact versions).
   * @default false
   */
  readonly objectLock?: boolean;
  /**
   * E-mail address subscribed to the alarm topic.
   * @default no subscription
   */
  readonly alarmEmail?: string;
}

/** The stack's props are inconsistent (e.g. two configs with one group name). */
export class StackPropsError extends Error {
  override readonly name = "StackPropsError";
}

export class CgmirrorStack extends Stack {
  readonly repository: Repository;
  /** The repository buckets by name (`repository.buckets`). */
  readonly buckets: ReadonlyMap<string, s3.Bucket>;
  readonly repositoryKey: kms.Key;
  readonly functions: Readonly<Record<TaskName, nodejs.NodejsFunction>>;
  /** One state machine per group, by group name. */
  readonly workflows: GroupWorkflows;
  readonly schedules: GroupSchedules;
  /** Receives schedule invocations that EventBridge Scheduler could not deliver. */
  readonly scheduleDeadLetters: sqs.Queue;
  readonly monitoring: Monitoring;
  readonly alarmTopic: sns.Topic;
  /** The freeze/thaw SSM documents; only when a group has `freeze.enabled`. */
  readonly freezeDocuments: FreezeDocuments | undefined;
  /** Forget + prune on their own schedule (infra/maintenance.ts). */
  readonly maintenance: GroupMaintenance;
  /** Restore into EBS snapshots as a state machine (infra/restore.ts). */
  readonly restore: GroupRestore;

  constructor(scope: Construct, id: string, props: CgmirrorStackProps) {
    super(scope, id, props);
    const groups = props.groups;
    if (groups.length === 0) throw new StackPropsError("expected at least one group config, got none");
    const names = groups.map((g) => g.group);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup) throw new StackPropsError(`expected each group name once, got ${JSON.stringify(dup)} twice`);
    const outputs = groups.map((g) => stateMachineOutputId(g.group));
    const clash = outputs.find((o, i) => outputs.indexOf(o) !== i);
    if (clash) {
      throw new StackPropsError(
        `expected group names that give distinct stack outputs, got two whose state machine output is ${clash} (they differ only in - or _); rename one`,
      );
    }
    const set = groupSetProblems(groups);
    if (set.length > 0) {
      throw new StackPropsError(
        `the group configs do not fit one deployment:\n${set.map((p) => `  - ${p.path}: ${p.message}`).join("\n")}`,
      );
    }

    this.repository = new Repository(this, "Storage", { groups, objectLock: props.objectLock });
    this.buckets = this.repository.buckets;
    this.repositoryKey = this.repository.key;
    const key = this.repositoryKey;
    this.freezeDocuments = groups.some((g) => g.freeze.enabled)
      ? new FreezeDocuments(this, "FreezeDocuments")
      : undefined;
    this.functions = new TaskFunctions(this, "Tasks", {
      groups,
      repositoryKey: key,
      freezeDocuments: this.freezeDocuments,
    }).functions;
    const functions = this.functions;
    this.workflows = new GroupWorkflows(this, "Workflows", { groups, functions });
    const stateMachineOf = (group: string) => this.workflows.stateMachine(group);
    this.schedules = new GroupSchedules(this, "Schedules", { groups, stateMachineOf });
    this.scheduleDeadLetters = this.schedules.deadLetters;
    this.monitoring = new Monitoring(this, "Monitoring", {
      groups,
      stateMachineOf,
      transferFunction: functions.Transfer,
      scheduleDeadLetters: this.scheduleDeadLetters,
      alarmEmail: props.alarmEmail,
    });
    this.alarmTopic = this.monitoring.alarmTopic;
    const dashboard = this.monitoring.dashboard;
    this.maintenance = new GroupMaintenance(this, "Maintenance", {
      groups,
      repositoryKey: key,
      alarmAction: this.monitoring.alarmAction,
      scheduleDeadLetters: this.scheduleDeadLetters,
    });
    this.restore = new GroupRestore(this, "Restore", {
      groups,
      repositoryKey: key,
    });
    new CfnOutput(this, "RestoreStateMachineArn", {
      description:
        "The restore state machine: cgmirror restore --to-snapshots --state-machine-arn <this> (or CGM_RESTORE_STATE_MACHINE_ARN)",
      value: this.restore.workflow.stateMachine.stateMachineArn,
    });

    // ---------------------------------------------------------------- outputs (README, docs/operations.md)
    for (const g of groups) {
      new CfnOutput(this, stateMachineOutputId(g.group), {
        description: `The state machine of group ${g.group}: cgmirror backup --group ${g.group} --state-machine-arn <this> (or CGM_STATE_MACHINE_ARN)`,
        value: stateMachineOf(g.group).stateMachineArn,
      });
    }
    let bucketIndex = 0;
    for (const [bucketName, bucket] of this.buckets) {
      new CfnOutput(this, bucketIndex === 0 ? "BucketName" : `BucketName${bucketIndex}`, {
        description: `Repository bucket ${bucketName} (CGM_BUCKET for cgmirror status/restore/verify)`,
        value: bucket.bucketName,
      });
      bucketIndex++;
    }
    new CfnOutput(this, "DashboardName", {
      description: "The CloudWatch dashboard of this deployment",
      value: dashboard.dashboardName,
    });
    new CfnOutput(this, "DashboardUrl", {
      description: "Console link to the dashboard",
      value: `https://console.aws.amazon.com/cloudwatch/home?region=${Aws.REGION}#dashboards:name=${dashboard.dashboardName}`,
    });
    // The roles a customer-managed volume key's policy must allow (docs/operations.md, "Encrypted volumes").
    new CfnOutput(this, "PlanRoleArn", {
      description: "Role of the Plan task (needs kms:Decrypt/DescribeKey via EBS on encrypted volumes' keys)",
      value: functions.Plan.role?.roleArn ?? "",
    });
    new CfnOutput(this, "TransferRoleArn", {
      description:
        "Role of the Transfer task (needs kms:Decrypt/DescribeKey via EBS on encrypted volumes' keys)",
      value: functions.Transfer.role?.roleArn ?? "",
    });
    new CfnOutput(this, "ScheduleDeadLetterQueueUrl", {
      description: "Schedule invocations that could not be delivered",
      value: this.scheduleDeadLetters.queueUrl,
    });

    acknowledgeAcceptedFindings({
      stack: this,
      groups,
      functions,
      stateMachines: this.workflows.stateMachines,
      scheduleDeadLetters: this.scheduleDeadLetters,
    });
  }

  /** A `StackPart` is not part of its resources' logical ids (infra/stack-part.ts). */
  protected override allocateLogicalId(element: CfnElement): string {
    return logicalIdWithoutParts(element) ?? super.allocateLogicalId(element);
  }
}
