/**
 * Reads an EBS snapshot back through ListSnapshotBlocks + GetSnapshotBlock (the real SDK against the
 * EBS emulator) and lists where it differs from an in-memory volume image (test/support/mem-ebs.ts).
 */
import type { EBSClient } from "@aws-sdk/client-ebs";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { snapshotBlocks } from "#local/snapshot-image.ts";
import { blockBytes, type Content } from "./mem-ebs.ts";

/** Every written block of a snapshot, read back through ListSnapshotBlocks + GetSnapshotBlock. */
export async function readSnapshot(reader: EBSClient, snapshotId: string): Promise<Map<number, Buffer>> {
  const got = new Map<number, Buffer>();
  for await (const b of snapshotBlocks(reader, snapshotId)) got.set(b.index, b.data);
  return got;
}

export async function snapshotDifferences(
  reader: EBSClient,
  snapshotId: string,
  image: { readonly sizeBlocks: number; readonly blocks: ReadonlyMap<number, Content> },
  what: { readonly volumeId: string; readonly generation: number },
): Promise<string[]> {
  const got = await readSnapshot(reader, snapshotId);
  const zero = Buffer.alloc(BLOCK_SIZE);
  const problems: string[] = [];
  for (let b = 0; b < image.sizeBlocks; b++) {
    if (!(got.get(b) ?? zero).equals(blockBytes(image.blocks.get(b) ?? null))) {
      problems.push(`${what.volumeId} block ${b} differs from generation ${what.generation}`);
    }
  }
  return problems;
}
