// Step Functions has no local emulator here: these tests use aws-sdk-client-mock (what `cgmirror watch`
// and `cgmirror backup` call in AWS).
import {
  DescribeExecutionCommand,
  GetExecutionHistoryCommand,
  type HistoryEvent,
  ListExecutionsCommand,
  SFNClient,
} from "@aws-sdk/client-sfn";
import { mockClient } from "aws-sdk-client-mock";
import { afterEach, describe, expect, it } from "vitest";
import { describeExecution, followExecution, newestRunningExecution } from "../../adapters/sfn-follow.ts";

const sfnMock = mockClient(SFNClient);
afterEach(() => sfnMock.reset());

const entered = (id: number, name: string): HistoryEvent => ({
  id,
  type: "TaskStateEntered",
  timestamp: new Date(0),
  stateEnteredEventDetails: { name },
});
const other = (id: number): HistoryEvent => ({ id, type: "TaskScheduled", timestamp: new Date(0) });

describe("following an execution in AWS (aws-sdk-client-mock)", () => {
  it("GIVEN an execution that moves through states across polls THEN each state is reported once, in order, reading only new history", async () => {
    // The history grows between polls; it is read newest first, page by page, until an event seen before.
    const history: HistoryEvent[][] = [
      [entered(2, "AcquireLock"), other(3)],
      [entered(2, "AcquireLock"), other(3), entered(4, "Recover"), other(5), entered(6, "Snapshot")],
      [
        entered(2, "AcquireLock"),
        other(3),
        entered(4, "Recover"),
        other(5),
        entered(6, "Snapshot"),
        entered(7, "Commit"),
      ],
    ];
    let poll = 0;
    sfnMock
      .on(GetExecutionHistoryCommand)
      .callsFake((input: { reverseOrder?: boolean; nextToken?: string }) => {
        const events = [...history[Math.min(poll, history.length - 1)]!];
        if (input.reverseOrder) events.reverse();
        // Two events per page, to exercise paging.
        const start = input.nextToken ? Number(input.nextToken) : 0;
        const page = events.slice(start, start + 2);
        return { events: page, ...(start + 2 < events.length ? { nextToken: String(start + 2) } : {}) };
      });
    sfnMock.on(DescribeExecutionCommand).callsFake(() => {
      poll++;
      return poll < 3
        ? { status: "RUNNING" }
        : { status: "SUCCEEDED", output: JSON.stringify({ status: "committed", generation: 4 }) };
    });
    const states: string[] = [];
    const out = await followExecution(new SFNClient({ region: "eu-west-1" }), "arn:exec", {
      onState: (s) => states.push(s),
      sleep: async () => {},
    });
    expect(states).toEqual(["AcquireLock", "Recover", "Snapshot", "Commit"]);
    expect(out).toEqual({
      executionArn: "arn:exec",
      status: "SUCCEEDED",
      output: { status: "committed", generation: 4 },
    });
    const calls = sfnMock.commandCalls(GetExecutionHistoryCommand);
    expect(calls.every((c) => c.args[0].input.reverseOrder === true)).toBe(true);
    // Poll 3 reads one page: the first page reaches an event seen before, and it stops there.
    expect(calls.length).toBeLessThanOrEqual(2 + 3 + 1);
  });

  it("GIVEN running executions THEN the newest is followed, and its input names the group", async () => {
    sfnMock.on(ListExecutionsCommand).resolves({
      executions: [
        {
          executionArn: "arn:old",
          stateMachineArn: "arn:sm",
          name: "old",
          status: "RUNNING",
          startDate: new Date(1000),
        },
        {
          executionArn: "arn:new",
          stateMachineArn: "arn:sm",
          name: "new",
          status: "RUNNING",
          startDate: new Date(2000),
        },
      ],
    });
    expect(await newestRunningExecution(new SFNClient({ region: "eu-west-1" }), "arn:sm")).toBe("arn:new");
    expect(sfnMock.commandCalls(ListExecutionsCommand)[0]!.args[0].input).toMatchObject({
      stateMachineArn: "arn:sm",
      statusFilter: "RUNNING",
    });
    sfnMock.on(DescribeExecutionCommand).resolves({
      name: "new",
      status: "RUNNING",
      input: JSON.stringify({ config: { group: "db" } }),
    });
    expect(await describeExecution(new SFNClient({ region: "eu-west-1" }), "arn:new")).toMatchObject({
      name: "new",
      status: "RUNNING",
      input: { config: { group: "db" } },
    });
  });

  it("GIVEN a timed-out execution THEN its status, error and cause are returned as they are", async () => {
    sfnMock.on(GetExecutionHistoryCommand).resolves({ events: [] });
    sfnMock
      .on(DescribeExecutionCommand)
      .resolves({ status: "TIMED_OUT", error: "States.Timeout", cause: "late" });
    const out = await followExecution(new SFNClient({ region: "eu-west-1" }), "arn:exec", {
      onState: () => {},
      sleep: async () => {},
    });
    expect(out).toEqual({
      executionArn: "arn:exec",
      status: "TIMED_OUT",
      error: "States.Timeout",
      cause: "late",
    });
  });
});
