/** Every task's handler factory, by task name: the local runner and tests bind them to state names. */
import type { LifecycleTaskName } from "#workflows/lifecycle-tasks.ts";
import type { TaskName } from "#workflows/tasks.ts";
import { makeHandler as acquireLock } from "./acquire-lock.ts";
import { makeHandler as checkSnapshots } from "./check-snapshots.ts";
import { makeHandler as commit } from "./commit.ts";
import { makeHandler as plan } from "./plan.ts";
import { makeHandler as prepare } from "./prepare.ts";
import { makeHandler as prune } from "./prune.ts";
import { makeHandler as recover } from "./recover.ts";
import { makeHandler as releaseLock } from "./release-lock.ts";
import { makeHandler as restoreVolume } from "./restore-volume.ts";
import { makeHandler as revert } from "./revert.ts";
import type { TaskDeps } from "./runtime.ts";
import { makeHandler as snapshot } from "./snapshot.ts";
import { makeHandler as transfer } from "./transfer.ts";

export const HANDLER_MAKERS: Readonly<
  Record<TaskName, (deps: () => TaskDeps) => (event: unknown) => Promise<unknown>>
> = {
  AcquireLock: acquireLock,
  Recover: recover,
  Snapshot: snapshot,
  CheckSnapshots: checkSnapshots,
  Plan: plan,
  Transfer: transfer,
  Prepare: prepare,
  Commit: commit,
  Revert: revert,
  ReleaseLock: releaseLock,
};

/** The lifecycle workflows' handler factories (workflows/lifecycle-tasks.ts), by task name. */
export const LIFECYCLE_HANDLER_MAKERS: Readonly<
  Record<LifecycleTaskName, (deps: () => TaskDeps) => (event: unknown) => Promise<unknown>>
> = {
  Prune: prune,
  RestoreVolume: restoreVolume,
};
