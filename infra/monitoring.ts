/**
 * Alarms and the dashboard: an encrypted SNS topic every alarm notifies, per group a failed-run, an
 * RPO and a needs-repair alarm, an alarm on undelivered schedule invocations, and one dashboard with
 * a row per group (docs/operations.md, "Alarms" and "Metrics and the dashboard").
 */
import { Duration, RemovalPolicy, Stack } from "aws-cdk-lib";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as cwActions from "aws-cdk-lib/aws-cloudwatch-actions";
import * as iam from "aws-cdk-lib/aws-iam";
import * as kms from "aws-cdk-lib/aws-kms";
import type * as lambda from "aws-cdk-lib/aws-lambda";
import * as sns from "aws-cdk-lib/aws-sns";
import type * as sqs from "aws-cdk-lib/aws-sqs";
import type * as sfn from "aws-cdk-lib/aws-stepfunctions";
import type { Construct } from "constructs";
import type { GroupConfig } from "#core/config/group-config.ts";
import { COMMITTED_METRIC } from "#lambdas/commit.ts";
import { RUN_METRICS } from "#lambdas/metric-names.ts";
import { NEEDS_REPAIR_METRIC } from "#lambdas/recover.ts";
import { METRICS_NAMESPACE, SERVICE_NAME } from "./function-props.ts";
import { StackPart } from "./stack-part.ts";

export interface MonitoringProps {
  readonly groups: readonly GroupConfig[];
  /** The state machine of each group. */
  readonly stateMachineOf: (group: string) => sfn.StateMachine;
  /** The Transfer task's function (its duration, errors and throttles are on the dashboard). */
  readonly transferFunction: lambda.IFunction;
  /** The schedules' dead-letter queue: any message in it raises an alarm. */
  readonly scheduleDeadLetters: sqs.IQueue;
  /**
   * E-mail address subscribed to the alarm topic.
   * @default no subscription
   */
  readonly alarmEmail?: string;
}

export class Monitoring extends StackPart {
  /** Every alarm of the deployment notifies this topic (SSE-KMS with its own key). */
  readonly alarmTopic: sns.Topic;
  /** The action that notifies the topic, for alarms defined elsewhere (maintenance). */
  readonly alarmAction: cloudwatch.IAlarmAction;
  /** `<stack name>-cgmirror`: all groups, then one row per group. */
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
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
    this.alarmAction = new cwActions.SnsAction(this.alarmTopic);
    const undelivered = new cloudwatch.Alarm(this, "ScheduleDeadLetterAlarm", {
      alarmDescription:
        "EventBridge Scheduler could not start a cgmirror run (the invocation is in the dead-letter queue). See docs/operations.md, Alarms.",
      metric: props.scheduleDeadLetters.metricApproximateNumberOfMessagesVisible({
        statistic: "Maximum",
        period: Duration.minutes(5),
      }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    undelivered.addAlarmAction(this.alarmAction);

    this.dashboard = new cloudwatch.Dashboard(this, "Dashboard", {
      dashboardName: `${Stack.of(this).stackName}-cgmirror`,
    });
    const transfer = props.transferFunction;
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: "Runs (all groups)",
        left: props.groups.flatMap((g) => {
          const machine = props.stateMachineOf(g.group);
          return [
            machine.metricStarted({ statistic: "Sum", label: `${g.group} started` }),
            machine.metricSucceeded({ statistic: "Sum", label: `${g.group} succeeded` }),
            machine.metricFailed({ statistic: "Sum", label: `${g.group} failed` }),
          ];
        }),
        width: 12,
      }),
      new cloudwatch.GraphWidget({
        title: "Transfer task duration and errors",
        left: [transfer.metricDuration({ statistic: "p90" })],
        right: [transfer.metricErrors({ statistic: "Sum" }), transfer.metricThrottles()],
        width: 12,
      }),
    );
    for (const g of props.groups) this.addGroup(g, props.stateMachineOf(g.group));
  }

  /** The group's alarms and its dashboard row. */
  private addGroup(g: GroupConfig, machine: sfn.StateMachine): void {
    const action = this.alarmAction;
    const dashboard = this.dashboard;
    const dims = { service: SERVICE_NAME, Group: g.group };
    const runFailed = failedExecutionsAlarm(this, `RunFailedAlarm-${g.group}`, machine, {
      description:
        `A cgmirror run of ${g.group} failed, timed out or was aborted (a failed run reverted; the previous consistency group is intact). ` +
        "See docs/operations.md, Alarms.",
      label: `Failed, timed out or aborted runs of ${g.group}`,
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
    dashboard.addWidgets(...groupWidgets(g, machine, dims, { committed, rpoAlarm, needsRepair, runFailed }));
  }
}

/**
 * An alarm on a state machine's failed, timed-out and aborted executions: any one in 5 minutes (no
 * executions is no failure).
 */
export function failedExecutionsAlarm(
  scope: Construct,
  id: string,
  machine: sfn.IStateMachine,
  text: { readonly description: string; readonly label: string },
): cloudwatch.Alarm {
  return new cloudwatch.Alarm(scope, id, {
    alarmDescription: text.description,
    metric: new cloudwatch.MathExpression({
      label: text.label,
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
