/**
 * Reads an EBS snapshot back through ListSnapshotBlocks + GetSnapshotBlock (the real SDK against the
 * EBS emulator) and lists where it differs from an in-memory volume image (test/support/mem-ebs.ts).
 */
import { type EBSClient, GetSnapshotBlockCommand, ListSnapshotBlocksCommand } from "@aws-sdk/client-ebs";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { blockBytes, type Content } from "./mem-ebs.ts";

export async function snapshotDifferences(
  reader: EBSClient,
  snapshotId: string,
  image: { readonly sizeBlocks: number; readonly blocks: ReadonlyMap<number, Content> },
  what: { readonly volumeId: string; readonly generation: number },
): Promise<string[]> {
  const got = new Map<number, Buffer>();
  let next: string | undefined;
  do {
    const page = await reader.send(
      new ListSnapshotBlocksCommand({ SnapshotId: snapshotId, NextToken: next }),
    );
    for (const b of page.Blocks ?? []) {
      const r = await reader.send(
        new GetSnapshotBlockCommand({
          SnapshotId: snapshotId,
          BlockIndex: b.BlockIndex!,
          BlockToken: b.BlockToken!,
        }),
      );
      got.set(b.BlockIndex!, Buffer.from(await r.BlockData!.transformToByteArray()));
    }
    next = page.NextToken;
  } while (next);
  const zero = Buffer.alloc(BLOCK_SIZE);
  const problems: string[] = [];
  for (let b = 0; b < image.sizeBlocks; b++) {
    if (!(got.get(b) ?? zero).equals(blockBytes(image.blocks.get(b) ?? null))) {
      problems.push(`${what.volumeId} block ${b} differs from generation ${what.generation}`);
    }
  }
  return problems;
}
