/**
 * The snapshot catalog of restore into EBS (adapters/ebs-writer.ts) on the local EBS emulator: its
 * admin API describes, lists and deletes snapshots (EC2 does that in AWS).
 */

import type { EbsAdminClient, SnapshotDescription } from "@cgmirror/ebs-emulator";
import type { SnapshotCatalog } from "#adapters/ebs-writer.ts";
import type { WrittenSnapshot } from "#core/ports/snapshot-writer.ts";

/** The emulator's view of a snapshot as the port describes it. */
function toWritten(d: SnapshotDescription): WrittenSnapshot {
  return {
    snapshotId: d.snapshotId,
    status: d.status,
    volumeSizeGiB: d.volumeSizeGiB,
    parentSnapshotId: d.parentSnapshotId,
    tags: Object.fromEntries(d.tags.map((t) => [t.Key, t.Value])),
  };
}

/** Anything with the emulator's describe/list/delete: the admin HTTP client or an in-process emulator. */
export type EmulatorSnapshots =
  | Pick<EbsAdminClient, "describeSnapshot" | "listSnapshots" | "deleteSnapshot">
  | {
      describeSnapshot(
        id: string,
      ): SnapshotDescription | undefined | Promise<SnapshotDescription | undefined>;
      listSnapshots(): SnapshotDescription[] | Promise<SnapshotDescription[]>;
      deleteSnapshot(id: string): Promise<void>;
    };

export function emulatorSnapshotCatalog(emulator: EmulatorSnapshots): SnapshotCatalog {
  return {
    async describe(snapshotId) {
      const d = await emulator.describeSnapshot(snapshotId);
      return d ? toWritten(d) : undefined;
    },
    async find(tags) {
      const all = await emulator.listSnapshots();
      return all.map(toWritten).filter((s) => Object.entries(tags).every(([k, v]) => s.tags?.[k] === v));
    },
    async delete(snapshotId) {
      if (!(await emulator.describeSnapshot(snapshotId))) return;
      await emulator.deleteSnapshot(snapshotId);
    },
  };
}
