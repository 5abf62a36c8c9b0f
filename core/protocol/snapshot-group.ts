/**
 * Forming the consistency group's point in time (DESIGN.md section 4, step 3; claim 000 c.14).
 *
 * Optionally freeze every listed file system on every instance, initiate every snapshot (one
 * crash-consistent multi-volume request per instance, one request per detached volume), thaw — always,
 * even when a snapshot request failed — and measure the coordination time (freeze start to thaw end).
 * Everything talks to ports: EC2/SSM adapters implement them in AWS, the volume simulator locally.
 */
import type { GroupConfig } from "../config/group-config.ts";

/** Tag keys on every snapshot cgmirror creates. */
export const SNAPSHOT_TAGS = {
  group: "cgmirror:group",
  generation: "cgmirror:generation",
  runId: "cgmirror:run-id",
  /** The CloudFormation stack whose Snapshot task created the snapshot (only set in AWS). */
  stack: "cgmirror:stack",
} as const;

export interface SnapshotRef {
  readonly volumeId: string;
  readonly snapshotId: string;
}

/** Identifies the snapshots of one run; written as tags (SNAPSHOT_TAGS). */
export interface SnapshotLabels {
  readonly group: string;
  readonly generation: number;
  readonly runId: string;
}

export type SnapshotState = "pending" | "completed" | "error" | "recoverable" | "recovering";

export interface SnapshotStatus extends SnapshotRef {
  readonly state: SnapshotState;
  /** e.g. "42%". */
  readonly progress?: string;
  readonly stateMessage?: string;
}

/** A snapshot found by its cgmirror tags. */
export interface TaggedSnapshot extends SnapshotRef, SnapshotLabels {
  readonly state: SnapshotState;
  /** When the snapshot was initiated (ISO 8601), if known. */
  readonly startTime?: string;
}

/** At most this many volume ids in CreateSnapshots' `ExcludeDataVolumeIds` (EC2 API reference). */
export const MAX_EXCLUDED_DATA_VOLUMES = 40;

/**
 * How the group volumes of one instance are snapshotted, decided before the freeze window (it needs
 * DescribeInstances, which must not eat into the coordination time).
 */
export interface InstanceSnapshotPlan {
  readonly instanceId: string;
  /** The group's volumes on this instance. */
  readonly volumeIds: readonly string[];
  /** True unless the root volume is one of the group's volumes. */
  readonly excludeBootVolume: boolean;
  /** Attached data volumes that are not in the group. */
  readonly excludeDataVolumeIds: readonly string[];
}

/** Creates, inspects and deletes EBS snapshots (EC2 in AWS, the volume simulator locally). */
export interface SnapshotPort {
  /**
   * Looks the instance up (attached volumes, root device) and checks that the group's volumes are
   * attached to it. Called before the freeze. A port without it is given no plan.
   */
  planInstanceSnapshots?(instanceId: string, volumeIds: readonly string[]): Promise<InstanceSnapshotPlan>;
  /** One crash-consistent request for these volumes of one instance (EC2 CreateSnapshots). */
  createInstanceSnapshots(
    instanceId: string,
    volumeIds: readonly string[],
    labels: SnapshotLabels,
    plan?: InstanceSnapshotPlan,
  ): Promise<SnapshotRef[]>;
  /** One snapshot of a volume not attached to an instance listed in the group (EC2 CreateSnapshot). */
  createVolumeSnapshot(volumeId: string, labels: SnapshotLabels): Promise<SnapshotRef>;
  describeSnapshots(snapshotIds: readonly string[]): Promise<SnapshotStatus[]>;
  /** Snapshots tagged with this group (and this run id, when given). */
  findSnapshots(group: string, runId?: string): Promise<TaggedSnapshot[]>;
  /** Deletes a snapshot; deleting one that no longer exists succeeds. */
  deleteSnapshot(snapshotId: string): Promise<void>;
}

export interface FreezeTarget {
  readonly instanceId: string;
  readonly mountPoints: readonly string[];
}

/** Freezes and thaws file systems (SSM + fsfreeze in AWS, the volume simulator's write queue locally). */
export interface FreezePort {
  /**
   * Freezes every mount point of every target; resolves once all are frozen. Each target thaws by
   * itself after `maxSeconds` (safety net). When any target fails, thaws those that froze and throws.
   */
  freeze(targets: readonly FreezeTarget[], maxSeconds: number, runId: string): Promise<void>;
  /** Thaws every mount point of every target; throws when any target could not be thawed. */
  thaw(targets: readonly FreezeTarget[], runId: string): Promise<void>;
}

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

/** The file systems could not be frozen or thawed, or the freeze lasted longer than allowed. */
export class FreezeFailedError extends Error {
  override readonly name = "FreezeFailedError";
}

/** A snapshot could not be created or ended in an error state. */
export class SnapshotFailedError extends Error {
  override readonly name = "SnapshotFailedError";
}

/** Snapshots did not complete in time. */
export class SnapshotTimeoutError extends Error {
  override readonly name = "SnapshotTimeoutError";
}

export interface SnapshotGroupResult {
  /** One per volume, in the config's volume order. */
  readonly snapshots: SnapshotRef[];
  /** When the group's point in time was taken (freeze start, or first snapshot request). ISO 8601. */
  readonly startedAt: string;
  /** Freeze start to thaw end (or first to last snapshot request without freeze), in ms. */
  readonly coordinationMs: number;
  readonly frozen: boolean;
  /** True when an earlier attempt of this run had already created every snapshot. */
  readonly reused: boolean;
}

export interface SnapshotGroupDeps {
  readonly snapshots: SnapshotPort;
  readonly freeze: FreezePort;
  readonly clock: Clock;
}

/** The freeze targets of a group: every instance with the mount points of its listed volumes. */
export function freezeTargets(config: GroupConfig): FreezeTarget[] {
  const byInstance = new Map<string, string[]>();
  for (const v of config.volumes) {
    if (v.instanceId === undefined || v.mountPoint === undefined) continue;
    const list = byInstance.get(v.instanceId) ?? [];
    if (!list.includes(v.mountPoint)) list.push(v.mountPoint);
    byInstance.set(v.instanceId, list);
  }
  return [...byInstance].map(([instanceId, mountPoints]) => ({ instanceId, mountPoints }));
}

function inConfigOrder(config: GroupConfig, refs: readonly SnapshotRef[]): SnapshotRef[] {
  return config.volumes.map((v) => {
    const ref = refs.find((r) => r.volumeId === v.id);
    if (!ref) throw new SnapshotFailedError(`no snapshot was created for volume ${v.id}`);
    return { volumeId: ref.volumeId, snapshotId: ref.snapshotId };
  });
}

async function deleteAll(port: SnapshotPort, refs: readonly SnapshotRef[]): Promise<void> {
  await Promise.allSettled(refs.map((r) => port.deleteSnapshot(r.snapshotId)));
}

/**
 * Takes the group's snapshots at one point in time. Idempotent per run id: a retried attempt reuses
 * a complete set from an earlier attempt and deletes an incomplete one before starting again.
 * @throws FreezeFailedError, SnapshotFailedError — after deleting whatever this attempt created.
 */
export async function snapshotGroup(
  config: GroupConfig,
  labels: SnapshotLabels,
  deps: SnapshotGroupDeps,
): Promise<SnapshotGroupResult> {
  const earlier = (await deps.snapshots.findSnapshots(labels.group, labels.runId)).filter(
    (s) => s.state !== "error",
  );
  const covered = config.volumes.every((v) => earlier.some((s) => s.volumeId === v.id));
  if (covered && earlier.length === config.volumes.length) {
    const times = earlier.flatMap((s) => (s.startTime ? [Date.parse(s.startTime)] : []));
    return {
      snapshots: inConfigOrder(config, earlier),
      startedAt: new Date(times.length > 0 ? Math.min(...times) : deps.clock.now()).toISOString(),
      coordinationMs: 0,
      frozen: false,
      reused: true,
    };
  }
  await deleteAll(deps.snapshots, earlier);

  const byInstance = new Map<string, string[]>();
  const detached: string[] = [];
  for (const v of config.volumes) {
    if (v.instanceId === undefined) detached.push(v.id);
    else byInstance.set(v.instanceId, [...(byInstance.get(v.instanceId) ?? []), v.id]);
  }

  const targets = config.freeze.enabled ? freezeTargets(config) : [];
  const frozenInstances = new Set(targets.map((t) => t.instanceId));
  // Describe every instance before the freeze window: the window holds the snapshot requests only.
  const port = deps.snapshots;
  const plans = new Map<string, InstanceSnapshotPlan>();
  if (port.planInstanceSnapshots) {
    const planned = await Promise.all(
      [...byInstance].map(([instanceId, volumeIds]) => port.planInstanceSnapshots!(instanceId, volumeIds)),
    );
    for (const plan of planned) plans.set(plan.instanceId, plan);
  }
  // CreateSnapshots excludes at most 40 data volumes. Beyond that, one volume alone is still one point
  // in time with CreateSnapshot; several need the freeze (their file systems hold still while each is
  // snapshotted on its own), else the instance cannot be part of a crash-consistent group.
  const perVolume = new Set<string>();
  for (const plan of plans.values()) {
    if (plan.excludeDataVolumeIds.length <= MAX_EXCLUDED_DATA_VOLUMES) continue;
    if (plan.volumeIds.length === 1 || frozenInstances.has(plan.instanceId)) {
      perVolume.add(plan.instanceId);
      continue;
    }
    throw new SnapshotFailedError(
      `instance ${plan.instanceId} has ${plan.excludeDataVolumeIds.length} attached data volumes outside the group; ` +
        `CreateSnapshots can exclude at most ${MAX_EXCLUDED_DATA_VOLUMES}, so its ${plan.volumeIds.length} group volumes ` +
        "(" +
        plan.volumeIds.join(", ") +
        ") cannot be snapshotted at one crash-consistent point. Enable freeze (with mount points) so that each " +
        "volume can be snapshotted on its own while its file system is frozen, or keep at most 40 other data volumes " +
        "attached. No snapshot was taken",
    );
  }

  const maxMs = config.freeze.maxCoordinationSeconds * 1000;
  const t0 = deps.clock.now();
  if (targets.length > 0) {
    try {
      await deps.freeze.freeze(targets, config.freeze.maxCoordinationSeconds, labels.runId);
    } catch (cause) {
      throw new FreezeFailedError(
        `could not freeze the group's file systems: ${(cause as Error).message}; no snapshot was taken`,
        { cause },
      );
    }
  }

  const requests: Promise<SnapshotRef[]>[] = [
    ...[...byInstance].flatMap(([instanceId, volumeIds]) =>
      perVolume.has(instanceId)
        ? volumeIds.map((volumeId) => port.createVolumeSnapshot(volumeId, labels).then((r) => [r]))
        : [port.createInstanceSnapshots(instanceId, volumeIds, labels, plans.get(instanceId))],
    ),
    ...detached.map((volumeId) => port.createVolumeSnapshot(volumeId, labels).then((r) => [r])),
  ];
  const settled = await Promise.allSettled(requests);

  let thawError: unknown;
  if (targets.length > 0) {
    try {
      await deps.freeze.thaw(targets, labels.runId);
    } catch (error) {
      thawError = error;
    }
  }
  const t1 = deps.clock.now();
  const coordinationMs = t1 - t0;

  const created = settled.flatMap((s) => (s.status === "fulfilled" ? s.value : []));
  const failures = settled.flatMap((s) => (s.status === "rejected" ? [s.reason as Error] : []));
  if (failures.length > 0) {
    await deleteAll(deps.snapshots, created);
    throw new SnapshotFailedError(
      `${failures.length} of ${requests.length} snapshot request(s) failed: ${failures
        .map((f) => f.message)
        .join("; ")}; the snapshots that were created are deleted`,
      { cause: failures[0] },
    );
  }
  if (thawError !== undefined) {
    await deleteAll(deps.snapshots, created);
    throw new FreezeFailedError(
      `could not thaw every file system: ${(thawError as Error).message}; ` +
        `each instance thaws by itself after ${config.freeze.maxCoordinationSeconds} s. The snapshots are deleted`,
      { cause: thawError },
    );
  }
  if (targets.length > 0 && coordinationMs > maxMs) {
    // The safety net may have thawed before every snapshot was initiated: the point in time is not shared.
    await deleteAll(deps.snapshots, created);
    throw new FreezeFailedError(
      `the freeze lasted ${coordinationMs} ms, longer than freeze.maxCoordinationSeconds ` +
        `(${config.freeze.maxCoordinationSeconds} s), so the snapshots may not share one point in time; ` +
        "they are deleted. Raise freeze.maxCoordinationSeconds or reduce the group",
    );
  }
  return {
    snapshots: inConfigOrder(config, created),
    startedAt: new Date(t0).toISOString(),
    coordinationMs,
    frozen: targets.length > 0,
    reused: false,
  };
}

export interface CheckSnapshotsResult {
  readonly allCompleted: boolean;
  readonly completed: number;
  readonly pending: number;
  /** Seconds to wait before the next check (the workflow's Wait state reads it). */
  readonly waitSeconds: number;
}

/** The first wait between two snapshot checks, in seconds. */
export const MIN_POLL_SECONDS = 15;
/** The longest wait between two snapshot checks, in seconds. */
export const MAX_POLL_SECONDS = 900;

/**
 * The wait before the next snapshot check: a tenth of the time waited so far, from 15 s up to 15 min,
 * and never past the timeout by more than a second. A snapshot that takes days is checked about every
 * 15 minutes: one day costs ~100 checks, ~900 history events (a Wait, a Task, a Choice each), far
 * below Step Functions' 25,000; a fixed 30-second poll would pass 25,000 within a day.
 */
export function nextPollSeconds(waitedMs: number, remainingMs: number): number {
  const backoff = Math.min(MAX_POLL_SECONDS, Math.max(MIN_POLL_SECONDS, Math.round(waitedMs / 10_000)));
  return Math.max(1, Math.min(backoff, Math.ceil(remainingMs / 1000) + 1));
}

/**
 * Whether every snapshot of the group is `completed`, and how long to wait before asking again.
 * @param waitingSince when this run began to wait for them (its timeout counts from there)
 * @throws SnapshotFailedError when one is in `error`; SnapshotTimeoutError when `timeoutMinutes`
 *   have passed since `waitingSince` and some are still pending.
 */
export async function checkSnapshots(
  refs: readonly SnapshotRef[],
  waitingSince: string,
  timeoutMinutes: number,
  deps: { snapshots: SnapshotPort; clock: Clock },
): Promise<CheckSnapshotsResult> {
  const statuses = await deps.snapshots.describeSnapshots(refs.map((r) => r.snapshotId));
  const missing = refs.filter((r) => !statuses.some((s) => s.snapshotId === r.snapshotId));
  if (missing.length > 0) {
    throw new SnapshotFailedError(
      `snapshot(s) ${missing.map((m) => `${m.snapshotId} of ${m.volumeId}`).join(", ")} no longer exist`,
    );
  }
  const failed = statuses.filter((s) => s.state === "error");
  if (failed.length > 0) {
    throw new SnapshotFailedError(
      `snapshot(s) ended in state error: ${failed
        .map((s) => `${s.snapshotId} of ${s.volumeId}${s.stateMessage ? ` (${s.stateMessage})` : ""}`)
        .join(", ")}`,
    );
  }
  const completed = statuses.filter((s) => s.state === "completed").length;
  const pending = refs.length - completed;
  const elapsedMs = deps.clock.now() - Date.parse(waitingSince);
  if (pending > 0) {
    if (elapsedMs > timeoutMinutes * 60_000) {
      const slow = statuses.filter((s) => s.state !== "completed");
      throw new SnapshotTimeoutError(
        `${pending} snapshot(s) still not completed after ${Math.round(elapsedMs / 60_000)} min ` +
          `(snapshots.completionTimeoutMinutes = ${timeoutMinutes}): ${slow
            .map((s) => `${s.snapshotId} ${s.progress ?? s.state}`)
            .join(", ")}; they are kept and the next run adopts them`,
      );
    }
  }
  return {
    allCompleted: pending === 0,
    completed,
    pending,
    waitSeconds: nextPollSeconds(elapsedMs, timeoutMinutes * 60_000 - elapsedMs),
  };
}

/** Deletes every snapshot this run created (revert). Returns how many were deleted. */
export async function deleteRunSnapshots(
  group: string,
  runId: string,
  port: SnapshotPort,
  keep: ReadonlySet<string> = new Set(),
): Promise<number> {
  const mine = (await port.findSnapshots(group, runId)).filter((s) => !keep.has(s.snapshotId));
  for (const s of mine) await port.deleteSnapshot(s.snapshotId);
  return mine.length;
}

/**
 * Deletes superseded base snapshots after a commit: per volume, keeps the `keep` newest committed
 * generations (<= `committedGeneration`) and never touches snapshots of newer (in-flight) generations.
 * Returns the deleted snapshot ids.
 */
export async function pruneBaseSnapshots(
  group: string,
  committedGeneration: number,
  keep: number,
  port: SnapshotPort,
): Promise<string[]> {
  const all = await port.findSnapshots(group);
  const byVolume = new Map<string, TaggedSnapshot[]>();
  for (const s of all) {
    if (s.generation > committedGeneration) continue;
    byVolume.set(s.volumeId, [...(byVolume.get(s.volumeId) ?? []), s]);
  }
  const doomed: string[] = [];
  for (const list of byVolume.values()) {
    list.sort((a, b) => b.generation - a.generation);
    const generations = [...new Set(list.map((s) => s.generation))].slice(0, keep);
    for (const s of list) if (!generations.includes(s.generation)) doomed.push(s.snapshotId);
  }
  for (const id of doomed) await port.deleteSnapshot(id);
  return doomed;
}
