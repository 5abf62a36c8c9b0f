/** Starts a backup execution of the deployed state machine and follows it to its end (cgmirror backup in AWS). */
import { DescribeExecutionCommand, type SFNClient, StartExecutionCommand } from "@aws-sdk/client-sfn";

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
