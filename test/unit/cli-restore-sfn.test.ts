// `cgmirror restore --to-snapshots --state-machine-arn`: the Step Functions calls (StartExecution, then
// following the execution) with aws-sdk-client-mock; Step Functions has no local emulator here.
import {
  DescribeExecutionCommand,
  GetExecutionHistoryCommand,
  SFNClient,
  StartExecutionCommand,
} from "@aws-sdk/client-sfn";
import { mockClient } from "aws-sdk-client-mock";
import { afterEach, describe, expect, it } from "vitest";
import { parseGroupConfig } from "#core/config/group-config.ts";
import { RestoreWorkflowInput } from "#lambdas/contracts.ts";
import {
  awsRestoreToSnapshots,
  newRestoreId,
  RestoreExecutionError,
} from "../../cli/commands/restore-sfn.ts";
import { ExitCode } from "../../cli/errors.ts";

const sfnMock = mockClient(SFNClient);
afterEach(() => sfnMock.reset());

const ARN = "arn:aws:states:eu-west-1:123456789012:stateMachine:RestoreWorkflowStateMachine-abc";
const config = parseGroupConfig({
  group: "orders",
  volumes: [
    { id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0" },
    { id: "vol-0123456789abcdef1", instanceId: "i-0123456789abcdef0" },
  ],
  target: { bucket: "acme-backups", prefix: "groups/orders" },
  schedule: { expression: "rate(1 hour)" },
});
const noWait = { pollMs: 0, sleep: async () => {} };

describe("restore into EBS through the restore state machine (aws-sdk-client-mock)", () => {
  it("GIVEN a restore that succeeds after a running poll THEN it starts one execution named by the restore id with the workflow's input contract, follows it and returns the snapshots", async () => {
    sfnMock.on(StartExecutionCommand).callsFake((i: { name: string }) => ({
      executionArn: `arn:aws:states:eu-west-1:123456789012:execution:RestoreWorkflowStateMachine-abc:${i.name}`,
      startDate: new Date(0),
    }));
    sfnMock.on(GetExecutionHistoryCommand).resolves({ events: [] });
    const output = {
      status: "restored",
      restoreId: "restore-test-1",
      generation: 7,
      pointInTime: "2026-11-30T06:00:00.000Z",
      snapshots: [
        {
          volumeId: "vol-0123456789abcdef0",
          snapshotId: "snap-0aa",
          status: "completed",
          blocksWritten: 12,
          parentSnapshotId: "snap-0bb",
          parentGeneration: 6,
        },
      ],
    };
    sfnMock
      .on(DescribeExecutionCommand)
      .resolvesOnce({ status: "RUNNING" } as never)
      .resolves({ status: "SUCCEEDED", output: JSON.stringify(output) } as never);
    const states: string[] = [];
    const r = await awsRestoreToSnapshots(new SFNClient({ region: "eu-west-1" }), {
      config,
      stateMachineArn: ARN,
      generation: 7,
      volumes: ["vol-0123456789abcdef0"],
      parents: { "vol-0123456789abcdef0": "snap-0bb" },
      autoParent: true,
      restoreId: "restore-test-1",
      follow: { ...noWait, onState: (s) => states.push(s) },
    });
    expect(r).toMatchObject({ restoreId: "restore-test-1", generation: 7, snapshots: output.snapshots });
    expect(r.executionArn).toMatch(/:execution:RestoreWorkflowStateMachine-abc:restore-test-1$/);
    const starts = sfnMock.commandCalls(StartExecutionCommand);
    expect(starts).toHaveLength(1);
    const sent = starts[0]!.args[0].input;
    expect(sent.stateMachineArn).toBe(ARN);
    expect(sent.name).toBe("restore-test-1");
    const input = RestoreWorkflowInput.parse(JSON.parse(sent.input!));
    expect(input).toMatchObject({
      restoreId: "restore-test-1",
      generation: 7,
      volumes: ["vol-0123456789abcdef0"],
      parents: { "vol-0123456789abcdef0": "snap-0bb" },
      autoParent: true,
      config: { group: "orders" },
    });
    expect(sfnMock.commandCalls(DescribeExecutionCommand)).toHaveLength(2);
  });

  it("GIVEN no generation, volumes or parents THEN the input says null for each (HEAD, every volume, none given)", async () => {
    sfnMock
      .on(StartExecutionCommand)
      .resolves({ executionArn: `${ARN.replace("stateMachine", "execution")}:x` });
    sfnMock.on(DescribeExecutionCommand).resolves({
      status: "SUCCEEDED",
      output: JSON.stringify({ restoreId: "r", generation: 1, pointInTime: "t", snapshots: [] }),
    } as never);
    await awsRestoreToSnapshots(new SFNClient({ region: "eu-west-1" }), {
      config,
      stateMachineArn: ARN,
      autoParent: false,
      follow: noWait,
    });
    const sent = sfnMock.commandCalls(StartExecutionCommand)[0]!.args[0].input;
    const input = RestoreWorkflowInput.parse(JSON.parse(sent.input!));
    expect(input).toMatchObject({ generation: null, volumes: null, parents: null, autoParent: false });
    expect(sent.name).toBe(input.restoreId);
    expect(input.restoreId).toMatch(/^restore-\d{8}T\d{6}-[0-9a-f]{8}$/);
  });

  it("GIVEN an execution that fails THEN RestoreExecutionError (exit code failed) carries its error and the cleanup's cause", async () => {
    sfnMock
      .on(StartExecutionCommand)
      .resolves({ executionArn: `${ARN.replace("stateMachine", "execution")}:r` });
    sfnMock.on(DescribeExecutionCommand).resolves({
      status: "FAILED",
      error: "AccessDeniedException",
      cause:
        "restore r failed (AccessDeniedException: no access); deleted the 2 snapshot(s) it had created (snap-1, snap-2)",
    } as never);
    const error = await awsRestoreToSnapshots(new SFNClient({ region: "eu-west-1" }), {
      config,
      stateMachineArn: ARN,
      autoParent: true,
      restoreId: "r",
      follow: noWait,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RestoreExecutionError);
    expect((error as RestoreExecutionError).exitCode).toBe(ExitCode.failed);
    expect((error as Error).message).toMatch(/failed .*AccessDeniedException.*deleted the 2 snapshot/);
  });

  it("GIVEN an execution that times out THEN the error says the cleanup did not run and how to find the snapshots", async () => {
    sfnMock
      .on(StartExecutionCommand)
      .resolves({ executionArn: `${ARN.replace("stateMachine", "execution")}:r2` });
    sfnMock.on(DescribeExecutionCommand).resolves({ status: "TIMED_OUT" } as never);
    const error = await awsRestoreToSnapshots(new SFNClient({ region: "eu-west-1" }), {
      config,
      stateMachineArn: ARN,
      autoParent: true,
      restoreId: "r2",
      follow: noWait,
    }).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/timed out.*cgmirror:restore-id=r2/);
  });

  it("newRestoreId is a valid execution name", () => {
    expect(newRestoreId(new Date("2026-11-30T06:01:02.345Z"))).toMatch(
      /^restore-20261130T060102-[0-9a-f]{8}$/,
    );
  });
});
