/**
 * A direct driver of the real task handlers (lambdas/*), in the order and with the data flow of the
 * state machine (workflows/consistency-group.ts): AcquireLock → Recover → Snapshot → CheckSnapshots*
 * → Plan → Transfer (every shard) → Prepare (every volume) → Commit → ReleaseLock; any failure →
 * Revert → ReleaseLock. Throttled/Transient errors are retried like the definition's Retry. Every
 * handler call goes through `hooks.call`, so a test can crash a task, deliver it twice or run it
 * concurrently. Much faster than the interpreter, so fault matrices can run it hundreds of times;
 * the definition itself is covered by test/unit/workflow-*.test.ts and test/workflow/.
 */
import type { GroupConfig } from "#core/config/group-config.ts";
import { HANDLER_MAKERS } from "#lambdas/makers.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import type { TaskName } from "#workflows/tasks.ts";

export type Handler = (input: unknown) => Promise<unknown>;

export interface PipelineHooks {
  /** Wraps every handler invocation (the `attempt`-th of this state in this run, from 1). */
  call?: (task: TaskName, input: unknown, invoke: Handler, attempt: number) => Promise<unknown>;
}

export type PipelineOutcome =
  | { readonly outcome: "committed"; readonly generation: number; readonly fencing: number }
  | { readonly outcome: "skipped"; readonly heldBy: string }
  | {
      readonly outcome: "reverted";
      readonly error: string;
      readonly message: string;
      readonly revert?: unknown;
      readonly revertError?: string;
    };

const RETRIED = new Set(["ThrottledError", "TransientError"]);

/** A task's output; each handler checks its own output against lambdas/contracts.ts. */
interface Any {
  // biome-ignore lint/suspicious/noExplicitAny: outputs are validated by the handlers themselves
  [k: string]: any;
}

/** Runs one backup of `config` as run `runId` through the real handlers over `deps`. */
export async function runPipeline(
  deps: TaskDeps,
  config: GroupConfig,
  runId: string,
  hooks: PipelineHooks = {},
): Promise<PipelineOutcome> {
  const handlers = new Map<TaskName, Handler>();
  const attempts = new Map<TaskName, number>();
  const call = async (task: TaskName, input: unknown, retries = 4): Promise<Any> => {
    let h = handlers.get(task);
    if (!h) {
      h = HANDLER_MAKERS[task](() => deps);
      handlers.set(task, h);
    }
    for (let attempt = 0; ; attempt++) {
      const n = (attempts.get(task) ?? 0) + 1;
      attempts.set(task, n);
      try {
        return (await (hooks.call ? hooks.call(task, input, h, n) : h(input))) as Any;
      } catch (error) {
        if (attempt < retries && RETRIED.has((error as Error).name)) continue;
        throw error;
      }
    }
  };
  const base = { config, runId };
  const lock = await call("AcquireLock", base);
  if (!lock.acquired) return { outcome: "skipped", heldBy: lock.heldBy };
  const fencing: number = lock.fencing;
  try {
    const recover = await call("Recover", { ...base, fencing, takenOverFrom: lock.takenOverFrom });
    const generation: number = recover.nextGeneration;
    const snap = await call("Snapshot", { ...base, fencing, generation });
    for (let i = 0; ; i++) {
      const check = await call("CheckSnapshots", {
        ...base,
        snapshots: snap.snapshots,
        waitingSince: snap.waitingSince,
      });
      if (check.allCompleted) break;
      if (i > 20)
        throw Object.assign(new Error("snapshots never completed"), { name: "SnapshotTimeoutError" });
    }
    let plan = await call("Plan", { ...base, fencing, generation, snapshots: snap.snapshots });
    // ResumePlan: until the plan is done, from the cursor the previous invocation returned.
    while (plan.done === false) {
      plan = await call("Plan", {
        ...base,
        fencing,
        generation,
        snapshots: snap.snapshots,
        resume: plan.cursor,
      });
    }
    for (const s of plan.shards as Array<{ volumeId: string; shard: number }>) {
      await call("Transfer", {
        bucket: config.target.bucket,
        prefix: config.target.prefix,
        group: config.group,
        runId,
        generation,
        planKey: plan.planKey,
        volumeId: s.volumeId,
        shard: s.shard,
      });
    }
    const prepared: Any[] = [];
    for (const s of snap.snapshots as Array<{ volumeId: string; snapshotId: string }>) {
      prepared.push(await call("Prepare", { ...base, fencing, generation, planKey: plan.planKey, ...s }));
    }
    const commit = await call("Commit", {
      ...base,
      fencing,
      generation,
      planKey: plan.planKey,
      snapshots: snap.snapshots,
      startedAt: snap.startedAt,
      coordinationMs: snap.coordinationMs,
      prepared,
    });
    await call("ReleaseLock", { ...base, fencing, outcome: "committed" }).catch(() => undefined);
    return { outcome: "committed", generation: commit.generation, fencing };
  } catch (error) {
    const e = error as Error;
    const caught = { Error: e.name, Cause: e.message };
    let revert: unknown;
    let revertError: string | undefined;
    try {
      revert = await call("Revert", { ...base, fencing, error: caught });
      await call("ReleaseLock", { ...base, fencing, outcome: "reverted" }).catch(() => undefined);
    } catch (r) {
      revertError = `${(r as Error).name}: ${(r as Error).message}`;
    }
    return {
      outcome: "reverted",
      error: e.name,
      message: e.message,
      ...(revert !== undefined ? { revert } : {}),
      ...(revertError !== undefined ? { revertError } : {}),
    };
  }
}
