/**
 * The snapshot and freeze ports of core/protocol/snapshot-group.ts on the local stack: snapshots are taken by the
 * volume simulator (into the EBS direct API emulator), inspected and deleted through the emulator's admin
 * API, and a freeze holds the simulated volumes' writes in a queue.
 */

import type { EbsAdminClient } from "@cgmirror/ebs-emulator/admin-client";
import {
  type FreezePort,
  type FreezeTarget,
  SNAPSHOT_TAGS,
  type SnapshotLabels,
  type SnapshotPort,
  type SnapshotRef,
  type SnapshotStatus,
  type TaggedSnapshot,
} from "#core/protocol/snapshot-group.ts";
import type { VolumeSimulator } from "./simulator.ts";

function tagsOf(labels: SnapshotLabels): Record<string, string> {
  return {
    [SNAPSHOT_TAGS.group]: labels.group,
    [SNAPSHOT_TAGS.generation]: String(labels.generation),
    [SNAPSHOT_TAGS.runId]: labels.runId,
  };
}

export class LocalSnapshotPort implements SnapshotPort {
  readonly #sim: VolumeSimulator;
  readonly #admin: EbsAdminClient;
  /** Upload promises of snapshots initiated by this process (a snapshot is pending until done). */
  readonly #uploads = new Map<string, Promise<void>>();
  /** Snapshots whose block upload failed: they can never complete, so they are reported in error. */
  readonly #failed = new Map<string, string>();

  #track(snapshotId: string, completed: Promise<void>): void {
    this.#uploads.set(snapshotId, completed);
    completed.catch((error: Error) => this.#failed.set(snapshotId, `${error.name}: ${error.message}`));
  }

  constructor(props: { simulator: VolumeSimulator; admin: EbsAdminClient }) {
    this.#sim = props.simulator;
    this.#admin = props.admin;
  }

  async createInstanceSnapshots(
    instanceId: string,
    volumeIds: readonly string[],
    labels: SnapshotLabels,
  ): Promise<SnapshotRef[]> {
    for (const id of volumeIds) {
      const v = await this.#sim.get(id);
      if (v.instanceId !== instanceId) {
        throw new Error(
          `simulated volume ${id} is attached to ${v.instanceId ?? "no instance"}, not ${instanceId}`,
        );
      }
    }
    const started = await this.#sim.initiateSnapshots(volumeIds, {
      tags: tagsOf(labels),
      description: `cgmirror ${labels.group} generation ${labels.generation} (${instanceId})`,
    });
    for (const s of started) this.#track(s.snapshotId, s.completed);
    return started.map((s) => ({ volumeId: s.volumeId, snapshotId: s.snapshotId }));
  }

  async createVolumeSnapshot(volumeId: string, labels: SnapshotLabels): Promise<SnapshotRef> {
    const [s] = await this.#sim.initiateSnapshots([volumeId], {
      tags: tagsOf(labels),
      description: `cgmirror ${labels.group} generation ${labels.generation}`,
    });
    this.#track(s!.snapshotId, s!.completed);
    return { volumeId, snapshotId: s!.snapshotId };
  }

  async describeSnapshots(snapshotIds: readonly string[]): Promise<SnapshotStatus[]> {
    const volumes = await this.#sim.list();
    return Promise.all(
      snapshotIds.map(async (snapshotId) => {
        const upload = this.#uploads.get(snapshotId);
        if (upload) await upload.catch(() => {});
        const d = await this.#admin.describeSnapshot(snapshotId);
        const volumeId =
          volumes.find((v) => v.snapshots.some((s) => s.snapshotId === snapshotId))?.id ?? "unknown";
        if (!d) return { volumeId, snapshotId, state: "error", stateMessage: "the snapshot does not exist" };
        const failed = this.#failed.get(snapshotId);
        if (failed)
          return {
            volumeId,
            snapshotId,
            state: "error",
            stateMessage: `its blocks could not be written: ${failed}`,
          };
        return { volumeId, snapshotId, state: d.status === "completed" ? "completed" : d.status };
      }),
    );
  }

  async findSnapshots(group: string, runId?: string): Promise<TaggedSnapshot[]> {
    const all = await this.#admin.listSnapshots();
    const out: TaggedSnapshot[] = [];
    for (const d of all) {
      const tag = (k: string) => d.tags.find((t) => t.Key === k)?.Value;
      if (tag(SNAPSHOT_TAGS.group) !== group) continue;
      if (runId !== undefined && tag(SNAPSHOT_TAGS.runId) !== runId) continue;
      out.push({
        volumeId: tag("cgmirror:volume") ?? "unknown",
        snapshotId: d.snapshotId,
        group,
        generation: Number(tag(SNAPSHOT_TAGS.generation) ?? 0),
        runId: tag(SNAPSHOT_TAGS.runId) ?? "",
        state: d.status === "completed" ? "completed" : d.status,
        startTime: new Date(d.startTime).toISOString(),
      });
    }
    return out;
  }

  async deleteSnapshot(snapshotId: string): Promise<void> {
    const upload = this.#uploads.get(snapshotId);
    if (upload) await upload.catch(() => {});
    this.#uploads.delete(snapshotId);
    await this.#admin.deleteSnapshot(snapshotId);
    await this.#sim.forgetSnapshot(snapshotId);
  }
}

/** Freeze = the simulator queues the writes of every volume on the target instances until thaw. */
export class LocalFreezePort implements FreezePort {
  readonly #sim: VolumeSimulator;
  readonly #safety = new Map<string, NodeJS.Timeout>();

  constructor(props: { simulator: VolumeSimulator }) {
    this.#sim = props.simulator;
  }

  async #volumesOf(targets: readonly FreezeTarget[]): Promise<string[]> {
    const instances = new Set(targets.map((t) => t.instanceId));
    return (await this.#sim.list())
      .filter((v) => v.instanceId && instances.has(v.instanceId))
      .map((v) => v.id);
  }

  async freeze(targets: readonly FreezeTarget[], maxSeconds: number, runId: string): Promise<void> {
    const ids = await this.#volumesOf(targets);
    await this.#sim.freeze(ids);
    // Safety net, like the auto-thaw of the SSM script: never hold writes longer than maxSeconds.
    const timer = setTimeout(() => void this.#sim.thaw(ids), maxSeconds * 1000);
    timer.unref();
    this.#safety.set(runId, timer);
  }

  async thaw(targets: readonly FreezeTarget[], runId: string): Promise<void> {
    clearTimeout(this.#safety.get(runId));
    this.#safety.delete(runId);
    await this.#sim.thaw(await this.#volumesOf(targets));
  }
}
