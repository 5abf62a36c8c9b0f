/**
 * The deployable cgmirror stack: the repository bucket(s) and their key, one function per task (shared
 * by the groups), one consistency-group state machine per group (its timeout is the group's run
 * timeout, which the group lock's lease always exceeds) with its own EventBridge Scheduler schedule,
 * least-privilege IAM, alarms to an encrypted SNS topic and a dashboard. Account/Region agnostic
 * (synthesizes offline).
 *
 * Construct ids are a contract: renaming one replaces the resource (the bucket and keys are
 * retained, but a new empty one would be created). docs/operations.md explains the operations side.
 */
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import {
  Aws,
  type CfnElement,
  CfnOutput,
  Duration,
  RemovalPolicy,
  Stack,
  type StackProps,
  TimeZone,
  Validations,
} from "aws-cdk-lib";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as cwActions from "aws-cdk-lib/aws-cloudwatch-actions";
import * as iam from "aws-cdk-lib/aws-iam";
import * as kms from "aws-cdk-lib/aws-kms";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as nodejs from "aws-cdk-lib/aws-lambda-nodejs";
import * as logs from "aws-cdk-lib/aws-logs";
import * as s3 from "aws-cdk-lib/aws-s3";
import * as scheduler from "aws-cdk-lib/aws-scheduler";
import * as schedulerTargets from "aws-cdk-lib/aws-scheduler-targets";
import * as sns from "aws-cdk-lib/aws-sns";
import * as sqs from "aws-cdk-lib/aws-sqs";
import type * as ssm from "aws-cdk-lib/aws-ssm";
import * as sfn from "aws-cdk-lib/aws-stepfunctions";
import type { Construct } from "constructs";
import { type GroupConfig, groupSetProblems } from "#core/config/group-config.ts";
import { SNAPSHOT_TAGS } from "#core/protocol/snapshot-group.ts";
import { COMMITTED_METRIC } from "#lambdas/commit.ts";
import { RUN_METRICS } from "#lambdas/metric-names.ts";
import { NEEDS_REPAIR_METRIC } from "#lambdas/recover.ts";
import { ConsistencyGroupWorkflow } from "#workflows/consistency-group.ts";
import { TASK_NAMES, TASKS, type TaskName } from "#workflows/tasks.ts";
import { FreezeDocuments } from "./freeze-documents.ts";
import { GroupMaintenance } from "./maintenance.ts";
import { GroupRestore } from "./restore.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/**
 * The areas of a group's repository under its prefix (docs/format.md, "Key layout"): the HEAD object,
 * and one folder each for the lock, committed-generation records, manifests, volume index roots and
 * runs, segments, per-run scratch (plans, shard lists and results) and the pending snapshot set.
 */
export const REPOSITORY_AREAS = [
  "HEAD",
  "locks",
  "commits",
  "generations",
  "volumes",
  "segments",
  "runs",
  "gc",
  "pending",
  // Run records (docs/format.md §13): written by ReleaseLock, Revert and Recover; read only by the CLI.
  "history",
] as const;
export type RepositoryArea = (typeof REPOSITORY_AREAS)[number];

/** The key pattern of an area below the group prefix, as used in IAM resource ARNs. */
export function areaPattern(area: RepositoryArea): string {
  return area === "HEAD" ? "HEAD" : `${area}/*`;
}

export interface S3Access {
  /** GetObject / GetObjectVersion (and listing the group prefix). */
  readonly read: readonly RepositoryArea[];
  /** PutObject and multipart uploads. */
  readonly write: readonly RepositoryArea[];
  /** DeleteObject without a version id: only a delete marker (scratch objects of the run). */
  readonly deleteMarker: readonly RepositoryArea[];
  /** DeleteObjectVersion: destroys a version; only where a task must undo or clean up. */
  readonly deleteVersion: readonly RepositoryArea[];
}

/** The areas whose objects a committed generation reaches, locked under `target.objectLock`. */
export const OBJECT_LOCK_AREAS: readonly RepositoryArea[] = ["commits", "generations", "volumes", "segments"];

/** Every area a run reads (run records are written by the lock and revert tasks, read only by the CLI). */
const ALL_AREAS: readonly RepositoryArea[] = REPOSITORY_AREAS.filter((a) => a !== "history");

/**
 * What each task may do in the repository. Only Commit, Recover (which fences HEAD with its token) and
 * the lock tasks touch HEAD and locks/ (the lock tasks read HEAD only); Transfer writes only segments/
 * and runs/. docs/operations.md, "Permissions", has this table.
 */
export const TASK_S3_ACCESS: Readonly<Record<TaskName, S3Access>> = {
  // AcquireLock reads HEAD's fence: a new lock's fencing number starts above it.
  AcquireLock: { read: ["locks", "HEAD"], write: ["locks"], deleteMarker: [], deleteVersion: [] },
  Recover: {
    read: ALL_AREAS,
    write: ["HEAD", "commits", "history"],
    deleteMarker: [],
    deleteVersion: ["volumes", "generations", "runs"],
  },
  // Snapshot records the snapshot set it takes and drops one it cannot adopt (pending/snapshot-set.json).
  Snapshot: {
    read: ["locks", "HEAD", "pending"],
    write: ["pending"],
    deleteMarker: [],
    deleteVersion: ["pending"],
  },
  CheckSnapshots: { read: ["locks", "HEAD"], write: [], deleteMarker: [], deleteVersion: [] },
  Plan: { read: ALL_AREAS, write: ["runs"], deleteMarker: ["runs"], deleteVersion: [] },
  Transfer: {
    // gc/: the retired-segment set (Transfer never dedups into a segment prune retired).
    read: ["volumes", "segments", "runs", "commits", "generations", "HEAD", "gc"],
    write: ["segments", "runs"],
    deleteMarker: ["runs"],
    deleteVersion: [],
  },
  Prepare: { read: ALL_AREAS, write: ["volumes", "runs"], deleteMarker: ["runs"], deleteVersion: [] },
  Commit: { read: ALL_AREAS, write: ["generations", "HEAD", "commits"], deleteMarker: [], deleteVersion: [] },
  Revert: {
    read: ALL_AREAS,
    write: ["history"],
    deleteMarker: [],
    deleteVersion: ["volumes", "generations", "runs", "segments", "pending"],
  },
  ReleaseLock: {
    read: ["locks", "HEAD", "generations", "pending"],
    write: ["locks", "history"],
    deleteMarker: [],
    deleteVersion: ["runs", "pending"],
  },
};

/** CloudWatch namespace and Powertools service name of every function. */
export const METRICS_NAMESPACE = "cgmirror";
export const SERVICE_NAME = "cgmirror";

/** Tasks that create, find or delete snapshots (they need the stack tag). */
const SNAPSHOT_TASKS: ReadonlySet<TaskName> = new Set([
  "Recover",
  "Snapshot",
  "CheckSnapshots",
  "Revert",
  "ReleaseLock",
]);

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

/** Why each accepted cdk-nag finding is acceptable. Every suppression in this stack uses one of these. */
const REASONS = {
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

/** The stack's props are inconsistent (e.g. two configs with one group name). */
export class StackPropsError extends Error {
  override readonly name = "StackPropsError";
}

export class CgmirrorStack extends Stack {
  readonly buckets: ReadonlyMap<string, s3.Bucket>;
  readonly functions: Readonly<Record<TaskName, nodejs.NodejsFunction>>;
  /** One state machine per group, by group name. */
  readonly workflows: ReadonlyMap<string, ConsistencyGroupWorkflow>;
  readonly alarmTopic: sns.Topic;
  /** The freeze/thaw SSM documents; only when a group has `freeze.enabled`. */
  readonly freezeDocuments: FreezeDocuments | undefined;
  /** Receives schedule invocations that EventBridge Scheduler could not deliver. */
  readonly scheduleDeadLetters: sqs.Queue;
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

    // ---------------------------------------------------------------- storage
    const key = new kms.Key(this, "RepositoryKey", {
      description: "cgmirror: SSE-KMS key of the repository bucket(s)",
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    const accessLogs = new s3.Bucket(this, "AccessLogs", {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [{ id: "expire-access-logs", expiration: Duration.days(365) }],
    });
    Validations.of(accessLogs).acknowledge({ id: "AwsSolutions-S1", reason: REASONS.accessLogBucket });

    const byBucket = new Map<string, GroupConfig[]>();
    for (const g of groups) byBucket.set(g.target.bucket, [...(byBucket.get(g.target.bucket) ?? []), g]);
    const buckets = new Map<string, s3.Bucket>();
    let index = 0;
    for (const [bucketName, members] of byBucket) {
      const bucket = new s3.Bucket(this, index === 0 ? "Repository" : `Repository${index}`, {
        bucketName,
        versioned: true,
        encryption: s3.BucketEncryption.KMS,
        encryptionKey: key,
        bucketKeyEnabled: true,
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
        enforceSSL: true,
        minimumTLSVersion: 1.2,
        objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        serverAccessLogsBucket: accessLogs,
        serverAccessLogsPrefix: `${bucketName}/`,
        // A group with target.objectLock needs it; never a default retention (Revert deletes what a
        // failed run wrote: only committed objects are locked, by Commit).
        objectLockEnabled:
          (props.objectLock ?? false) || members.some((g) => g.target.objectLock !== undefined),
        removalPolicy: RemovalPolicy.RETAIN,
        lifecycleRules: repositoryLifecycle(members),
      });
      buckets.set(bucketName, bucket);
      index++;
    }
    this.buckets = buckets;

    // ---------------------------------------------------------------- freeze documents
    this.freezeDocuments = groups.some((g) => g.freeze.enabled)
      ? new FreezeDocuments(this, "FreezeDocuments")
      : undefined;

    // ---------------------------------------------------------------- functions
    const functions = {} as Record<TaskName, nodejs.NodejsFunction>;
    for (const task of TASK_NAMES) {
      const spec = TASKS[task];
      const logGroup = new logs.LogGroup(this, `${task}Logs`, {
        retention: logs.RetentionDays.THREE_MONTHS,
        removalPolicy: RemovalPolicy.DESTROY,
      });
      functions[task] = new nodejs.NodejsFunction(this, `${task}Function`, {
        description: `cgmirror task ${task}`,
        entry: `${ROOT}${spec.entry}`,
        handler: "handler",
        projectRoot: ROOT,
        depsLockFilePath: `${ROOT}package-lock.json`,
        runtime: lambda.Runtime.NODEJS_24_X,
        architecture: lambda.Architecture.ARM_64,
        memorySize: spec.memoryMiB,
        timeout: Duration.seconds(spec.timeoutSeconds),
        tracing: lambda.Tracing.ACTIVE,
        logGroup,
        environment: {
          POWERTOOLS_SERVICE_NAME: SERVICE_NAME,
          POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
          POWERTOOLS_LOG_LEVEL: "INFO",
          NODE_OPTIONS: "--enable-source-maps",
          // glibc returns big block buffers to the OS at once: bounds the transfer worker's RSS
          // (docs/transfer.md, "Memory").
          ...(task === "Transfer" ? { MALLOC_MMAP_THRESHOLD_: "131072" } : {}),
          // Snapshots are tagged with the stack: IAM lets it delete only its own (docs/operations.md).
          ...(SNAPSHOT_TASKS.has(task) ? { CGM_STACK_NAME: this.stackName } : {}),
          ...(task === "Snapshot" && this.freezeDocuments
            ? {
                CGM_FREEZE_DOCUMENT: this.freezeDocuments.freeze.ref,
                CGM_THAW_DOCUMENT: this.freezeDocuments.thaw.ref,
              }
            : {}),
        },
        bundling: {
          forceDockerBundling: false,
          format: nodejs.OutputFormat.ESM,
          target: "node24",
          minify: true,
          keepNames: true,
          sourceMap: true,
          sourcesContent: false,
          // esbuild prints only errors (no per-bundle size lines on every synth).
          logLevel: nodejs.LogLevel.ERROR,
          // Bundle the AWS SDK too: the versions tested are the versions deployed.
          externalModules: [],
          banner:
            "import { createRequire as __cgmCreateRequire } from 'node:module'; const require = __cgmCreateRequire(import.meta.url);",
        },
      });
    }
    this.functions = functions;
    this.grantTaskPermissions(groups, key);

    // ---------------------------------------------------------------- workflows (one per group)
    const sfnLogs = new logs.LogGroup(this, "WorkflowLogs", {
      logGroupName: `/aws/vendedlogs/states/${this.stackName}-consistency-group`,
      retention: logs.RetentionDays.THREE_MONTHS,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const workflows = new Map<string, ConsistencyGroupWorkflow>();
    for (const g of groups) {
      workflows.set(
        g.group,
        new ConsistencyGroupWorkflow(this, `Workflow-${g.group}`, {
          functions,
          stateMachineName: stateMachineNameOf(this.stackName, g.group),
          // The group's own run timeout; its lock lease is this + LOCK_MARGIN_MINUTES.
          timeout: Duration.minutes(g.runTimeoutMinutes),
          logs: { destination: sfnLogs, level: sfn.LogLevel.ALL, includeExecutionData: true },
          tracingEnabled: true,
        }),
      );
    }
    this.workflows = workflows;
    const machineOf = (g: GroupConfig) => (workflows.get(g.group) as ConsistencyGroupWorkflow).stateMachine;
    // AcquireLock asks whether a live lock's holder (an execution of the group's state machine) still
    // runs: DescribeExecution on these state machines' executions only. The ARNs are built from the
    // names (a reference to the state machines would make a cycle: they invoke the function).
    functions.AcquireLock.addToRolePolicy(
      new iam.PolicyStatement({
        sid: "DescribeOwnExecutions",
        actions: ["states:DescribeExecution"],
        resources: groups.map(
          (g) =>
            `arn:${Aws.PARTITION}:states:${Aws.REGION}:${Aws.ACCOUNT_ID}:execution:${stateMachineNameOf(this.stackName, g.group)}:*`,
        ),
      }),
    );

    // ---------------------------------------------------------------- schedules
    // Invocations the Scheduler could not deliver (after its retries) land here, with an alarm below.
    // SSE-SQS: the Scheduler's role can send without a KMS grant (a customer key would need one).
    this.scheduleDeadLetters = new sqs.Queue(this, "ScheduleDeadLetters", {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    for (const g of groups) {
      new scheduler.Schedule(this, `Schedule-${g.group}`, {
        description: `cgmirror: back up consistency group ${g.group}`,
        schedule: scheduler.ScheduleExpression.expression(
          g.schedule.expression,
          cdkTimeZone(g.schedule.timezone),
        ),
        enabled: g.schedule.enabled,
        target: new schedulerTargets.StepFunctionsStartExecution(machineOf(g), {
          input: scheduler.ScheduleTargetInput.fromObject({ config: g }),
          retryAttempts: 3,
          maxEventAge: Duration.hours(1),
          deadLetterQueue: this.scheduleDeadLetters,
        }),
      });
    }

    // ---------------------------------------------------------------- alarms, dashboard
    const alarmKey = new kms.Key(this, "AlarmTopicKey", {
      description: "cgmirror: encrypts the alarm topic",
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    alarmKey.grant(
      new iam.ServicePrincipal("cloudwatch.amazonaws.com"),
      "kms:Decrypt",
      "kms:GenerateDataKey*",
    );
    this.alarmTopic = new sns.Topic(this, "AlarmTopic", {
      displayName: "cgmirror alarms",
      masterKey: alarmKey,
      enforceSSL: true,
    });
    if (props.alarmEmail) {
      new sns.Subscription(this, "AlarmEmail", {
        topic: this.alarmTopic,
        protocol: sns.SubscriptionProtocol.EMAIL,
        endpoint: props.alarmEmail,
      });
    }
    const action = new cwActions.SnsAction(this.alarmTopic);
    const undelivered = new cloudwatch.Alarm(this, "ScheduleDeadLetterAlarm", {
      alarmDescription:
        "EventBridge Scheduler could not start a cgmirror run (the invocation is in the dead-letter queue). See docs/operations.md, Alarms.",
      metric: this.scheduleDeadLetters.metricApproximateNumberOfMessagesVisible({
        statistic: "Maximum",
        period: Duration.minutes(5),
      }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    undelivered.addAlarmAction(action);

    this.maintenance = new GroupMaintenance(this, "Maintenance", {
      groups,
      repositoryKey: key,
      alarmAction: action,
      scheduleDeadLetters: this.scheduleDeadLetters,
      serviceName: SERVICE_NAME,
      metricsNamespace: METRICS_NAMESPACE,
    });
    this.restore = new GroupRestore(this, "Restore", {
      groups,
      repositoryKey: key,
      serviceName: SERVICE_NAME,
      metricsNamespace: METRICS_NAMESPACE,
    });
    new CfnOutput(this, "RestoreStateMachineArn", {
      description:
        "The restore state machine: cgmirror restore --to-snapshots --state-machine-arn <this> (or CGM_RESTORE_STATE_MACHINE_ARN)",
      value: this.restore.workflow.stateMachine.stateMachineArn,
    });

    const dashboard = new cloudwatch.Dashboard(this, "Dashboard", {
      dashboardName: `${this.stackName}-cgmirror`,
    });
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: "Runs (all groups)",
        left: groups.flatMap((g) => [
          machineOf(g).metricStarted({ statistic: "Sum", label: `${g.group} started` }),
          machineOf(g).metricSucceeded({ statistic: "Sum", label: `${g.group} succeeded` }),
          machineOf(g).metricFailed({ statistic: "Sum", label: `${g.group} failed` }),
        ]),
        width: 12,
      }),
      new cloudwatch.GraphWidget({
        title: "Transfer task duration and errors",
        left: [functions.Transfer.metricDuration({ statistic: "p90" })],
        right: [functions.Transfer.metricErrors({ statistic: "Sum" }), functions.Transfer.metricThrottles()],
        width: 12,
      }),
    );
    for (const g of groups) {
      const dims = { service: SERVICE_NAME, Group: g.group };
      const machine = machineOf(g);
      const runFailed = new cloudwatch.Alarm(this, `RunFailedAlarm-${g.group}`, {
        alarmDescription:
          `A cgmirror run of ${g.group} failed, timed out or was aborted (a failed run reverted; the previous consistency group is intact). ` +
          "See docs/operations.md, Alarms.",
        metric: new cloudwatch.MathExpression({
          label: `Failed, timed out or aborted runs of ${g.group}`,
          expression: "failed + timedOut + aborted",
          usingMetrics: {
            failed: machine.metricFailed({ statistic: "Sum" }),
            timedOut: machine.metricTimedOut({ statistic: "Sum" }),
            aborted: machine.metricAborted({ statistic: "Sum" }),
          },
          period: Duration.minutes(5),
        }),
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      runFailed.addAlarmAction(action);
      const rpo = rpoAlarmShape(g);
      const committed = new cloudwatch.Metric({
        namespace: METRICS_NAMESPACE,
        metricName: COMMITTED_METRIC,
        dimensionsMap: dims,
        statistic: "Sum",
        period: Duration.minutes(rpo.periodMinutes),
      });
      const rpoAlarm = new cloudwatch.Alarm(this, `RpoAlarm-${g.group}`, {
        alarmDescription:
          `RPO breach: no consistency group of ${g.group} committed in the last ${rpo.periodMinutes * rpo.evaluationPeriods} minutes ` +
          `(alarms.rpoMinutes = ${g.alarms.rpoMinutes}). See docs/operations.md, Alarms.`,
        metric: committed,
        threshold: 1,
        evaluationPeriods: rpo.evaluationPeriods,
        datapointsToAlarm: rpo.evaluationPeriods,
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        // No commit at all is exactly the breach this alarm is for.
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      });
      rpoAlarm.addAlarmAction(action);
      rpoAlarm.addOkAction(action);
      // A run stopped on an ambiguous repository (HEAD missing, deleted or rolled back): nothing was
      // changed, and no run will commit until `cgmirror repair` is run. Page at once.
      const needsRepair = new cloudwatch.Alarm(this, `RepairAlarm-${g.group}`, {
        alarmDescription:
          `The repository of ${g.group} needs repair (RepositoryStateError): runs stop without changing anything. ` +
          "Run `cgmirror repair --group " +
          `${g.group}` +
          "` (docs/operations.md, Repair).",
        metric: new cloudwatch.Metric({
          namespace: METRICS_NAMESPACE,
          metricName: NEEDS_REPAIR_METRIC,
          dimensionsMap: dims,
          statistic: "Sum",
          period: Duration.minutes(5),
        }),
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      needsRepair.addAlarmAction(action);
      dashboard.addWidgets(
        ...groupWidgets(g, machine, dims, { committed, rpoAlarm, needsRepair, runFailed }),
      );
    }

    // ---------------------------------------------------------------- outputs (README, docs/operations.md)
    for (const g of groups) {
      new CfnOutput(this, stateMachineOutputId(g.group), {
        description: `The state machine of group ${g.group}: cgmirror backup --group ${g.group} --state-machine-arn <this> (or CGM_STATE_MACHINE_ARN)`,
        value: machineOf(g).stateMachineArn,
      });
    }
    let bucketIndex = 0;
    for (const [bucketName, bucket] of buckets) {
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

    this.suppressAcceptedFindings(groups);
  }

  /**
   * Least privilege per task (DESIGN.md section 2; docs/operations.md, "Permissions"). S3 access is
   * granted per repository area (`REPOSITORY_AREAS`) as `TASK_S3_ACCESS` says.
   */
  private grantTaskPermissions(groups: readonly GroupConfig[], key: kms.IKey): void {
    const f = this.functions;
    const p = Aws.PARTITION;
    const snapshotArn = `arn:${p}:ec2:${Aws.REGION}::snapshot/*`;
    const groupNames = groups.map((g) => g.group);
    const taggedForGroups = { StringEquals: { [`aws:ResourceTag/${SNAPSHOT_TAGS.group}`]: groupNames } };
    const bucketsOf = [...new Set(groups.map((g) => g.target.bucket))];
    const prefixes = groups.flatMap((g) => [g.target.prefix, `${g.target.prefix}/*`]);
    const areaArns = (areas: readonly RepositoryArea[]) =>
      groups.flatMap((g) =>
        areas.map((a) => `arn:${p}:s3:::${g.target.bucket}/${g.target.prefix}/${areaPattern(a)}`),
      );
    const ec2Arn = (type: string, id: string) => `arn:${p}:ec2:${Aws.REGION}:${Aws.ACCOUNT_ID}:${type}/${id}`;
    const volumes = groups.flatMap((g) => g.volumes);

    const s3List = new iam.PolicyStatement({
      sid: "RepositoryList",
      actions: ["s3:ListBucket", "s3:ListBucketVersions"],
      resources: bucketsOf.map((b) => `arn:${p}:s3:::${b}`),
      conditions: { StringLike: { "s3:prefix": prefixes } },
    });
    const viaS3 = { StringEquals: { "kms:ViaService": `s3.${Aws.REGION}.amazonaws.com` } };
    const s3Statements = (task: TaskName): iam.PolicyStatement[] => {
      const access = TASK_S3_ACCESS[task];
      const out: iam.PolicyStatement[] = [];
      if (access.read.length > 0) {
        out.push(
          new iam.PolicyStatement({
            sid: "RepositoryRead",
            actions: ["s3:GetObject", "s3:GetObjectVersion"],
            resources: areaArns(access.read),
          }),
          s3List,
        );
      }
      if (access.write.length > 0) {
        out.push(
          new iam.PolicyStatement({
            sid: "RepositoryWrite",
            actions: ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
            resources: areaArns(access.write),
          }),
        );
      }
      if (access.deleteMarker.length > 0) {
        out.push(
          new iam.PolicyStatement({
            sid: "RepositoryDeleteScratch",
            actions: ["s3:DeleteObject"],
            resources: areaArns(access.deleteMarker),
          }),
        );
      }
      if (access.deleteVersion.length > 0) {
        out.push(
          new iam.PolicyStatement({
            sid: "RepositoryDeleteVersion",
            actions: ["s3:DeleteObjectVersion"],
            resources: areaArns(access.deleteVersion),
          }),
        );
      }
      const locking = groups.filter((g) => g.target.objectLock !== undefined);
      const lockArns = (areas: readonly RepositoryArea[]) =>
        locking.flatMap((g) =>
          areas.map((a) => `arn:${p}:s3:::${g.target.bucket}/${g.target.prefix}/${areaPattern(a)}`),
        );
      if (locking.length > 0 && task === "Commit") {
        // Commit locks what a committed generation reaches (core/protocol/object-lock.ts); HEAD is never locked.
        out.push(
          new iam.PolicyStatement({
            sid: "RepositoryObjectLock",
            actions: ["s3:PutObjectRetention", "s3:GetObjectRetention"],
            resources: lockArns(OBJECT_LOCK_AREAS),
          }),
        );
      } else if (locking.length > 0 && access.deleteVersion.length > 0) {
        // A refused delete is AccessDenied for a lock and an IAM deny alike: the retention tells them apart.
        out.push(
          new iam.PolicyStatement({
            sid: "RepositoryReadRetention",
            actions: ["s3:GetObjectRetention"],
            resources: lockArns(access.deleteVersion),
          }),
        );
      }
      out.push(
        new iam.PolicyStatement({
          sid: "RepositoryKey",
          actions: access.write.length > 0 ? ["kms:Decrypt", "kms:GenerateDataKey*"] : ["kms:Decrypt"],
          resources: [key.keyArn],
          conditions: viaS3,
        }),
      );
      return out;
    };

    const describeSnapshots = new iam.PolicyStatement({
      sid: "DescribeSnapshots",
      actions: ["ec2:DescribeSnapshots"],
      resources: ["*"],
    });
    // Only snapshots this stack created (its stack tag) of the configured volumes, for these groups:
    // never a snapshot that merely carries a group tag.
    const deleteSnapshots = new iam.PolicyStatement({
      sid: "DeleteOwnGroupSnapshots",
      actions: ["ec2:DeleteSnapshot"],
      resources: [snapshotArn],
      conditions: {
        StringEquals: {
          [`aws:ResourceTag/${SNAPSHOT_TAGS.group}`]: groupNames,
          [`aws:ResourceTag/${SNAPSHOT_TAGS.stack}`]: this.stackName,
        },
        ArnEquals: { "ec2:ParentVolume": volumes.map((v) => ec2Arn("volume", v.id)) },
      },
    });
    const ebsList = new iam.PolicyStatement({
      sid: "EbsDirectList",
      actions: ["ebs:ListChangedBlocks", "ebs:ListSnapshotBlocks"],
      resources: [snapshotArn],
      conditions: taggedForGroups,
    });
    const ebsRead = new iam.PolicyStatement({
      sid: "EbsDirectRead",
      actions: ["ebs:GetSnapshotBlock"],
      resources: [snapshotArn],
      conditions: taggedForGroups,
    });
    // Encrypted volumes: their snapshots can be read only with their KMS key, and only through EBS.
    const volumeKeys = [...new Set(volumes.flatMap((v) => (v.kmsKeyArn ? [v.kmsKeyArn] : [])))].sort();
    const ebsKeys =
      volumeKeys.length > 0
        ? [
            new iam.PolicyStatement({
              sid: "EncryptedVolumeKeys",
              actions: ["kms:Decrypt", "kms:DescribeKey"],
              resources: volumeKeys,
              conditions: { StringEquals: { "kms:ViaService": `ebs.${Aws.REGION}.amazonaws.com` } },
            }),
          ]
        : [];

    const grant = (task: TaskName, statements: iam.PolicyStatement[]) => {
      for (const s of [...s3Statements(task), ...statements]) f[task].addToRolePolicy(s);
    };
    grant("AcquireLock", []);
    grant("Recover", [describeSnapshots, deleteSnapshots]);
    grant("CheckSnapshots", [describeSnapshots]);
    grant("Plan", [describeSnapshots, ebsList, ...ebsKeys]);
    grant("Transfer", [ebsList, ebsRead, ...ebsKeys]);
    grant("Prepare", []);
    grant("Commit", []);
    grant("Revert", [describeSnapshots, deleteSnapshots]);
    grant("ReleaseLock", [describeSnapshots, deleteSnapshots]);

    // Snapshot: create snapshots of exactly the group's volumes / instances, tagged for the group.
    const instances = [...new Set(volumes.flatMap((v) => (v.instanceId ? [v.instanceId] : [])))];
    const requestTagged = {
      StringEquals: {
        [`aws:RequestTag/${SNAPSHOT_TAGS.group}`]: groupNames,
        [`aws:RequestTag/${SNAPSHOT_TAGS.stack}`]: this.stackName,
      },
    };
    const snapshotStatements = [
      describeSnapshots,
      deleteSnapshots,
      new iam.PolicyStatement({
        sid: "DescribeInstances",
        actions: ["ec2:DescribeInstances"],
        resources: ["*"],
      }),
      new iam.PolicyStatement({
        sid: "CreateSnapshotsOfGroupSources",
        actions: ["ec2:CreateSnapshot", "ec2:CreateSnapshots"],
        resources: [
          ...volumes.map((v) => ec2Arn("volume", v.id)),
          ...instances.map((i) => ec2Arn("instance", i)),
        ],
      }),
      new iam.PolicyStatement({
        sid: "CreateGroupTaggedSnapshots",
        actions: ["ec2:CreateSnapshot", "ec2:CreateSnapshots"],
        resources: [snapshotArn],
        conditions: requestTagged,
      }),
      new iam.PolicyStatement({
        sid: "TagSnapshotsOnCreate",
        actions: ["ec2:CreateTags"],
        resources: [snapshotArn],
        conditions: { StringEquals: { "ec2:CreateAction": ["CreateSnapshot", "CreateSnapshots"] } },
      }),
    ];
    if (this.freezeDocuments) {
      const frozen = groups.filter((g) => g.freeze.enabled);
      const freezeInstances = [
        ...new Set(
          frozen.flatMap((g) =>
            g.volumes.flatMap((v) => (v.instanceId && v.mountPoint ? [v.instanceId] : [])),
          ),
        ),
      ];
      const docArn = (d: ssm.CfnDocument) => `arn:${p}:ssm:${Aws.REGION}:${Aws.ACCOUNT_ID}:document/${d.ref}`;
      snapshotStatements.push(
        new iam.PolicyStatement({
          sid: "FreezeWithOwnDocuments",
          actions: ["ssm:SendCommand"],
          resources: [
            docArn(this.freezeDocuments.freeze),
            docArn(this.freezeDocuments.thaw),
            ...freezeInstances.map((i) => ec2Arn("instance", i)),
          ],
        }),
        new iam.PolicyStatement({
          sid: "FreezeCommandStatus",
          actions: ["ssm:GetCommandInvocation", "ssm:CancelCommand"],
          resources: ["*"],
        }),
      );
    }
    grant("Snapshot", snapshotStatements);
  }

  /** Acknowledges, finding by finding, every accepted cdk-nag finding, each with its reason. */
  private suppressAcceptedFindings(groups: readonly GroupConfig[]): void {
    const nag = (id: string) => `AwsSolutions::AwsSolutions-${id}`;
    const logicalId = (c: Construct) =>
      this.resolve(this.getLogicalId(c.node.defaultChild as CfnElement)) as string;
    for (const fn of Object.values(this.functions)) {
      const v = Validations.of(fn);
      v.acknowledge({
        id: nag(
          "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        ),
        reason: REASONS.basicExecution,
      });
      v.acknowledge({ id: nag("IAM5[Resource::*]"), reason: `${REASONS.describeStar} ${REASONS.xray}` });
      v.acknowledge({ id: nag("IAM5[Action::kms:GenerateDataKey*]"), reason: REASONS.kmsStar });
      v.acknowledge({
        id: nag("IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>::snapshot/*]"),
        reason: REASONS.snapshotStar,
      });
      for (const g of groups) {
        for (const area of REPOSITORY_AREAS.filter((a) => a !== "HEAD")) {
          v.acknowledge({
            id: nag(
              `IAM5[Resource::arn:<AWS::Partition>:s3:::${g.target.bucket}/${g.target.prefix}/${areaPattern(area)}]`,
            ),
            reason: REASONS.prefixStar,
          });
        }
      }
    }
    Validations.of(this.scheduleDeadLetters).acknowledge({
      id: "AwsSolutions-SQS3",
      reason: REASONS.deadLetterQueue,
    });
    for (const g of groups) {
      const machine = (this.workflows.get(g.group) as ConsistencyGroupWorkflow).stateMachine;
      const v = Validations.of(machine);
      v.acknowledge({ id: nag("IAM5[Resource::*]"), reason: `${REASONS.logDelivery} ${REASONS.xray}` });
      for (const fn of Object.values(this.functions)) {
        v.acknowledge({
          id: nag(`IAM5[Resource::<${logicalId(fn)}.Arn>:*]`),
          reason: REASONS.lambdaVersions,
        });
      }
      const name = `{"Fn::Select":[6,{"Fn::Split":[":",{"Ref":"${logicalId(machine)}"}]}]}`;
      for (const suffix of [":*", "/TransferShards:*"]) {
        v.acknowledge({
          id: nag(
            `IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:${name}${suffix}]`,
          ),
          reason: REASONS.distributedMap,
        });
      }
      Validations.of(this.functions.AcquireLock).acknowledge({
        id: nag(
          `IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:${stateMachineNameOf(this.stackName, g.group)}:*]`,
        ),
        reason: REASONS.ownExecutions,
      });
    }
  }
}

/**
 * Lifecycle of a repository bucket. Nothing that a committed generation can still name ever expires:
 * index roots (`volumes/`), manifests (`generations/`) and segments (`segments/`) are deleted only
 * by cgmirror itself (revert, prune) by exact version id. What lifecycle may clean:
 * - noncurrent versions of the lock object (one per acquire/release; only the current one matters),
 * - objects under `runs/` (transient per-run plans, shard results and progress, deleted by
 *   ReleaseLock/Revert/Recover; what a crash, a timeout or a stopped housekeeping left is unreachable
 *   from any manifest): current versions expire two days after the longest run can have ended (the
 *   group's run timeout), noncurrent ones a week later,
 * - old noncurrent versions of HEAD (history; each manifest names its generation),
 * - incomplete multipart uploads (a Transfer that died mid-segment),
 * - expired delete markers.
 */
export function repositoryLifecycle(groups: readonly GroupConfig[]): s3.LifecycleRule[] {
  const rules: s3.LifecycleRule[] = [
    { id: "abort-incomplete-multipart", abortIncompleteMultipartUploadAfter: Duration.days(7) },
    { id: "remove-expired-delete-markers", expiredObjectDeleteMarker: true },
  ];
  for (const g of groups) {
    rules.push(
      {
        id: `${g.group}-lock-history`,
        prefix: `${g.target.prefix}/locks/`,
        noncurrentVersionExpiration: Duration.days(1),
      },
      {
        id: `${g.group}-run-scratch`,
        prefix: `${g.target.prefix}/runs/`,
        // A backstop: no run lives longer than its run timeout, so its files are garbage by then.
        expiration: Duration.days(runScratchDays(g)),
        noncurrentVersionExpiration: Duration.days(7),
      },
      {
        id: `${g.group}-head-history`,
        prefix: `${g.target.prefix}/HEAD`,
        noncurrentVersionExpiration: Duration.days(90),
        noncurrentVersionsToRetain: 10,
      },
    );
  }
  return rules;
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

/** Days after which a current object under `runs/` is surely garbage: the run timeout, plus 2 days. */
export function runScratchDays(g: Pick<GroupConfig, "runTimeoutMinutes">): number {
  return Math.ceil(g.runTimeoutMinutes / 1440) + 2;
}

/**
 * Period and count of the RPO alarm: "GroupCommitted summed over every period < 1" for as many
 * consecutive periods as cover alarms.rpoMinutes (CloudWatch periods are at most one day).
 */
export function rpoAlarmShape(g: GroupConfig): { periodMinutes: number; evaluationPeriods: number } {
  const rpo = g.alarms.rpoMinutes;
  if (rpo <= 1440) return { periodMinutes: rpo, evaluationPeriods: 1 };
  const evaluationPeriods = Math.ceil(rpo / 1440);
  return { periodMinutes: Math.ceil(rpo / evaluationPeriods), evaluationPeriods };
}

function cdkTimeZone(name: string): TimeZone | undefined {
  // UTC is the Scheduler's default; TimeZone.of accepts any IANA name.
  return name === "UTC" ? undefined : TimeZone.of(name);
}

/**
 * The dashboard row of one group (docs/operations.md, "Metrics and the dashboard" describes each
 * widget): recovery point age against the RPO target, runs (committed, reverted, failed), bytes
 * changed and stored, run duration and coordination time, EBS throttling, and the group's alarms.
 */
function groupWidgets(
  g: GroupConfig,
  machine: sfn.StateMachine,
  dims: Record<string, string>,
  alarms: {
    committed: cloudwatch.Metric;
    rpoAlarm: cloudwatch.Alarm;
    needsRepair: cloudwatch.Alarm;
    runFailed: cloudwatch.Alarm;
  },
): cloudwatch.IWidget[] {
  const metric = (metricName: string, statistic: string, label: string, period = Duration.hours(1)) =>
    new cloudwatch.Metric({
      namespace: METRICS_NAMESPACE,
      metricName,
      dimensionsMap: dims,
      statistic,
      label,
      period,
    });
  const hour = Duration.hours(1);
  return [
    new cloudwatch.GraphWidget({
      title: `${g.group}: recovery point age (RPO)`,
      left: [
        new cloudwatch.MathExpression({
          expression: "age / 60",
          label: "minutes since the committed point in time (max)",
          usingMetrics: { age: metric(RUN_METRICS.recoveryPointAge, "Maximum", "age") },
          period: hour,
        }),
      ],
      leftYAxis: { min: 0, label: "minutes", showUnits: false },
      leftAnnotations: [{ value: g.alarms.rpoMinutes, label: "RPO target (alarms.rpoMinutes)" }],
      width: 8,
    }),
    new cloudwatch.GraphWidget({
      title: `${g.group}: runs`,
      left: [
        alarms.committed.with({ period: hour, label: "committed" }),
        metric(RUN_METRICS.runReverted, "Sum", "reverted"),
        machine.metricFailed({ statistic: "Sum", period: hour, label: "failed" }),
        machine.metricTimedOut({ statistic: "Sum", period: hour, label: "timed out" }),
        machine.metricAborted({ statistic: "Sum", period: hour, label: "aborted" }),
      ],
      leftYAxis: { min: 0, showUnits: false },
      width: 8,
    }),
    new cloudwatch.GraphWidget({
      title: `${g.group}: bytes changed and stored`,
      left: [
        metric(RUN_METRICS.bytesChanged, "Sum", "changed (logical)"),
        metric(RUN_METRICS.bytesStored, "Sum", "stored in S3"),
      ],
      right: [metric(RUN_METRICS.changedBlocks, "Sum", "changed blocks (plan)")],
      leftYAxis: { min: 0 },
      width: 8,
    }),
    new cloudwatch.GraphWidget({
      title: `${g.group}: run duration and coordination time`,
      left: [metric(RUN_METRICS.runDuration, "Maximum", "run duration (s, committed runs)")],
      right: [metric(RUN_METRICS.coordinationTime, "Maximum", "freeze → thaw (ms)")],
      leftYAxis: { min: 0, showUnits: false },
      rightYAxis: { min: 0, showUnits: false },
      width: 8,
    }),
    new cloudwatch.GraphWidget({
      title: `${g.group}: EBS direct API throttling`,
      left: [metric(RUN_METRICS.ebsThrottled, "Sum", "throttled requests (retried)")],
      leftYAxis: { min: 0, showUnits: false },
      width: 8,
    }),
    new cloudwatch.AlarmStatusWidget({
      title: `${g.group}: alarms`,
      alarms: [alarms.rpoAlarm, alarms.needsRepair, alarms.runFailed],
      width: 8,
    }),
  ];
}
