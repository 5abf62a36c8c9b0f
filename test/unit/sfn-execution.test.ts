// Step Functions has no local emulator here: these tests use aws-sdk-client-mock.
import { DescribeExecutionCommand, SFNClient, StartExecutionCommand } from "@aws-sdk/client-sfn";
import { mockClient } from "aws-sdk-client-mock";
import { afterEach, describe, expect, it } from "vitest";
import { runExecution } from "../../adapters/sfn-execution.ts";

const sfnMock = mockClient(SFNClient);
afterEach(() => sfnMock.reset());

describe("runExecution (aws-sdk-client-mock)", () => {
  it("GIVEN an execution that runs then succeeds THEN it starts it with the config input and returns its output", async () => {
    sfnMock.on(StartExecutionCommand).resolves({ executionArn: "arn:exec" });
    sfnMock
      .on(DescribeExecutionCommand)
      .resolvesOnce({ status: "RUNNING" })
      .resolvesOnce({ status: "SUCCEEDED", output: JSON.stringify({ status: "committed", generation: 7 }) });
    const polls: string[] = [];
    const out = await runExecution(new SFNClient({ region: "us-east-1" }), {
      stateMachineArn: "arn:sm",
      input: { config: { group: "db" } },
      onPoll: (s) => polls.push(s),
      sleep: async () => {},
    });
    expect(out).toEqual({
      executionArn: "arn:exec",
      status: "SUCCEEDED",
      output: { status: "committed", generation: 7 },
    });
    expect(polls).toEqual(["RUNNING", "SUCCEEDED"]);
    const start = sfnMock.commandCalls(StartExecutionCommand)[0]!.args[0].input;
    expect(start.stateMachineArn).toBe("arn:sm");
    expect(JSON.parse(start.input!)).toEqual({ config: { group: "db" } });
  });

  it("GIVEN a failed execution THEN it returns its error and cause", async () => {
    sfnMock.on(StartExecutionCommand).resolves({ executionArn: "arn:exec" });
    sfnMock
      .on(DescribeExecutionCommand)
      .resolves({ status: "FAILED", error: "TransferFailedError", cause: "shard 3" });
    const out = await runExecution(new SFNClient({ region: "us-east-1" }), {
      stateMachineArn: "arn:sm",
      input: {},
      sleep: async () => {},
    });
    expect(out).toEqual({
      executionArn: "arn:exec",
      status: "FAILED",
      error: "TransferFailedError",
      cause: "shard 3",
    });
  });
});
