/**
 * One Lambda function per backup task (workflows/tasks.ts), shared by every group of the deployment,
 * each with its own log group and the least privilege of infra/task-permissions.ts.
 */
import { Stack } from "aws-cdk-lib";
import type * as kms from "aws-cdk-lib/aws-kms";
import * as nodejs from "aws-cdk-lib/aws-lambda-nodejs";
import type { Construct } from "constructs";
import type { GroupConfig } from "#core/config/group-config.ts";
import { TASK_NAMES, TASKS, type TaskName } from "#workflows/tasks.ts";
import type { FreezeDocuments } from "./freeze-documents.ts";
import { cgmirrorFunctionProps, functionLogGroup } from "./function-props.ts";
import { StackPart } from "./stack-part.ts";
import { grantTaskPermissions } from "./task-permissions.ts";

/** Tasks that create, find or delete snapshots (they need the stack tag). */
const SNAPSHOT_TASKS: ReadonlySet<TaskName> = new Set([
  "Recover",
  "Snapshot",
  "CheckSnapshots",
  "Revert",
  "ReleaseLock",
]);

export interface TaskFunctionsProps {
  /** The groups whose repositories, volumes and instances the functions may touch. */
  readonly groups: readonly GroupConfig[];
  /** The repository buckets' key. */
  readonly repositoryKey: kms.IKey;
  /**
   * The freeze/thaw documents the Snapshot task runs (groups with `freeze.enabled`).
   * @default no freeze
   */
  readonly freezeDocuments?: FreezeDocuments;
}

export class TaskFunctions extends StackPart {
  /** The function of each task, by task name. */
  readonly functions: Readonly<Record<TaskName, nodejs.NodejsFunction>>;

  constructor(scope: Construct, id: string, props: TaskFunctionsProps) {
    super(scope, id);
    const stackName = Stack.of(this).stackName;
    const freeze = props.freezeDocuments;
    const functions = {} as Record<TaskName, nodejs.NodejsFunction>;
    for (const task of TASK_NAMES) {
      const logGroup = functionLogGroup(this, `${task}Logs`);
      functions[task] = new nodejs.NodejsFunction(
        this,
        `${task}Function`,
        cgmirrorFunctionProps({
          description: `cgmirror task ${task}`,
          spec: TASKS[task],
          logGroup,
          environment: {
            // glibc returns big block buffers to the OS at once: bounds the transfer worker's RSS
            // (docs/transfer.md, "Memory").
            ...(task === "Transfer" ? { MALLOC_MMAP_THRESHOLD_: "131072" } : {}),
            // Snapshots are tagged with the stack: IAM lets it delete only its own (docs/operations.md).
            ...(SNAPSHOT_TASKS.has(task) ? { CGM_STACK_NAME: stackName } : {}),
            ...(task === "Snapshot" && freeze
              ? { CGM_FREEZE_DOCUMENT: freeze.freeze.ref, CGM_THAW_DOCUMENT: freeze.thaw.ref }
              : {}),
          },
        }),
      );
    }
    this.functions = functions;
    grantTaskPermissions(functions, {
      groups: props.groups,
      repositoryKey: props.repositoryKey,
      stackName,
      freezeDocuments: freeze,
    });
  }
}
