/**
 * Step Functions executions: start a backup execution of the deployed state machine and follow it to
 * its end (`cgmirror backup` in AWS), and tell whether the run holding a group's lock is still running
 * (AcquireLock, core/ports/run-status.ts).
 */
import { DescribeExecutionCommand, type SFNClient, StartExecutionCommand } from "@aws-sdk/client-sfn";
import type { RunState, RunStatusPort } from "#core/ports/run-status.ts";
import { executionArnOf } from "./sfn-arns.ts";

export { executionArnOf } from "./sfn-arns.ts";

/** Execution statuses by what they mean for the lock holder. PENDING_REDRIVE is about to run again. */
const RUN_STATES: Readonly<Record<string, RunState>> = {
  RUNNING: "running",
  PENDING_REDRIVE: "running",
  SUCCEEDED: "ended",
  FAILED: "ended",
  TIMED_OUT: "ended",
  ABORTED: "ended",
};

/**
 * Run status from DescribeExecution of the execution named after the run id, on one state machine
 * (the group's). Needs `states:DescribeExecution` on its executions. Anything it cannot tell (no access,
 * no such execution, a run id that cannot be an execution name, a throttled or failed call) is
 * `unknown`, reported through `onUnknown`.
 */
export class SfnRunStatus implements RunStatusPort {
  readonly #client: SFNClient;
  readonly #stateMachineArn: string;
  readonly #onUnknown: ((runId: string, why: string) => void) | undefined;

  constructor(props: {
    client: SFNClient;
    stateMachineArn: string;
    onUnknown?: (runId: string, why: string) => void;
  }) {
    this.#client = props.client;
    this.#stateMachineArn = props.stateMachineArn;
    this.#onUnknown = props.onUnknown;
  }

  async runState(runId: string): Promise<RunState> {
    const executionArn = executionArnOf(this.#stateMachineArn, runId);
    if (!executionArn) {
      this.#onUnknown?.(runId, `not an execution of ${this.#stateMachineArn}`);
      return "unknown";
    }
    try {
      const d = await this.#client.send(new DescribeExecutionCommand({ executionArn }));
      const state = RUN_STATES[d.status ?? ""] ?? "unknown";
      if (state === "unknown") this.#onUnknown?.(runId, `status ${d.status ?? "(none)"}`);
      return state;
    } catch (error) {
      const e = error as { name?: string; message?: string };
      this.#onUnknown?.(runId, `${e.name ?? "Error"}: ${e.message ?? String(error)}`);
      return "unknown";
    }
  }
}

export interface ExecutionOutcome {
  readonly executionArn: string;
  readonly status: "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "ABORTED";
  readonly output?: unknown;
  readonly error?: string;
  readonly cause?: string;
}

export async function runExecution(
  sfn: SFNClient,
  options: {
    stateMachineArn: string;
    input: unknown;
    name?: string;
    pollMs?: number;
    onPoll?: (status: string) => void;
    sleep?: (ms: number) => Promise<void>;
  },
): Promise<ExecutionOutcome> {
  const started = await sfn.send(
    new StartExecutionCommand({
      stateMachineArn: options.stateMachineArn,
      input: JSON.stringify(options.input),
      ...(options.name ? { name: options.name } : {}),
    }),
  );
  const executionArn = started.executionArn!;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  for (;;) {
    const d = await sfn.send(new DescribeExecutionCommand({ executionArn }));
    options.onPoll?.(d.status ?? "UNKNOWN");
    if (d.status && d.status !== "RUNNING" && d.status !== "PENDING_REDRIVE") {
      return {
        executionArn,
        status: d.status as ExecutionOutcome["status"],
        ...(d.output ? { output: JSON.parse(d.output) as unknown } : {}),
        ...(d.error ? { error: d.error } : {}),
        ...(d.cause ? { cause: d.cause } : {}),
      };
    }
    await sleep(options.pollMs ?? 5000);
  }
}
