/**
 * The one way cgmirror declares an error class:
 *
 *   export class LockLostError extends namedError("LockLostError") {
 *     constructor(key: string, detail: string, options?: ErrorOptions) {
 *       super(`lock ${key} is no longer held by this run: ${detail}; the run must revert`, options);
 *     }
 *   }
 *
 * `name` is a literal own property equal to the class name: Step Functions' Retry/Catch match on it
 * (the Lambda `errorType`, workflows/errors.ts), so it must survive bundling and must never change.
 * test/unit/error-contract.test.ts checks every class keeps its name, message and fields.
 *
 * Where each sub-domain's errors live (what can go wrong there):
 *   core/errors.ts            the repository: format, integrity, lock, commit, repository state, arguments
 *   core/transfer/errors.ts   the transfer engine (planner and worker)
 *   core/ports/*.ts           what a port's implementation may throw (object store, block source)
 *   core/protocol/snapshot-group.ts    freezing and snapshotting a group
 *   workflows/errors.ts       the names the state machines match, and the task handlers' own errors
 * and one error each beside its only thrower: GroupConfigError (core/config/group-config.ts),
 * PruneRefusedError (core/lifecycle/prune.ts), RestoreToSnapshotsError (core/restore/restore-snapshots.ts).
 */

/** A constructor of errors, to derive from (Error or TypeError). */
type ErrorBase = new (message?: string, options?: ErrorOptions) => Error;

/** A base class whose instances are `base` errors with `name` fixed to `name`. */
export function namedError<const N extends string>(name: N, base: ErrorBase = Error) {
  return class extends base {
    override readonly name: N = name;
  };
}

/** `key`, or `key (version v)`: how errors name an object version. */
export function objectVersion(key: string, versionId?: string): string {
  return versionId ? `${key} (version ${versionId})` : key;
}
