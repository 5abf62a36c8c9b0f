/**
 * Reads an EBS snapshot back into a sparse raw image file through the EBS direct APIs
 * (ListSnapshotBlocks + GetSnapshotBlock, each block's SHA-256 checked): how the demo and benchmarks
 * check a snapshot a restore wrote against the volume's point-in-time image.
 */
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { type EBSClient, GetSnapshotBlockCommand, ListSnapshotBlocksCommand } from "@aws-sdk/client-ebs";

/**
 * Every written block of a snapshot, in ListSnapshotBlocks order: its index, its bytes and the SHA-256
 * GetSnapshotBlock sent with it (base64; not checked here).
 */
export async function* snapshotBlocks(
  ebs: EBSClient,
  snapshotId: string,
  options: { readonly maxResults?: number } = {},
): AsyncGenerator<{ index: number; data: Buffer; checksum: string | undefined }> {
  let next: string | undefined;
  do {
    const page = await ebs.send(
      new ListSnapshotBlocksCommand({
        SnapshotId: snapshotId,
        NextToken: next,
        MaxResults: options.maxResults,
      }),
    );
    for (const b of page.Blocks ?? []) {
      const got = await ebs.send(
        new GetSnapshotBlockCommand({
          SnapshotId: snapshotId,
          BlockIndex: b.BlockIndex!,
          BlockToken: b.BlockToken!,
        }),
      );
      const data = Buffer.from(await got.BlockData!.transformToByteArray());
      yield { index: b.BlockIndex!, data, checksum: got.Checksum };
    }
    next = page.NextToken;
  } while (next);
}

export async function snapshotToImage(
  ebs: EBSClient,
  snapshotId: string,
  path: string,
  sizeBytes: number,
): Promise<{ blocks: number }> {
  const file = await open(path, "w");
  let blocks = 0;
  try {
    await file.truncate(sizeBytes);
    for await (const { index, data, checksum } of snapshotBlocks(ebs, snapshotId)) {
      const sum = createHash("sha256").update(data).digest("base64");
      if (sum !== checksum) throw new Error(`block ${index} of ${snapshotId} fails its SHA-256 check`);
      const at = index * data.byteLength;
      if (at < sizeBytes) await file.write(data, 0, Math.min(data.byteLength, sizeBytes - at), at);
      blocks++;
    }
  } finally {
    await file.close();
  }
  return { blocks };
}
