/**
 * The REAL task handlers (lambdas/*.ts) bound in-process to the synthesized definition, run by
 * aws-local-stepfunctions over in-memory deps (memory object store, in-memory snapshots, a fake
 * EBS block source). Proves the handlers, the payload contract and the definition fit together:
 * commit, an incremental second generation, and a failed run that reverts to the previous group.
 */
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ExecutionError, StateMachine } from "aws-local-stepfunctions";
import { beforeAll, describe, expect, it } from "vitest";
import { parseGroupConfig } from "#core/config/group-config.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { readCommittedManifest, readHead } from "#core/format/generation.ts";
import { createRepo } from "#core/format/layout.ts";
import { restoreVolume } from "#core/restore/restore.ts";
import { HANDLER_MAKERS } from "#lambdas/makers.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import { type AslDefinition, localDefinition } from "#workflows/definition.ts";
import { TASK_NAMES, TASKS, type TaskName } from "#workflows/tasks.ts";
import { memoryDeps } from "./lambda-fixtures.ts";
import { FakeBlockSource } from "./transfer-fixtures.ts";

type Json = Parameters<StateMachine["run"]>[0];

let definition: AslDefinition;
beforeAll(() => {
  definition = localDefinition();
});

const config = parseGroupConfig({
  group: "orders",
  volumes: [
    { id: "vol-0123456789abcdef0", instanceId: "i-0123456789abcdef0", mountPoint: "/data" },
    { id: "vol-0123456789abcdef1", instanceId: "i-0123456789abcdef1", mountPoint: "/log" },
  ],
  target: { bucket: "my-backups" },
  schedule: { expression: "rate(1 hour)" },
  freeze: { enabled: true },
  transfer: { shardBlocks: 64 },
  // Two generations' snapshots per volume (the default, 1, keeps only the next run's base).
  snapshots: { keep: 2 },
});

function bind(
  deps: TaskDeps,
  wrap: (task: TaskName, fn: (e: unknown) => Promise<unknown>) => typeof fn = (_t, f) => f,
) {
  const handlers: Record<string, (input: Json) => Promise<Json>> = {};
  for (const task of TASK_NAMES) {
    const fn = wrap(
      task,
      HANDLER_MAKERS[task](() => deps),
    );
    for (const state of TASKS[task].states) handlers[state] = async (input) => (await fn(input)) as Json;
  }
  return handlers;
}

async function run(name: string, handlers: Record<string, (input: Json) => Promise<Json>>, cfg = config) {
  const input = { config: cfg } as unknown as Json;
  return new StateMachine(definition as never).run(input, {
    overrides: {
      taskResourceLocalHandlers: handlers,
      waitTimeOverrides: { WaitForSnapshots: 0 },
      retryIntervalOverrides: Object.fromEntries(
        Object.values(TASKS)
          .flatMap((t) => t.states)
          .map((s) => [s, 0]),
      ),
    },
    context: {
      Execution: { Name: name, Input: input, StartTime: new Date().toISOString() },
      StateMachine: {
        Id: "arn:aws:states:us-east-1:000000000000:stateMachine:cgmirror-orders",
        Name: "cgmirror-orders",
      },
    },
  }).result;
}

describe("real handlers in the local interpreter (in-memory deps)", () => {
  it("GIVEN a new group WHEN two runs succeed THEN generations 1 and 2 are committed; a failed third run reverts to 2", async () => {
    // 200 blocks per volume, 150 of them written: 3 shards of 64 blocks per volume.
    const source = new FakeBlockSource({ volumeBlocks: 200, has: (i) => i % 4 !== 3 });
    const deps = memoryDeps(source);
    const repo = createRepo({ store: deps.store("my-backups"), prefix: "groups/orders", group: "orders" });

    const first = await run("run-1", bind(deps));
    expect(first).toMatchObject({ status: "committed", generation: 1, group: "orders" });
    expect(deps.freezePort.log).toEqual([
      "freeze i-0123456789abcdef0,i-0123456789abcdef1",
      "thaw i-0123456789abcdef0,i-0123456789abcdef1",
    ]);
    const m1 = await readCommittedManifest(repo);
    expect(m1?.volumes.map((v) => v.volumeId)).toEqual(config.volumes.map((v) => v.id));
    expect(deps.recordedMetrics.filter((m) => m.name === "GroupCommitted")).toHaveLength(1);

    const stored: number[] = [];
    const recording = bind(deps, (task, fn) =>
      task === "Transfer"
        ? async (event) => {
            const out = (await fn(event)) as { storedBytes: number };
            stored.push(out.storedBytes);
            return out;
          }
        : fn,
    );
    const second = await run("run-2", recording);
    expect(second).toMatchObject({ status: "committed", generation: 2 });
    // The fake source lists the same blocks again: group-wide dedup stores none of them twice.
    expect(stored).toHaveLength(6);
    expect(stored.reduce((a, b) => a + b, 0)).toBe(0);
    // The first generation's snapshots are the second's bases; keep = 2 keeps both.
    expect(deps.snapshotPort.snaps.size).toBe(4);

    // Third run: every Transfer fails with a non-retryable error → Revert → RunFailed; HEAD stays at 2.
    const failing = bind(deps, (task, fn) =>
      task === "Transfer"
        ? async () => {
            throw Object.assign(new Error("AccessDenied on GetSnapshotBlock"), { name: "SourceAccessError" });
          }
        : fn,
    );
    const error = await run("run-3", failing).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ExecutionError);
    expect(((error as ExecutionError).cause as Error).name).toBe("SourceAccessError");
    const head = await readHead(repo);
    expect(head?.head).toMatchObject({ generation: 2, commit: { runId: "run-2" } });
    // The failed run's snapshots were deleted by Revert; the lock was released.
    expect([...deps.snapshotPort.snaps.values()].some((s) => s.runId === "run-3")).toBe(false);

    const fourth = await run("run-4", bind(deps));
    expect(fourth).toMatchObject({ status: "committed", generation: 3 });
    // keep = 2: generation 1's snapshots are pruned after generation 3 commits.
    expect(new Set([...deps.snapshotPort.snaps.values()].map((s) => s.generation))).toEqual(new Set([2, 3]));

    // The invariant: restoring HEAD gives exactly the source's bytes for every volume.
    const dir = mkdtempSync(join(tmpdir(), "cgmirror-restore-"));
    for (const v of config.volumes) {
      const path = join(dir, `${v.id}.img`);
      await restoreVolume(repo, { volumeId: v.id, path });
      const image = readFileSync(path);
      expect(image.length).toBe(200 * BLOCK_SIZE);
      const zero = Buffer.alloc(BLOCK_SIZE);
      for (let i = 0; i < 200; i++) {
        const expected = i % 4 !== 3 ? source.content(i) : zero;
        const block = image.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE);
        if (!block.equals(expected)) throw new Error(`${v.id} block ${i} differs from the source`);
      }
    }
  });

  it("fails with PrepareFailedError and reverts when a shard's Map item 'succeeded' without transferring (LocalStack's Map ignores failed items): Prepare's missing-shard defence", async () => {
    const source = new FakeBlockSource({ volumeBlocks: 200, has: (i) => i % 4 !== 3 });
    const deps = memoryDeps(source);
    const repo = createRepo({ store: deps.store("my-backups"), prefix: "groups/orders", group: "orders" });
    expect(await run("run-1", bind(deps))).toMatchObject({ status: "committed", generation: 1 });
    // Shard 1 of the second volume reports ok without having run: no shard summary is written.
    const lossy = bind(deps, (task, fn) =>
      task === "Transfer"
        ? async (event) => {
            const item = event as { volumeId: string; shard: number };
            if (item.volumeId === "vol-0123456789abcdef1" && item.shard === 1) {
              return { ok: true, done: true, checkpoint: null, blocks: 0, blocksDone: 0, storedBytes: 0 };
            }
            return fn(event);
          }
        : fn,
    );
    const error = await run("run-2", lossy).then(
      () => undefined,
      (e: unknown) => e,
    );
    const cause = (error as ExecutionError).cause as Error;
    expect(cause.name).toBe("PrepareFailedError");
    expect(cause.message).toContain("shard 1 of vol-0123456789abcdef1 was not transferred by run run-2");
    expect((await readHead(repo))?.head).toMatchObject({ generation: 1, commit: { runId: "run-1" } });
  });

  it("GIVEN another run holds the lock WHEN a run starts THEN it is skipped", async () => {
    const deps = memoryDeps(new FakeBlockSource({ volumeBlocks: 8, has: () => true }));
    const hold = await HANDLER_MAKERS.AcquireLock(() => deps)({ config, runId: "run-holder" });
    expect(hold).toMatchObject({ acquired: true });
    expect(await run("run-late", bind(deps))).toMatchObject({ status: "skipped", heldBy: "run-holder" });
  });

  it("fails with GroupConfigError before writing anything when the config in the input is invalid", async () => {
    const deps = memoryDeps(new FakeBlockSource({ volumeBlocks: 8, has: () => true }));
    const bad = { ...config, volumes: [{ id: "volume-1" }] } as unknown as typeof config;
    const error = await run("run-bad", bind(deps), bad).then(
      () => undefined,
      (e: unknown) => e,
    );
    const cause = (error as ExecutionError).cause as Error;
    expect(cause.name).toBe("GroupConfigError");
    expect(cause.message).toMatch(
      /volumes\[0\]\.id: expected an EBS volume id like "vol-0123456789abcdef0".*, got "volume-1"/,
    );
    expect(deps.stores.get("my-backups")?.stats.puts ?? 0).toBe(0);
  });
});
