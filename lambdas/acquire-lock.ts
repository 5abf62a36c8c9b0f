/** AcquireLock: take the group's lock (DESIGN.md section 4, step 1). A live lock skips the run. */
import { lockLeaseMinutes } from "#core/group-config.ts";
import { acquireLock } from "#core/lock.ts";
import { awsDeps } from "./aws-deps.ts";
import {
  AcquireLockInput,
  type AcquireLockInputT,
  AcquireLockOutput,
  type AcquireLockOutputT,
} from "./contracts.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { repoOf } from "./shared.ts";

export async function acquireLockTask(input: AcquireLockInputT, deps: TaskDeps): Promise<AcquireLockOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  const result = await acquireLock(repo, {
    runId: input.runId,
    ttlMs: lockLeaseMinutes(config) * 60_000,
    now: new Date(deps.clock.now()),
  });
  if (!result.acquired) {
    deps.log.warn("lock held by another run; skipping", { group: config.group, heldBy: result.holderRunId });
    return { acquired: false, heldBy: result.holderRunId, expiresAt: result.expiresAt };
  }
  deps.log.info("lock acquired", { group: config.group, fencing: result.lease.fencing });
  return {
    acquired: true,
    fencing: result.lease.fencing,
    expiresAt: result.lease.expiresAt,
    takenOverFrom: result.takenOverFrom ?? null,
  };
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("AcquireLock", AcquireLockInput, AcquireLockOutput, acquireLockTask, deps);
export const handler = makeHandler(awsDeps);
