/**
 * AcquireLock: take the group's lock (DESIGN.md section 4, step 1). A live lock skips the run, unless
 * its holder's execution (an execution of this state machine named after the holder's run id) has
 * ended without releasing it: then the lock is taken over at once and Recover cleans up after it.
 */
import { lockLeaseMinutes } from "#core/config/group-config.ts";
import { acquireLock } from "#core/protocol/lock.ts";
import { awsDeps } from "./aws-deps.ts";
import {
  AcquireLockInput,
  type AcquireLockInputT,
  AcquireLockOutput,
  type AcquireLockOutputT,
} from "./contracts.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { publishRecoveryPointAge, repoOf } from "./shared.ts";

export async function acquireLockTask(input: AcquireLockInputT, deps: TaskDeps): Promise<AcquireLockOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  const status = input.stateMachineId ? deps.runStatus?.(input.stateMachineId) : undefined;
  const result = await acquireLock(repo, {
    runId: input.runId,
    ttlMs: lockLeaseMinutes(config) * 60_000,
    now: new Date(deps.clock.now()),
    ...(status ? { holderState: (runId: string) => status.runState(runId) } : {}),
  });
  // Every scheduled run, skipped or not, reports the age of the committed generation (the RPO line).
  await publishRecoveryPointAge(repo, config.group, deps);
  if (!result.acquired) {
    deps.log.warn("lock held by another run; skipping", { group: config.group, heldBy: result.holderRunId });
    return { acquired: false, heldBy: result.holderRunId, expiresAt: result.expiresAt };
  }
  if (result.takenOverFrom) {
    deps.log.warn("took the lock over from a run that did not release it", {
      group: config.group,
      from: result.takenOverFrom,
      because: result.takeover === "holderEnded" ? "its execution has ended" : "its lease expired",
    });
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
