import { describe, expect, it } from "vitest";
import * as groupConfig from "#core/config/group-config.ts";
import * as coreErrors from "#core/errors.ts";
import * as prune from "#core/lifecycle/prune.ts";
import * as blockSource from "#core/ports/block-source.ts";
import * as objectStore from "#core/ports/object-store.ts";
import * as snapshotGroup from "#core/protocol/snapshot-group.ts";
import * as restoreSnapshots from "#core/restore/restore-snapshots.ts";
import * as transferErrors from "#core/transfer/errors.ts";
import * as env from "#lambdas/env.ts";
import * as workflowErrors from "#workflows/errors.ts";

/*
 * The error classes are a contract: the workflow's Retry/Catch match their `name` (workflows/errors.ts),
 * the CLI and people read their messages. This pins, for every error class core/, workflows/ and
 * lambdas/env.ts export, its class name, `name`, message, fields and base class, so a refactor of how
 * they are declared cannot change what they are.
 */
const cause = new Error("the cause");
const sourceError = new blockSource.BlockSourceThrottledError(
  "GetSnapshotBlock",
  "ThrottlingException",
  "slow down",
);

const cases: Record<string, () => Error> = {
  CorruptObjectError: () => new coreErrors.CorruptObjectError("p/x.run", "v7", "page 3 fails", { cause }),
  UnsupportedFormatError: () =>
    new coreErrors.UnsupportedFormatError("p/HEAD", "cgmirror 1.0", "cgmirror 2.x"),
  BlockIntegrityError: () => new coreErrors.BlockIntegrityError("p/s.seg", 12, "length 3"),
  LockHeldError: () => new coreErrors.LockHeldError("p/lock", "run-1", "2026-01-01T00:00:00Z"),
  LockLostError: () => new coreErrors.LockLostError("p/lock", "taken over"),
  CommitConflictError: () => new coreErrors.CommitConflictError("HEAD moved"),
  RepositoryStateError: () => new coreErrors.RepositoryStateError("p/HEAD", "HEAD is missing"),
  GenerationNotFoundError: () => new coreErrors.GenerationNotFoundError("g", 9, [1, 2, 3, 5]),
  RunIdReusedError: () => new coreErrors.RunIdReusedError("run-1", "a manifest exists"),
  VolumeShrunkError: () => new coreErrors.VolumeShrunkError("vol-1", 2048, 1024),
  InvalidArgumentError: () => new coreErrors.InvalidArgumentError("expected a number"),
  TransferRetriesExhaustedError: () =>
    new transferErrors.TransferRetriesExhaustedError("ListSnapshotBlocks", 10, { cause: sourceError }),
  BlockChecksumMismatchError: () => new transferErrors.BlockChecksumMismatchError("snap-1", 4, "sha differs"),
  SourceAccessError: () => new transferErrors.SourceAccessError(sourceError),
  ShardPlanMismatchError: () => new transferErrors.ShardPlanMismatchError("block 7 missing"),
  PlanTooLargeError: () => new transferErrors.PlanTooLargeError("the plan needs more than 3000 shards"),
  PlanStalledError: () => new transferErrors.PlanStalledError("the plan of run r made no progress"),
  ObjectNotFoundError: () => new objectStore.ObjectNotFoundError("p/x", "v1"),
  PreconditionFailedError: () => new objectStore.PreconditionFailedError("p/HEAD", "If-Match"),
  ObjectLockedError: () => new objectStore.ObjectLockedError([{ key: "p/s.seg", versionId: "v2" }]),
  BlockSourceError: () => new blockSource.BlockSourceError("GetSnapshotBlock", "X", "boom"),
  BlockSourceThrottledError: () => sourceError,
  BlockSourceTransientError: () =>
    new blockSource.BlockSourceTransientError("ListSnapshotBlocks", "500", "oops"),
  BlockTokenExpiredError: () =>
    new blockSource.BlockTokenExpiredError("GetSnapshotBlock", "Validation", "token"),
  BlockSourceFatalError: () =>
    new blockSource.BlockSourceFatalError("GetSnapshotBlock", "AccessDenied", "no"),
  FreezeFailedError: () => new snapshotGroup.FreezeFailedError("i-1 did not freeze"),
  SnapshotFailedError: () => new snapshotGroup.SnapshotFailedError("snap-1 error"),
  SnapshotTimeoutError: () => new snapshotGroup.SnapshotTimeoutError("still pending"),
  PruneRefusedError: () => new prune.PruneRefusedError("segment missing"),
  RestoreToSnapshotsError: () =>
    new restoreSnapshots.RestoreToSnapshotsError("restore failed", ["snap-a"], ["snap-b"], { cause }),
  GroupConfigError: () =>
    new groupConfig.GroupConfigError("g.json", [{ path: "volumes", message: "required" }] as never),
  MissingEnvironmentError: () => new env.MissingEnvironmentError("BUCKET is not set"),
  ThrottledError: () => new workflowErrors.ThrottledError("slow"),
  TransientError: () => new workflowErrors.TransientError("blip"),
  InvalidInputError: () => new workflowErrors.InvalidInputError("bad input"),
  TransferFailedError: () => new workflowErrors.TransferFailedError("shard 3"),
  PrepareFailedError: () => new workflowErrors.PrepareFailedError("vol-1"),
  RevertFailedError: () => new workflowErrors.RevertFailedError("revert"),
  InternalError: () => new workflowErrors.InternalError("bug"),
  NotImplementedError: () => new workflowErrors.NotImplementedError("Snapshot", "an EC2 adapter"),
};

const modules = [
  coreErrors,
  transferErrors,
  objectStore,
  blockSource,
  snapshotGroup,
  prune,
  restoreSnapshots,
  groupConfig,
  env,
  workflowErrors,
];

function describeError(e: Error) {
  const fields = Object.fromEntries(
    Object.keys(e)
      .filter((k) => k !== "name")
      .sort()
      .map((k) => [k, (e as unknown as Record<string, unknown>)[k]]),
  );
  const chain: string[] = [];
  for (let p = Object.getPrototypeOf(e); p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    if (p.constructor.name) chain.push(p.constructor.name);
  }
  return {
    className: e.constructor.name,
    name: e.name,
    message: e.message,
    fields,
    cause: e.cause instanceof Error ? e.cause.message : e.cause,
    typeError: e instanceof TypeError,
    chain: chain.filter((c) => c !== e.constructor.name),
  };
}

describe("error classes: the names, messages and fields they keep", () => {
  it("covers every error class the modules export", () => {
    const exported = modules
      .flatMap((m) => Object.values(m))
      .filter((v): v is ErrorConstructor => typeof v === "function" && v.prototype instanceof Error)
      .map((c) => c.name)
      .sort();
    expect([...new Set(exported)]).toEqual(Object.keys(cases).sort());
  });

  it("gives every class a `name` equal to its class name", () => {
    for (const [className, make] of Object.entries(cases)) {
      const e = make();
      expect(e.constructor.name, className).toBe(className);
      expect(e.name, className).toBe(className);
      expect(e).toBeInstanceOf(Error);
    }
  });

  it("keeps every name in the workflow's contract tables backed by a class of that name", () => {
    const tables = [coreErrors.FormatErrors, transferErrors.TransferErrors, workflowErrors.Errors];
    const names = new Set(tables.flatMap((t) => Object.values(t)));
    // ReleaseLockFailedError is the state machine's own Fail state (workflows/consistency-group.ts).
    expect([...names].filter((n) => !(n in cases))).toEqual(["ReleaseLockFailedError"]);
  });

  it("keeps each error's message, fields, cause and base classes", () => {
    const all = Object.fromEntries(Object.entries(cases).map(([k, make]) => [k, describeError(make())]));
    expect(all).toMatchSnapshot();
  });
});
