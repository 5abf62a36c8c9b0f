/**
 * The synthesized state machine (the stack's template, exactly as deployed) run by two independent
 * interpreters with the same task results: LocalStack's Step Functions, its Lambda tasks mocked through
 * SFN_MOCK_CONFIG, and the local runner's aws-local-stepfunctions, its tasks bound to in-process
 * handlers returning the same results. For each workflow path both must end in the same state with the
 * same status and error, along the same path — except where LocalStack is known to differ (its
 * distributed Map ignores failed items; docs/localstack.md), which the test pins down exactly.
 *
 * Runs only in the LocalStack lane: `npm run test:localstack` starts LocalStack and sets
 * CGM_LOCALSTACK_ENDPOINT and CGM_SFN_MOCK_CONFIG.
 */
import { utimesSync, writeFileSync } from "node:fs";
import {
  CreateStateMachineCommand,
  DescribeExecutionCommand,
  type HistoryEvent,
  paginateGetExecutionHistory,
  SFNClient,
  StartExecutionCommand,
} from "@aws-sdk/client-sfn";
import { App } from "aws-cdk-lib";
import { ExecutionError, StateMachine } from "aws-local-stepfunctions";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GroupConfig, parseGroupConfig } from "#core/config/group-config.ts";
import { CgmirrorStack } from "#infra/stack.ts";
import { type CfnTemplate, definitionTextFromTemplate } from "#workflows/definition.ts";
import { Errors } from "#workflows/errors.ts";
import { TASK_NAMES, TASKS } from "#workflows/tasks.ts";

type Json = Parameters<StateMachine["run"]>[0];
type Result = { return: unknown } | { throw: { Error: string; Cause: string } };

const endpoint = process.env.CGM_LOCALSTACK_ENDPOINT;
const mockConfigPath = process.env.CGM_SFN_MOCK_CONFIG;
const MACHINE = "cgmirror-parity";

const config = parseGroupConfig({
  group: "orders",
  volumes: [
    { id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0" },
    { id: "vol-0123456789abcdef1", instanceId: "i-0123456789abcdef1" },
  ],
  target: { bucket: "my-backups" },
  schedule: { expression: "rate(1 hour)" },
  transfer: { maxConcurrency: 2 },
});
const collectAll: GroupConfig = { ...config, prepare: { policy: "collectAll" } };

const ok = (value: unknown): Result => ({ return: value });
const fail = (name: string, cause: string): Result => ({ throw: { Error: name, Cause: cause } });

/** What every task answers on the happy path (the shapes of lambdas/contracts.ts). */
const HAPPY: Record<string, Result> = {
  AcquireLock: ok({ acquired: true, fencing: 7, expiresAt: "2026-01-01T12:00:00.000Z", takenOverFrom: null }),
  Recover: ok({
    action: "none",
    revertedVersions: 0,
    deletedSnapshots: 0,
    headGeneration: 4,
    nextGeneration: 5,
  }),
  Snapshot: ok({
    snapshots: config.volumes.map((v, i) => ({ volumeId: v.id, snapshotId: `snap-000000000000000${i}` })),
    startedAt: "2026-01-01T00:00:00.000Z",
    coordinationMs: 42,
    frozen: false,
    reused: false,
    adopted: false,
    waitingSince: "2026-01-01T00:00:01.000Z",
  }),
  CheckSnapshots: ok({ allCompleted: true, completed: 2, pending: 0, waitSeconds: 1 }),
  Plan: ok({
    done: true,
    planKey: "groups/orders/runs/r/plan.json",
    shardCount: 2,
    changedBlocks: 200,
    maxConcurrency: 2,
    shardRate: 100,
    shards: config.volumes.map((v) => ({ volumeId: v.id, shard: 0 })),
  }),
  // Entered only after a Plan that answered done: false (not on these paths); the mock config needs
  // a result for every Task state all the same.
  ResumePlan: ok({
    done: true,
    planKey: "groups/orders/runs/r/plan.json",
    shardCount: 2,
    changedBlocks: 200,
    maxConcurrency: 2,
    shardRate: 100,
    shards: config.volumes.map((v) => ({ volumeId: v.id, shard: 0 })),
  }),
  TransferShard: ok({
    ok: true,
    done: true,
    checkpoint: null,
    blocks: 100,
    blocksDone: 100,
    storedBytes: 1024,
  }),
  PrepareVolume: ok({
    ok: true,
    volumeId: "vol-0123456789abcdef0",
    indexVersionId: "v1",
    sizeBytes: 1,
    reused: false,
  }),
  PrepareVolumeCollect: ok({
    ok: true,
    volumeId: "vol-0123456789abcdef0",
    indexVersionId: "v1",
    sizeBytes: 1,
    reused: false,
  }),
  Commit: ok({ generation: 5, committedAt: "2026-01-01T00:05:00.000Z", alreadyCommitted: false }),
  ReleaseLock: ok({ released: true, prunedSnapshots: 0, cleanedObjects: 0 }),
  Revert: ok({
    alreadyCommitted: false,
    needsRepair: false,
    revertedVersions: 1,
    deletedObjects: 3,
    deletedSnapshots: 2,
    keptSnapshots: 0,
  }),
  ReleaseLockAfterRevert: ok({ released: true, prunedSnapshots: 0, cleanedObjects: 0 }),
};

interface PathCase {
  readonly config: GroupConfig;
  readonly overrides: Record<string, Result>;
  readonly status: "SUCCEEDED" | "FAILED";
  readonly finalState: string;
  readonly error?: string;
}

/** One case per workflow path (STYLE.md: happy, catch -> revert, the policies, the failure paths). */
const PATHS: Record<string, PathCase> = {
  commit: { config, overrides: {}, status: "SUCCEEDED", finalState: "Committed" },
  skipped: {
    config,
    overrides: { AcquireLock: ok({ acquired: false, heldBy: "run-0", expiresAt: "2026-01-01T01:00:00Z" }) },
    status: "SUCCEEDED",
    finalState: "Skipped",
  },
  transferFailure: {
    config,
    overrides: {
      TransferShard: fail(Errors.TransferFailed, "segment upload rejected: AccessDenied"),
      // What the real Prepare answers when a shard left no summary: the project's own defence,
      // test/unit/lambda-pipeline.test.ts proves it with the real handlers.
      PrepareVolume: fail(
        Errors.PrepareFailed,
        "shard 0 of vol-0123456789abcdef0 was not transferred by run r",
      ),
    },
    status: "FAILED",
    finalState: "RunFailed",
    error: Errors.TransferFailed,
  },
  prepareFailureCollectAll: {
    config: collectAll,
    overrides: { PrepareVolumeCollect: fail(Errors.CommitConflict, "index write refused") },
    status: "FAILED",
    finalState: "RunFailed",
    error: Errors.PrepareFailed,
  },
  revertFailure: {
    config,
    overrides: {
      Snapshot: fail(Errors.FreezeFailed, "fsfreeze: /data: Operation not supported"),
      Revert: fail(Errors.LockLost, "the lock was taken over"),
    },
    status: "FAILED",
    finalState: "RevertFailed",
    error: Errors.RevertFailed,
  },
  releaseFailure: {
    config,
    overrides: { ReleaseLock: fail(Errors.LockLost, "the lock object is gone") },
    status: "FAILED",
    finalState: "ReleaseLockFailed",
    error: Errors.ReleaseLockFailed,
  },
};

const TASK_STATES = TASK_NAMES.flatMap((t) => TASKS[t].states);

function resultOf(path: PathCase, state: string): Result {
  const r = path.overrides[state] ?? HAPPY[state];
  if (!r) throw new Error(`no result for Task state ${state}`);
  return r;
}

interface Run {
  readonly status: string;
  readonly error?: string | undefined;
  readonly cause?: string | undefined;
  /** Top-level states entered, in order. */
  readonly path: string[];
}

let definitionText: string;
let topLevel: Set<string>;
let sfn: SFNClient;
let machineArn: string;

beforeAll(async () => {
  if (!endpoint || !mockConfigPath) {
    throw new Error(
      "CGM_LOCALSTACK_ENDPOINT / CGM_SFN_MOCK_CONFIG are not set: run this suite with npm run test:localstack",
    );
  }
  const app = new App({ context: { "aws:cdk:bundling-stacks": [] } });
  const stack = new CgmirrorStack(app, "Parity", { groups: [config] });
  const template = app.synth().getStackByName(stack.stackName).template as CfnTemplate;
  definitionText = definitionTextFromTemplate(template);
  topLevel = new Set(Object.keys((JSON.parse(definitionText) as { States: object }).States));

  // One mock test case per path: every Task state answers what the path says, on every attempt.
  const testCases: Record<string, Record<string, string>> = {};
  const responses: Record<string, unknown> = {};
  for (const [name, path] of Object.entries(PATHS)) {
    testCases[name] = {};
    for (const state of TASK_STATES) {
      const r = resultOf(path, state);
      const id = `${name}.${state}`;
      testCases[name][state] = id;
      responses[id] = {
        "0-99": "return" in r ? { Return: { StatusCode: 200, Payload: r.return } } : { Throw: r.throw },
      };
    }
  }
  writeFileSync(
    mockConfigPath,
    JSON.stringify({ StateMachines: { [MACHINE]: { TestCases: testCases } }, MockedResponses: responses }),
  );
  // LocalStack caches the file by its whole-second mtime: make sure this version is seen as new.
  const later = Date.now() / 1000 + 5;
  utimesSync(mockConfigPath, later, later);

  sfn = new SFNClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  });
  const created = await sfn.send(
    new CreateStateMachineCommand({
      name: MACHINE,
      definition: definitionText,
      roleArn: "arn:aws:iam::000000000000:role/cgmirror-parity",
    }),
  );
  machineArn = created.stateMachineArn as string;
});

afterAll(() => {
  sfn?.destroy();
});

async function runInLocalStack(name: string, path: PathCase): Promise<Run> {
  const started = await sfn.send(
    new StartExecutionCommand({
      stateMachineArn: `${machineArn}#${name}`,
      name: `run-${name}`,
      input: JSON.stringify({ config: path.config }),
    }),
  );
  const executionArn = started.executionArn as string;
  let d = await sfn.send(new DescribeExecutionCommand({ executionArn }));
  for (let i = 0; i < 600 && d.status === "RUNNING"; i++) {
    await new Promise((r) => setTimeout(r, 200));
    d = await sfn.send(new DescribeExecutionCommand({ executionArn }));
  }
  const events: HistoryEvent[] = [];
  for await (const page of paginateGetExecutionHistory({ client: sfn }, { executionArn, maxResults: 1000 })) {
    events.push(...(page.events ?? []));
  }
  return {
    status: d.status ?? "UNKNOWN",
    error: d.error,
    cause: d.cause,
    path: events.flatMap((e) => {
      const state = e.stateEnteredEventDetails?.name;
      return state !== undefined && topLevel.has(state) ? [state] : [];
    }),
  };
}

async function runLocally(name: string, path: PathCase): Promise<Run> {
  const handlers: Record<string, (input: Json) => Promise<Json>> = {};
  for (const state of TASK_STATES) {
    const r = resultOf(path, state);
    handlers[state] = async () => {
      if ("throw" in r) throw Object.assign(new Error(r.throw.Cause), { name: r.throw.Error });
      return r.return as Json;
    };
  }
  const input = { config: path.config } as unknown as Json;
  const execution = new StateMachine(JSON.parse(definitionText) as never).run(input, {
    overrides: {
      taskResourceLocalHandlers: handlers,
      waitTimeOverrides: { WaitForSnapshots: 0 },
      retryIntervalOverrides: Object.fromEntries(TASK_STATES.map((s) => [s, 0])),
    },
    context: {
      Execution: { Name: `run-${name}`, Input: input, StartTime: "2026-01-01T00:00:00.000Z" },
      StateMachine: {
        Id: "arn:aws:states:us-east-1:000000000000:stateMachine:cgmirror-orders",
        Name: "cgmirror-orders",
      },
    },
  });
  const entered: string[] = [];
  const watcher = (async () => {
    for await (const ev of execution.eventLogs) {
      const e = ev as { type?: string; state?: { name?: string } };
      if (e.type === "StateEntered" && e.state?.name && topLevel.has(e.state.name))
        entered.push(e.state.name);
    }
  })();
  try {
    await execution.result;
    await watcher;
    return { status: "SUCCEEDED", path: entered };
  } catch (err) {
    await watcher.catch(() => {});
    if (!(err instanceof ExecutionError)) throw err;
    const cause = err.cause as { name?: string; message?: string };
    return { status: "FAILED", error: cause.name, cause: cause.message, path: entered };
  }
}

describe("the synthesized definition in LocalStack (mocked tasks) and in the local interpreter", () => {
  it("GIVEN the definition text THEN LocalStack's parser accepted it as synthesized (0.0 threshold)", () => {
    expect(definitionText).toContain('"ToleratedFailurePercentage":0.0');
    expect(machineArn).toMatch(/:stateMachine:cgmirror-parity$/);
  });

  for (const [name, path] of Object.entries(PATHS)) {
    if (name === "transferFailure") continue;
    it(`GIVEN the ${name} path THEN both interpreters end in ${path.finalState} along the same path`, async () => {
      const [remote, local] = [await runInLocalStack(name, path), await runLocally(name, path)];
      for (const run of [remote, local]) {
        expect(run.status).toBe(path.status);
        expect(run.path.at(-1)).toBe(path.finalState);
        if (path.error) expect(run.error).toBe(path.error);
      }
      expect(remote.path).toEqual(local.path);
      expect(remote.cause).toEqual(local.cause);
    });
  }

  it("GIVEN a failed transfer shard THEN both end in RunFailed after Revert; LocalStack's distributed Map lets the run reach Prepare, whose missing-shard defence fails it", async () => {
    const path = PATHS.transferFailure as PathCase;
    const [remote, local] = [
      await runInLocalStack("transferFailure", path),
      await runLocally("transferFailure", path),
    ];
    // The local interpreter (like AWS) fails the Map on the first failed item.
    expect(local).toMatchObject({ status: "FAILED", error: Errors.TransferFailed });
    expect(local.path.slice(-4)).toEqual(["TransferShards", "Revert", "ReleaseLockAfterRevert", "RunFailed"]);
    // LocalStack ignores the Map's failure threshold: the run goes on to Prepare, which refuses.
    expect(remote).toMatchObject({ status: "FAILED", error: Errors.PrepareFailed });
    const at = local.path.indexOf("Revert");
    expect(remote.path).toEqual([
      ...local.path.slice(0, at),
      "PreparePolicy?",
      "PrepareVolumes",
      ...local.path.slice(at),
    ]);
  });
});
