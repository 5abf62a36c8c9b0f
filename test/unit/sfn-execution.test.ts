// Step Functions has no local emulator here: these tests use aws-sdk-client-mock (the adapter's
// DescribeExecution calls and their answers are mocked; the ARNs and mapping are the adapter's own).
import { DescribeExecutionCommand, SFNClient, StartExecutionCommand } from "@aws-sdk/client-sfn";
import { mockClient } from "aws-sdk-client-mock";
import { afterEach, describe, expect, it } from "vitest";
import { executionArnOf, runExecution, SfnRunStatus } from "../../adapters/sfn-execution.ts";

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

const MACHINE = "arn:aws:states:eu-west-1:123456789012:stateMachine:CgmirrorOrders";

describe("SfnRunStatus: is the lock holder's execution running? (aws-sdk-client-mock)", () => {
  const status = () =>
    new SfnRunStatus({ client: new SFNClient({ region: "eu-west-1" }), stateMachineArn: MACHINE });

  it("GIVEN a run id THEN it describes the execution of that name of the group's state machine", async () => {
    sfnMock.on(DescribeExecutionCommand).resolves({ status: "RUNNING" });
    expect(await status().runState("orders-20260101T000000-ab12cd34")).toBe("running");
    expect(sfnMock.commandCalls(DescribeExecutionCommand)[0]!.args[0].input.executionArn).toBe(
      "arn:aws:states:eu-west-1:123456789012:execution:CgmirrorOrders:orders-20260101T000000-ab12cd34",
    );
  });

  it("GIVEN an execution that succeeded, failed, timed out or was aborted THEN the holder has ended", async () => {
    for (const s of ["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"] as const) {
      sfnMock.reset();
      sfnMock.on(DescribeExecutionCommand).resolves({ status: s });
      expect(await status().runState("run-1"), s).toBe("ended");
    }
  });

  it("GIVEN an execution about to be redriven THEN it counts as running", async () => {
    sfnMock.on(DescribeExecutionCommand).resolves({ status: "PENDING_REDRIVE" });
    expect(await status().runState("run-1")).toBe("running");
  });

  it("GIVEN no such execution, no access or a throttled call THEN the state is unknown, and says why", async () => {
    const why: string[] = [];
    const port = new SfnRunStatus({
      client: new SFNClient({ region: "eu-west-1" }),
      stateMachineArn: MACHINE,
      onUnknown: (_runId, reason) => why.push(reason),
    });
    for (const name of ["ExecutionDoesNotExist", "AccessDeniedException", "ThrottlingException"]) {
      sfnMock.reset();
      sfnMock.on(DescribeExecutionCommand).rejects(Object.assign(new Error(`${name} happened`), { name }));
      expect(await port.runState("run-1"), name).toBe("unknown");
    }
    expect(why).toEqual([
      "ExecutionDoesNotExist: ExecutionDoesNotExist happened",
      "AccessDeniedException: AccessDeniedException happened",
      "ThrottlingException: ThrottlingException happened",
    ]);
  });

  it("GIVEN a run id that cannot be an execution name (the CLI's repair: run ids may hold ':') THEN unknown without a call", async () => {
    expect(await status().runState("repair:2026-01-01T00:00:00Z")).toBe("unknown");
    expect(sfnMock.commandCalls(DescribeExecutionCommand)).toHaveLength(0);
  });

  it("GIVEN a version- or alias-qualified state machine ARN THEN the execution ARN names the state machine", () => {
    expect(executionArnOf(`${MACHINE}:prod`, "run-1")).toBe(
      "arn:aws:states:eu-west-1:123456789012:execution:CgmirrorOrders:run-1",
    );
    expect(executionArnOf("arn:aws:lambda:eu-west-1:123456789012:function:x", "run-1")).toBeUndefined();
  });
});
