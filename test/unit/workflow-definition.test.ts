import aslValidator from "asl-validator";
import { beforeAll, describe, expect, it } from "vitest";
import { type AslDefinition, localDefinition, localDefinitionText } from "#workflows/definition.ts";
import { Errors } from "#workflows/errors.ts";
import { findLocalIncompatibilities } from "#workflows/local-compat.ts";
import { TASKS } from "#workflows/tasks.ts";

type State = Record<string, unknown>;
let definition: AslDefinition;

beforeAll(() => {
  definition = localDefinition();
});

/** Every state, including those inside Map item processors, by name. */
function allStates(states: Record<string, State>, out: Record<string, State> = {}): Record<string, State> {
  for (const [name, state] of Object.entries(states)) {
    out[name] = state;
    const processor = state.ItemProcessor as { States?: Record<string, State> } | undefined;
    if (processor?.States) allStates(processor.States, out);
  }
  return out;
}

describe("the synthesized consistency-group definition", () => {
  it("GIVEN the definition WHEN checked by asl-validator THEN it is valid", () => {
    const { isValid, errorsText } = aslValidator(structuredClone(definition));
    expect(errorsText("\n")).toBe("");
    expect(isValid).toBe(true);
  });

  it("GIVEN the definition WHEN scanned THEN it has none of the constructs the local interpreter cannot run", () => {
    expect(findLocalIncompatibilities(definition)).toEqual([]);
  });

  it("GIVEN the transfer Map THEN it is distributed, inline-fed, all-must-succeed and discards results", () => {
    const map = definition.States.TransferShards as State;
    expect(map.Type).toBe("Map");
    expect(map.ItemsPath).toBe("$.plan.shards");
    expect(map).not.toHaveProperty("ItemReader");
    expect(map.ToleratedFailurePercentage).toBe(0);
    expect(map).not.toHaveProperty("ToleratedFailureCount");
    expect(map.MaxConcurrencyPath).toBe("$.plan.maxConcurrency");
    expect((map.ItemSelector as Record<string, unknown>)["rate.$"]).toBe("$.plan.shardRate");
    expect(map.ResultPath).toBeNull();
    expect((map.ItemProcessor as { ProcessorConfig: unknown }).ProcessorConfig).toEqual({
      Mode: "DISTRIBUTED",
      ExecutionType: "STANDARD",
    });
    expect(map.Catch).toEqual([{ ErrorEquals: ["States.ALL"], ResultPath: "$.error", Next: "Revert" }]);
  });

  it("GIVEN a Map item THEN it invokes Transfer until the shard is done, handing each invocation the previous one's checkpoint", () => {
    const map = definition.States.TransferShards as State;
    const states = (map.ItemProcessor as { StartAt: string; States: Record<string, State> }).States;
    expect((map.ItemProcessor as { StartAt: string }).StartAt).toBe("TransferShard");
    const task = states.TransferShard!;
    expect(task.ResultPath).toBe("$.transfer");
    expect(task.ResultSelector).toEqual({ "done.$": "$.done", "checkpoint.$": "$.checkpoint" });
    expect(task.Next).toBe("ShardDone?");
    expect(states["ShardDone?"]).toMatchObject({
      Type: "Choice",
      Choices: [{ Variable: "$.transfer.done", BooleanEquals: true, Next: "ShardTransferred" }],
      Default: "TransferShard",
    });
    expect(states.ShardTransferred).toMatchObject({ Type: "Succeed", OutputPath: "$.transfer.done" });
    // Lambda.Unknown (a function timeout) is not retried: invocations stop before their deadline.
    for (const r of task.Retry as { ErrorEquals: string[] }[])
      expect(r.ErrorEquals).not.toContain("Lambda.Unknown");
  });

  it("GIVEN the definition text THEN the failure threshold is written 0.0, which both AWS (a float field) and LocalStack's parser accept", () => {
    const text = localDefinitionText();
    expect(text).toContain('"ToleratedFailurePercentage":0.0');
    expect(text).not.toMatch(/"ToleratedFailurePercentage":0[,}]/);
  });

  it("GIVEN a failed lock release after the commit THEN the run fails as ReleaseLockFailedError, saying the group is committed", () => {
    expect((definition.States.ReleaseLock as State).Catch).toEqual([
      { ErrorEquals: ["States.ALL"], ResultPath: "$.releaseError", Next: "ReleaseFailureAsError" },
    ]);
    const pass = definition.States.ReleaseFailureAsError as State;
    expect(pass.Parameters).toMatchObject({ Error: Errors.ReleaseLockFailed });
    expect(String((pass.Parameters as Record<string, unknown>)["Cause.$"])).toContain("IS committed");
    expect(definition.States.ReleaseLockFailed).toMatchObject({
      Type: "Fail",
      ErrorPath: "$.releaseFailure.Error",
      CausePath: "$.releaseFailure.Cause",
    });
  });

  it("GIVEN every state after AcquireLock that can fail THEN it is caught into Revert without losing its input", () => {
    const guarded = [
      "Recover",
      "Snapshot",
      "CheckSnapshots",
      "Plan",
      "ResumePlan",
      "TransferShards",
      "PrepareVolumes",
    ];
    for (const name of [...guarded, "PrepareAllVolumes", "Commit"]) {
      const state = definition.States[name] as State;
      expect(state.Catch, name).toEqual([
        { ErrorEquals: ["States.ALL"], ResultPath: "$.error", Next: "Revert" },
      ]);
    }
    expect(definition.States.AcquireLock).not.toHaveProperty("Catch");
  });

  it("GIVEN Plan THEN PlanDone? loops ResumePlan with the cursor (a pointer, not the plan) until done, then the Transfer Map", () => {
    expect((definition.States.Plan as State).Next).toBe("PlanDone?");
    expect((definition.States.ResumePlan as State).Next).toBe("PlanDone?");
    expect(definition.States["PlanDone?"]).toMatchObject({
      Type: "Choice",
      Choices: [{ Variable: "$.plan.done", BooleanEquals: true, Next: "TransferShards" }],
      Default: "ResumePlan",
    });
    // payloadResponseOnly: the Parameters are the Lambda payload.
    const payload = (definition.States.ResumePlan as State & { Parameters: Record<string, unknown> })
      .Parameters;
    expect(payload["resume.$"]).toBe("$.plan.cursor");
    expect((definition.States.ResumePlan as State & { ResultPath: string }).ResultPath).toBe("$.plan");
  });

  it("GIVEN the failure path THEN Revert -> ReleaseLockAfterRevert -> RunFailed carries the original error", () => {
    expect((definition.States.Revert as State).Next).toBe("ReleaseLockAfterRevert");
    expect((definition.States.ReleaseLockAfterRevert as State).Next).toBe("RunFailed");
    expect(definition.States.RunFailed).toMatchObject({
      Type: "Fail",
      ErrorPath: "$.error.Error",
      CausePath: "$.error.Cause",
    });
    // Catches on the failure path must not overwrite $.error.
    expect((definition.States.ReleaseLockAfterRevert as State).Catch).toEqual([
      { ErrorEquals: ["States.ALL"], ResultPath: "$.releaseError", Next: "RunFailed" },
    ]);
    expect((definition.States.Revert as State).Catch).toEqual([
      { ErrorEquals: ["States.ALL"], ResultPath: "$.revertError", Next: "RevertFailed" },
    ]);
  });

  it("GIVEN every Lambda task state THEN it retries throttling and transient errors from the error contract", () => {
    const states = allStates(definition.States);
    const taskStates = Object.values(TASKS).flatMap((t) => t.states);
    for (const name of taskStates) {
      const retry = (states[name] as State).Retry as { ErrorEquals: string[]; MaxAttempts: number }[];
      const retried = retry.flatMap((r) => r.ErrorEquals);
      expect(retried, name).toEqual(expect.arrayContaining([Errors.Throttled, Errors.Transient]));
      expect((states[name] as State).TimeoutSeconds, name).toBeGreaterThan(60);
    }
  });

  it("GIVEN the collectAll Map THEN every item catches its error and returns ok false for the Choice to decide", () => {
    const map = definition.States.PrepareAllVolumes as State;
    const inner = (map.ItemProcessor as { States: Record<string, State> }).States;
    expect(inner.PrepareVolumeCollect?.Catch).toEqual([
      { ErrorEquals: ["States.ALL"], ResultPath: "$.error", Next: "PrepareVolumeFailed" },
    ]);
    expect((inner.PrepareVolumeFailed as State).Parameters).toMatchObject({ ok: false });
    expect(map.ResultSelector).toEqual({ "results.$": "$", "oks.$": "$[*].ok" });
    expect((definition.States["AllPrepared?"] as State).Choices).toEqual([
      { Variable: "$.prepareDecision.anyFailed", BooleanEquals: false, Next: "Commit" },
    ]);
    // The failure keeps per volume only its id, error and (bounded) cause, in a state rebuilt
    // without the prepare results.
    expect((definition.States["AllPrepared?"] as State).Default).toBe("CollectPrepareFailures");
    expect((definition.States.CollectPrepareFailures as State).Parameters).toEqual({
      "config.$": "$.config",
      "lock.$": "$.lock",
      failed: {
        "volumes.$": "$.prepare.results[?(@.ok == false)].volumeId",
        "errors.$": "$.prepare.results[?(@.ok == false)].error",
        "details.$": "$.prepare.results[?(@.ok == false)]",
      },
    });
    expect((definition.States.PrepareFailuresAsError as State).Parameters).toMatchObject({
      error: { Error: Errors.PrepareFailed, "volumes.$": "$.failed.details" },
    });
    expect((definition.States.PrepareFailuresAsError as State).ResultPath).toBeUndefined();
  });

  it("GIVEN a held lock THEN the run ends in a Succeed state marked skipped", () => {
    expect((definition.States["LockAcquired?"] as State).Default).toBe("MarkSkipped");
    expect((definition.States.MarkSkipped as State).Parameters).toMatchObject({ status: "skipped" });
    expect((definition.States.Skipped as State).Type).toBe("Succeed");
  });

  it("GIVEN the snapshot poll loop THEN it waits and re-checks until every snapshot completed", () => {
    expect((definition.States.WaitForSnapshots as State).Next).toBe("CheckSnapshots");
    expect(definition.States["SnapshotsCompleted?"]).toMatchObject({
      Choices: [{ Variable: "$.check.allCompleted", BooleanEquals: true, Next: "Plan" }],
      Default: "WaitForSnapshots",
    });
  });
});

describe("findLocalIncompatibilities", () => {
  const base = (state: State) => ({ StartAt: "S", States: { S: state } });

  it("fails a definition that uses JSONata", () => {
    expect(
      findLocalIncompatibilities({ ...base({ Type: "Succeed" }), QueryLanguage: "JSONata" }),
    ).toHaveLength(1);
  });

  it('fails a ResultPath of "$"', () => {
    expect(
      findLocalIncompatibilities(base({ Type: "Pass", ResultPath: "$", End: true }))[0]?.problem,
    ).toContain("ResultPath");
  });

  it("fails an ItemReader inside a nested Map", () => {
    const inner = { StartAt: "I", States: { I: { Type: "Map", ItemReader: {}, End: true } } };
    const findings = findLocalIncompatibilities(base({ Type: "Map", ItemProcessor: inner, End: true }));
    expect(findings).toEqual([{ where: "S > I", problem: expect.stringContaining("ItemReader") }]);
  });

  it("fails a Choice rule testing IsPresent: false, even under Not/And", () => {
    const findings = findLocalIncompatibilities(
      base({ Type: "Choice", Choices: [{ And: [{ Variable: "$.a", IsPresent: false }], Next: "S" }] }),
    );
    expect(findings[0]?.problem).toContain("IsPresent: false");
  });

  it("fails a Pass state with a falsy Result, Assign, and a Task without a timeout", () => {
    expect(findLocalIncompatibilities(base({ Type: "Pass", Result: 0, End: true }))).toHaveLength(1);
    expect(findLocalIncompatibilities(base({ Type: "Pass", Assign: { a: 1 }, End: true }))).toHaveLength(1);
    expect(findLocalIncompatibilities(base({ Type: "Task", Resource: "arn", End: true }))).toHaveLength(1);
  });
});
