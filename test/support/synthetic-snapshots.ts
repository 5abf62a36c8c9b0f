/**
 * Synthetic snapshots for workflow tests at scale (test/workflow/scale.test.ts, plan-resume.test.ts):
 * EC2 snapshots over the EBS emulator's synthetic snapshots (no stored data), and a check that a
 * committed index holds their content (sampled blocks, read back through restore's code path).
 */

import { type EbsAdminClient, SyntheticBlocks, seedOf } from "@cgmirror/ebs-emulator";
import { expect } from "vitest";
import type { IndexEntry } from "#core/format/block-ref.ts";
import { readCommittedManifest } from "#core/format/generation.ts";
import type { Repo } from "#core/format/layout.ts";
import { openVolumeIndex } from "#core/format/volume-index.ts";
import {
  SNAPSHOT_TAGS,
  type SnapshotLabels,
  type SnapshotPort,
  type SnapshotRef,
  type SnapshotStatus,
  type TaggedSnapshot,
} from "#core/protocol/snapshot-group.ts";
import { fetchBlocks } from "#core/restore/restore.ts";

/** Content classes of the synthetic blocks. */
export interface SynthContent {
  readonly zeroFraction: number;
  readonly compressibleFraction: number;
}

/** EC2 snapshots over the emulator's synthetic snapshots: completed at once, tagged like EC2's. */
export class SyntheticSnapshotPort implements SnapshotPort {
  readonly #admin: EbsAdminClient;
  readonly #volumes = new Map<string, string>();
  readonly #sizeGiB: number;
  readonly #fraction: number;
  readonly #synth: SynthContent;
  constructor(admin: EbsAdminClient, sizeGiB: number, fraction: number, synth: SynthContent) {
    this.#admin = admin;
    this.#sizeGiB = sizeGiB;
    this.#fraction = fraction;
    this.#synth = synth;
  }
  async createInstanceSnapshots(
    _instanceId: string,
    volumeIds: readonly string[],
    labels: SnapshotLabels,
  ): Promise<SnapshotRef[]> {
    return Promise.all(volumeIds.map((v) => this.createVolumeSnapshot(v, labels)));
  }
  async createVolumeSnapshot(volumeId: string, labels: SnapshotLabels): Promise<SnapshotRef> {
    const d = await this.#admin.createSyntheticSnapshot({
      volumeSizeGiB: this.#sizeGiB,
      seed: volumeId,
      writtenFraction: this.#fraction,
      ...this.#synth,
      tags: [
        { Key: SNAPSHOT_TAGS.group, Value: labels.group },
        { Key: SNAPSHOT_TAGS.generation, Value: String(labels.generation) },
        { Key: SNAPSHOT_TAGS.runId, Value: labels.runId },
        { Key: "cgmirror:volume", Value: volumeId },
      ],
    });
    this.#volumes.set(d.snapshotId, volumeId);
    return { volumeId, snapshotId: d.snapshotId };
  }
  async describeSnapshots(ids: readonly string[]): Promise<SnapshotStatus[]> {
    return Promise.all(
      ids.map(async (snapshotId) => {
        const d = await this.#admin.describeSnapshot(snapshotId);
        const volumeId = this.#volumes.get(snapshotId) ?? "unknown";
        return d
          ? { volumeId, snapshotId, state: d.status === "completed" ? "completed" : d.status }
          : { volumeId, snapshotId, state: "error", stateMessage: "the snapshot does not exist" };
      }),
    );
  }
  async findSnapshots(group: string, runId?: string): Promise<TaggedSnapshot[]> {
    const out: TaggedSnapshot[] = [];
    for (const d of await this.#admin.listSnapshots()) {
      const tag = (k: string) => d.tags.find((t) => t.Key === k)?.Value;
      if (tag(SNAPSHOT_TAGS.group) !== group || (runId !== undefined && tag(SNAPSHOT_TAGS.runId) !== runId))
        continue;
      out.push({
        volumeId: tag("cgmirror:volume") ?? "unknown",
        snapshotId: d.snapshotId,
        group,
        generation: Number(tag(SNAPSHOT_TAGS.generation) ?? 0),
        runId: tag(SNAPSHOT_TAGS.runId) ?? "",
        state: d.status === "completed" ? "completed" : d.status,
      });
    }
    return out;
  }
  async deleteSnapshot(snapshotId: string): Promise<void> {
    await this.#admin.deleteSnapshot(snapshotId);
  }
}

/** Compares sampled blocks of each committed volume with the synthetic snapshot's content. */
export async function checkSampled(
  repo: Repo,
  volumes: string[],
  written: number,
  volumeGiB: number,
  synthContent: SynthContent,
): Promise<number> {
  const BLOCKS = (volumeGiB * 2 ** 30) / 524_288;
  const fraction = written / BLOCKS;
  const manifest = await readCommittedManifest(repo);
  expect(manifest).toBeDefined();
  let checked = 0;
  for (const volumeId of volumes) {
    const v = manifest!.volumes.find((x) => x.volumeId === volumeId)!;
    expect(v.sizeBytes).toBe(volumeGiB * 2 ** 30);
    const synth = new SyntheticBlocks({ seed: seedOf(volumeId), generation: 0, fraction, ...synthContent });
    const index = await openVolumeIndex(repo, volumeId, v.index);
    // Every 7th written block, and unwritten blocks between them (they must stay holes).
    const present: number[] = [];
    for (let i = 0; i < BLOCKS; i++) if (synth.has(i)) present.push(i);
    expect(present.length).toBeGreaterThan(written / 2);
    const sample = present.filter((_, k) => k % 7 === 0);
    const entries: IndexEntry[] = [];
    for (const b of sample) {
      const ref = await index.lookup(b);
      expect(ref, `block ${b} of ${volumeId}`).toBeDefined();
      entries.push({ block: b, ref: ref! });
      if (!synth.has(b + 1)) expect(await index.lookup(b + 1)).toBeUndefined();
    }
    await fetchBlocks(repo, entries, (block, raw) => {
      expect(Buffer.from(raw).equals(synth.content(block).data), `block ${block} of ${volumeId}`).toBe(true);
      checked++;
    });
    const zero = entries.filter((e) => e.ref.segment === null);
    for (const e of zero) expect(synth.isZero(e.block)).toBe(true);
    checked += zero.length;
  }
  return checked;
}
