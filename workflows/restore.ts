/**
 * The restore workflow: a generation into one new EBS snapshot per volume (docs/operations.md,
 * "Restore into EBS snapshots"), all or nothing. Every Task state invokes the RestoreVolume function
 * (lambdas/restore-volume.ts), its step chosen by `op`.
 *
 *   PrepareRestore -> RestoreVolumes (Map over volumes:
 *                        RestoreVolume -> VolumeDone? -(done)-> VolumeRestored
 *                                                     -(else)-> ContinueVolume -> RestoreVolume)
 *                  -> FinalizeRestore -> Restored
 *   any failure -> CleanupRestore (deletes every snapshot tagged with the restore id) -> RestoreFailed
 *                  (the error of the failure, the cause says what was deleted)
 *   cleanup fails -> CleanupFailed (snapshots may be left: the cause names the restore id's tag)
 *
 * Input: {config, restoreId, generation|null, volumes|null, parents|null, autoParent} (lambdas/contracts.ts,
 * RestoreWorkflowInput). JSONPath only, none of the constructs the local interpreter cannot run.
 */
import { Duration } from "aws-cdk-lib";
import type * as lambda from "aws-cdk-lib/aws-lambda";
import * as sfn from "aws-cdk-lib/aws-stepfunctions";
import * as tasks from "aws-cdk-lib/aws-stepfunctions-tasks";
import { Construct } from "constructs";
import { Errors } from "./errors.ts";
import { LIFECYCLE_TASKS } from "./lifecycle-tasks.ts";
import { TASK_TIMEOUT_MARGIN_SECONDS } from "./tasks.ts";

export interface RestoreWorkflowProps {
  /** The RestoreVolume function (lambdas/restore-volume.ts). */
  readonly restoreFunction: lambda.IFunction;
  /**
   * Volumes restored at once (each writes at up to the per-snapshot PutSnapshotBlock quota).
   * @default 4
   */
  readonly maxConcurrency?: number;
  /**
   * Maximum duration of one execution.
   * @default Duration.hours(24)
   */
  readonly timeout?: Duration;
  readonly stateMachineName?: string;
  readonly logs?: sfn.LogOptions;
  /** @default false */
  readonly tracingEnabled?: boolean;
}

export class RestoreWorkflow extends Construct {
  readonly stateMachine: sfn.StateMachine;

  constructor(scope: Construct, id: string, props: RestoreWorkflowProps) {
    super(scope, id);
    const fn = props.restoreFunction;
    const taskTimeout = sfn.Timeout.duration(
      Duration.seconds(LIFECYCLE_TASKS.RestoreVolume.timeoutSeconds + TASK_TIMEOUT_MARGIN_SECONDS),
    );
    const invoke = (name: string, payload: Record<string, unknown>, resultPath: string) => {
      const t = new tasks.LambdaInvoke(this, name, {
        lambdaFunction: fn,
        payloadResponseOnly: true,
        payload: sfn.TaskInput.fromObject(payload),
        resultPath,
        taskTimeout,
        retryOnServiceExceptions: true,
      });
      t.addRetry({
        errors: [Errors.Throttled, "Lambda.TooManyRequestsException"],
        interval: Duration.seconds(5),
        maxAttempts: 10,
        backoffRate: 2,
        maxDelay: Duration.minutes(2),
        jitterStrategy: sfn.JitterType.FULL,
      });
      t.addRetry({
        errors: [Errors.Transient, sfn.Errors.TIMEOUT],
        interval: Duration.seconds(5),
        maxAttempts: 4,
        backoffRate: 2,
        jitterStrategy: sfn.JitterType.FULL,
      });
      return t;
    };
    const common = {
      config: sfn.JsonPath.objectAt("$.config"),
      restoreId: sfn.JsonPath.stringAt("$.restoreId"),
    };

    const prepare = invoke(
      "PrepareRestore",
      {
        op: "prepare",
        ...common,
        generation: sfn.JsonPath.objectAt("$.generation"),
        volumes: sfn.JsonPath.objectAt("$.volumes"),
        parents: sfn.JsonPath.objectAt("$.parents"),
        autoParent: sfn.JsonPath.objectAt("$.autoParent"),
      },
      "$.prepared",
    );

    // One Map item per volume: the volume step, again and again from its cursor until it is done.
    const step = invoke(
      "RestoreVolume",
      {
        op: "volume",
        ...common,
        generation: sfn.JsonPath.numberAt("$.generation"),
        volumeId: sfn.JsonPath.stringAt("$.volumeId"),
        parent: sfn.JsonPath.objectAt("$.parent"),
        resume: sfn.JsonPath.objectAt("$.resume"),
      },
      "$.step",
    );
    const again = new sfn.Pass(this, "ContinueVolume", {
      comment: "The task returned its cursor before its deadline: the next invocation continues from it.",
      parameters: {
        ...common,
        generation: sfn.JsonPath.numberAt("$.generation"),
        volumeId: sfn.JsonPath.stringAt("$.volumeId"),
        parent: sfn.JsonPath.objectAt("$.parent"),
        resume: sfn.JsonPath.objectAt("$.step.state"),
      },
    });
    const restored = new sfn.Pass(this, "VolumeRestored", { outputPath: "$.step" });
    step.next(
      new sfn.Choice(this, "VolumeDone?")
        .when(sfn.Condition.booleanEquals("$.step.done", true), restored)
        .otherwise(again),
    );
    again.next(step);
    const map = new sfn.Map(this, "RestoreVolumes", {
      itemsPath: "$.prepared.items",
      maxConcurrency: props.maxConcurrency ?? 4,
      itemSelector: {
        ...common,
        generation: sfn.JsonPath.numberAt("$.prepared.generation"),
        volumeId: sfn.JsonPath.stringAt("$$.Map.Item.Value.volumeId"),
        parent: sfn.JsonPath.objectAt("$$.Map.Item.Value.parent"),
        // Always null here (a JSON null in ItemSelector is dropped by CDK, so it comes with the item).
        resume: sfn.JsonPath.objectAt("$$.Map.Item.Value.resume"),
      },
      resultPath: "$.volumes",
    });
    map.itemProcessor(step);

    const finalize = invoke(
      "FinalizeRestore",
      {
        op: "finalize",
        ...common,
        generation: sfn.JsonPath.numberAt("$.prepared.generation"),
        volumes: sfn.JsonPath.objectAt("$.volumes"),
      },
      "$.result",
    );
    const done = new sfn.Pass(this, "MarkRestored", {
      parameters: {
        status: "restored",
        restoreId: sfn.JsonPath.stringAt("$.restoreId"),
        generation: sfn.JsonPath.numberAt("$.prepared.generation"),
        pointInTime: sfn.JsonPath.stringAt("$.prepared.pointInTime"),
        snapshots: sfn.JsonPath.objectAt("$.result.snapshots"),
      },
    }).next(new sfn.Succeed(this, "Restored"));

    const cleanup = invoke(
      "CleanupRestore",
      { op: "cleanup", ...common, error: sfn.JsonPath.objectAt("$.error") },
      "$.cleanup",
    );
    const failed = new sfn.Fail(this, "RestoreFailed", {
      comment: "The restore failed; every snapshot it had created was deleted (the cause says which).",
      errorPath: "$.error.Error",
      causePath: "$.cleanup.message",
    });
    const cleanupFailed = new sfn.Fail(this, "CleanupFailed", {
      comment:
        "The restore failed and deleting its snapshots failed too: delete the snapshots tagged cgmirror:restore-id=<execution name>.",
      errorPath: "$.error.Error",
      causePath: "$.cleanupError.Cause",
    });
    cleanup.addCatch(cleanupFailed, { errors: [sfn.Errors.ALL], resultPath: "$.cleanupError" });
    cleanup.next(failed);
    for (const s of [prepare, map, finalize])
      s.addCatch(cleanup, { errors: [sfn.Errors.ALL], resultPath: "$.error" });

    prepare.next(map);
    map.next(finalize);
    finalize.next(done);
    this.stateMachine = new sfn.StateMachine(this, "StateMachine", {
      definitionBody: sfn.DefinitionBody.fromChainable(prepare),
      timeout: props.timeout ?? Duration.hours(24),
      ...(props.stateMachineName ? { stateMachineName: props.stateMachineName } : {}),
      ...(props.logs ? { logs: props.logs } : {}),
      tracingEnabled: props.tracingEnabled ?? false,
    });
  }
}
