/**
 * Who may do what in a group's repository: its areas (docs/format.md, "Key layout") and, per backup
 * task, the areas it may read, write and delete in. infra/task-permissions.ts turns this table into
 * IAM statements; docs/operations.md, "Permissions", shows it to operators.
 */
import type { TaskName } from "#workflows/tasks.ts";

/**
 * The areas of a group's repository under its prefix (docs/format.md, "Key layout"): the HEAD object,
 * and one folder each for the lock, committed-generation records, manifests, volume index roots and
 * runs, segments, per-run scratch (plans, shard lists and results) and the pending snapshot set.
 */
export const REPOSITORY_AREAS = [
  "HEAD",
  "locks",
  "commits",
  "generations",
  "volumes",
  "segments",
  "runs",
  "gc",
  "pending",
  // Run records (docs/format.md §13): written by ReleaseLock, Revert and Recover; read only by the CLI.
  "history",
] as const;
export type RepositoryArea = (typeof REPOSITORY_AREAS)[number];

/** The key pattern of an area below the group prefix, as used in IAM resource ARNs. */
export function areaPattern(area: RepositoryArea): string {
  return area === "HEAD" ? "HEAD" : `${area}/*`;
}

export interface S3Access {
  /** GetObject / GetObjectVersion (and listing the group prefix). */
  readonly read: readonly RepositoryArea[];
  /** PutObject and multipart uploads. */
  readonly write: readonly RepositoryArea[];
  /** DeleteObject without a version id: only a delete marker (scratch objects of the run). */
  readonly deleteMarker: readonly RepositoryArea[];
  /** DeleteObjectVersion: destroys a version; only where a task must undo or clean up. */
  readonly deleteVersion: readonly RepositoryArea[];
}

/** The areas whose objects a committed generation reaches, locked under `target.objectLock`. */
export const OBJECT_LOCK_AREAS: readonly RepositoryArea[] = ["commits", "generations", "volumes", "segments"];

/** Every area a run reads (run records are written by the lock and revert tasks, read only by the CLI). */
const ALL_AREAS: readonly RepositoryArea[] = REPOSITORY_AREAS.filter((a) => a !== "history");

/**
 * What each task may do in the repository. Only Commit, Recover (which fences HEAD with its token) and
 * the lock tasks touch HEAD and locks/ (the lock tasks read HEAD only); Transfer writes only segments/
 * and runs/. docs/operations.md, "Permissions", has this table.
 */
export const TASK_S3_ACCESS: Readonly<Record<TaskName, S3Access>> = {
  // AcquireLock reads HEAD's fence: a new lock's fencing number starts above it.
  AcquireLock: { read: ["locks", "HEAD"], write: ["locks"], deleteMarker: [], deleteVersion: [] },
  Recover: {
    read: ALL_AREAS,
    write: ["HEAD", "commits", "history"],
    deleteMarker: [],
    deleteVersion: ["volumes", "generations", "runs"],
  },
  // Snapshot records the snapshot set it takes and drops one it cannot adopt (pending/snapshot-set.json).
  Snapshot: {
    read: ["locks", "HEAD", "pending"],
    write: ["pending"],
    deleteMarker: [],
    deleteVersion: ["pending"],
  },
  CheckSnapshots: { read: ["locks", "HEAD"], write: [], deleteMarker: [], deleteVersion: [] },
  Plan: { read: ALL_AREAS, write: ["runs"], deleteMarker: ["runs"], deleteVersion: [] },
  Transfer: {
    // gc/: the retired-segment set (Transfer never dedups into a segment prune retired).
    read: ["volumes", "segments", "runs", "commits", "generations", "HEAD", "gc"],
    write: ["segments", "runs"],
    deleteMarker: ["runs"],
    deleteVersion: [],
  },
  Prepare: { read: ALL_AREAS, write: ["volumes", "runs"], deleteMarker: ["runs"], deleteVersion: [] },
  Commit: { read: ALL_AREAS, write: ["generations", "HEAD", "commits"], deleteMarker: [], deleteVersion: [] },
  Revert: {
    read: ALL_AREAS,
    write: ["history"],
    deleteMarker: [],
    deleteVersion: ["volumes", "generations", "runs", "segments", "pending"],
  },
  ReleaseLock: {
    read: ["locks", "HEAD", "generations", "pending"],
    write: ["locks", "history"],
    deleteMarker: [],
    deleteVersion: ["runs", "pending"],
  },
};
