/**
 * Follows one Step Functions execution to its end: the states it enters (from GetExecutionHistory,
 * each event once) and its final status (DescribeExecution). Used by `cgmirror backup` and
 * `cgmirror watch` in AWS.
 */
import {
  DescribeExecutionCommand,
  GetExecutionHistoryCommand,
  ListExecutionsCommand,
  type SFNClient,
} from "@aws-sdk/client-sfn";
import type { ExecutionOutcome } from "./sfn-execution.ts";

export interface FollowOptions {
  readonly pollMs?: number;
  readonly sleep?: (ms: number) => Promise<void>;
  /** Called once per state entered, in order. */
  readonly onState?: (state: string) => void;
  /** Called after every poll (e.g. to refresh a progress line). */
  readonly onPoll?: (status: string) => Promise<void> | void;
}

export interface ExecutionInfo {
  readonly executionArn: string;
  readonly name: string;
  readonly status: string;
  readonly startDate?: Date;
  readonly input?: unknown;
}

export async function describeExecution(sfn: SFNClient, executionArn: string): Promise<ExecutionInfo> {
  const d = await sfn.send(new DescribeExecutionCommand({ executionArn }));
  return {
    executionArn,
    name: d.name ?? executionArn.split(":").at(-1) ?? executionArn,
    status: d.status ?? "UNKNOWN",
    ...(d.startDate ? { startDate: d.startDate } : {}),
    ...(d.input ? { input: JSON.parse(d.input) as unknown } : {}),
  };
}

/** The newest RUNNING execution of a state machine, or undefined. */
export async function newestRunningExecution(
  sfn: SFNClient,
  stateMachineArn: string,
): Promise<string | undefined> {
  const out = await sfn.send(
    new ListExecutionsCommand({ stateMachineArn, statusFilter: "RUNNING", maxResults: 20 }),
  );
  const sorted = [...(out.executions ?? [])].sort(
    (a, b) => (b.startDate?.getTime() ?? 0) - (a.startDate?.getTime() ?? 0),
  );
  return sorted[0]?.executionArn;
}

export async function followExecution(
  sfn: SFNClient,
  executionArn: string,
  options: FollowOptions = {},
): Promise<ExecutionOutcome> {
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let lastEventId = 0;
  for (;;) {
    if (options.onState) {
      // Newest first, only until the events already seen: a poll reads the new events, not the whole
      // history again (a long run has thousands).
      const fresh: { id: number; name: string }[] = [];
      let nextToken: string | undefined;
      let caughtUp = false;
      do {
        const page = await sfn.send(
          new GetExecutionHistoryCommand({
            executionArn,
            maxResults: 200,
            reverseOrder: true,
            ...(nextToken ? { nextToken } : {}),
          }),
        );
        for (const e of page.events ?? []) {
          const id = e.id ?? 0;
          if (id <= lastEventId) {
            caughtUp = true;
            break;
          }
          const name = e.stateEnteredEventDetails?.name;
          if (name && e.type?.endsWith("StateEntered")) fresh.push({ id, name });
          else fresh.push({ id, name: "" });
        }
        nextToken = caughtUp ? undefined : page.nextToken;
      } while (nextToken);
      fresh.sort((a, b) => a.id - b.id);
      for (const e of fresh) {
        lastEventId = Math.max(lastEventId, e.id);
        if (e.name) options.onState(e.name);
      }
    }
    const d = await sfn.send(new DescribeExecutionCommand({ executionArn }));
    await options.onPoll?.(d.status ?? "UNKNOWN");
    if (d.status && d.status !== "RUNNING" && d.status !== "PENDING_REDRIVE") {
      return {
        executionArn,
        status: d.status as ExecutionOutcome["status"],
        ...(d.output ? { output: JSON.parse(d.output) as unknown } : {}),
        ...(d.error ? { error: d.error } : {}),
        ...(d.cause ? { cause: d.cause } : {}),
      };
    }
    await sleep(options.pollMs ?? 3000);
  }
}
