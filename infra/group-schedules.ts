/**
 * One EventBridge Scheduler schedule per group that starts the group's state machine with its config,
 * and the dead-letter queue for the invocations the Scheduler could not deliver after its retries.
 */
import { Duration, TimeZone } from "aws-cdk-lib";
import * as scheduler from "aws-cdk-lib/aws-scheduler";
import * as schedulerTargets from "aws-cdk-lib/aws-scheduler-targets";
import * as sqs from "aws-cdk-lib/aws-sqs";
import type * as sfn from "aws-cdk-lib/aws-stepfunctions";
import type { Construct } from "constructs";
import type { GroupConfig } from "#core/config/group-config.ts";
import { StackPart } from "./stack-part.ts";

export interface GroupSchedulesProps {
  readonly groups: readonly GroupConfig[];
  /** The state machine each group's schedule starts. */
  readonly stateMachineOf: (group: string) => sfn.IStateMachine;
  /**
   * Delivery attempts the Scheduler makes before the invocation goes to the dead-letter queue.
   * @default 3
   */
  readonly retryAttempts?: number;
  /**
   * How long the Scheduler keeps trying to deliver one invocation.
   * @default Duration.hours(1)
   */
  readonly maxEventAge?: Duration;
}

export class GroupSchedules extends StackPart {
  /** Receives schedule invocations that EventBridge Scheduler could not deliver. */
  readonly deadLetters: sqs.Queue;
  /** One schedule per group, by group name. */
  readonly schedules: ReadonlyMap<string, scheduler.Schedule>;

  constructor(scope: Construct, id: string, props: GroupSchedulesProps) {
    super(scope, id);
    // SSE-SQS: the Scheduler's role can send without a KMS grant (a customer key would need one).
    this.deadLetters = new sqs.Queue(this, "ScheduleDeadLetters", {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    const schedules = new Map<string, scheduler.Schedule>();
    for (const g of props.groups) {
      schedules.set(
        g.group,
        new scheduler.Schedule(this, `Schedule-${g.group}`, {
          description: `cgmirror: back up consistency group ${g.group}`,
          schedule: scheduler.ScheduleExpression.expression(
            g.schedule.expression,
            cdkTimeZone(g.schedule.timezone),
          ),
          enabled: g.schedule.enabled,
          target: new schedulerTargets.StepFunctionsStartExecution(props.stateMachineOf(g.group), {
            input: scheduler.ScheduleTargetInput.fromObject({ config: g }),
            retryAttempts: props.retryAttempts ?? 3,
            maxEventAge: props.maxEventAge ?? Duration.hours(1),
            deadLetterQueue: this.deadLetters,
          }),
        }),
      );
    }
    this.schedules = schedules;
  }
}

function cdkTimeZone(name: string): TimeZone | undefined {
  // UTC is the Scheduler's default; TimeZone.of accepts any IANA name.
  return name === "UTC" ? undefined : TimeZone.of(name);
}
