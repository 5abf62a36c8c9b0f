/** How `cgmirror backup` reports a finished execution of the deployed state machine (no network). */
import { describe, expect, it } from "vitest";
import { BACKUP_EXIT_CODES, outcomeOfExecution, regionOfStateMachineArn } from "../../cli/commands/backup.ts";
import { UsageError } from "../../cli/output.ts";

describe("outcomeOfExecution", () => {
  it("GIVEN SUCCEEDED THEN committed (with the generation) or skipped", () => {
    expect(
      outcomeOfExecution({ status: "SUCCEEDED", output: { status: "committed", generation: 7 } }),
    ).toEqual({
      outcome: "committed",
      generation: 7,
    });
    expect(outcomeOfExecution({ status: "SUCCEEDED", output: { status: "skipped" } })).toEqual({
      outcome: "skipped",
    });
  });

  it("GIVEN TIMED_OUT or ABORTED THEN it says so instead of claiming a revert", () => {
    expect(outcomeOfExecution({ status: "TIMED_OUT" }).outcome).toBe("timedOut");
    expect(outcomeOfExecution({ status: "ABORTED" }).outcome).toBe("aborted");
  });

  it("GIVEN a failed lock release after the commit THEN releaseFailed with the committed generation", () => {
    expect(
      outcomeOfExecution({
        status: "FAILED",
        error: "ReleaseLockFailedError",
        cause: "generation 12 of group orders IS committed; only releasing the lock failed ...",
      }),
    ).toEqual({ outcome: "releaseFailed", generation: 12 });
  });

  it("GIVEN any other failure THEN reverted, and a failed revert as revertFailed", () => {
    expect(outcomeOfExecution({ status: "FAILED", error: "TransferFailedError" }).outcome).toBe("reverted");
    expect(outcomeOfExecution({ status: "FAILED", error: "RevertFailedError" }).outcome).toBe("revertFailed");
  });

  it("GIVEN an error no Catch handles (a Step Functions limit) THEN failed, not reverted", () => {
    for (const error of ["States.DataLimitExceeded", "States.Runtime"]) {
      expect(outcomeOfExecution({ status: "FAILED", error }).outcome, error).toBe("failed");
    }
  });

  it("GIVEN each outcome THEN its own exit code: 0 success, 1 run failed, 3 release failed, 4 timed out, 5 aborted (2 is usage)", () => {
    expect(BACKUP_EXIT_CODES).toEqual({
      committed: 0,
      skipped: 0,
      reverted: 1,
      revertFailed: 1,
      releaseFailed: 3,
      failed: 1,
      timedOut: 4,
      aborted: 5,
    });
  });
});

describe("regionOfStateMachineArn", () => {
  it("GIVEN a state machine ARN THEN its Region", () => {
    expect(regionOfStateMachineArn("arn:aws:states:eu-west-1:123456789012:stateMachine:Workflow-1a")).toBe(
      "eu-west-1",
    );
    expect(regionOfStateMachineArn("arn:aws-us-gov:states:us-gov-west-1:123456789012:stateMachine:cg")).toBe(
      "us-gov-west-1",
    );
  });

  it("fails with a usage error naming what it got for something that is not a state machine ARN", () => {
    expect(() => regionOfStateMachineArn("my-machine")).toThrow(UsageError);
    expect(() => regionOfStateMachineArn("arn:aws:states:eu-west-1:123456789012:execution:cg:run-1")).toThrow(
      /expected a state machine ARN .*got "arn:aws:states:eu-west-1:123456789012:execution:cg:run-1"/,
    );
  });
});
