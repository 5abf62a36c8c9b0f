/**
 * The deployed EBS reader (adapters/ebs-source.ts, the real @aws-sdk/client-ebs) against the emulator's
 * encrypted snapshots: without a grant on the volume's KMS key, Plan/Transfer fail at once with a fatal
 * (never retried) error naming the key; with the grant they read as usual.
 */

import { type EbsEmulator, startEbsEmulator } from "@cgmirror/ebs-emulator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEbsClient, EbsBlockSource } from "#adapters/ebs-source.ts";
import { BlockSourceFatalError } from "#core/ports/block-source.ts";

const KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
let emu: EbsEmulator;

beforeAll(async () => {
  emu = await startEbsEmulator({ kmsGrants: { [KEY]: ["AKIDPLANROLE"] } });
});
afterAll(async () => {
  await emu?.close();
});

function source(accessKeyId: string): EbsBlockSource {
  return new EbsBlockSource(
    createEbsClient({
      endpoint: emu.endpoint,
      region: "us-east-1",
      credentials: { accessKeyId, secretAccessKey: "not-checked" },
    }),
  );
}

describe("EbsBlockSource on snapshots encrypted with a customer-managed key", () => {
  it("GIVEN the role is granted the key THEN the changed blocks are listed", async () => {
    const snap = await emu.createSyntheticSnapshot({
      volumeSizeGiB: 1,
      writtenFraction: 0.05,
      kmsKeyArn: KEY,
    });
    const page = await source("AKIDPLANROLE").listBlocks({ snapshotId: snap.snapshotId });
    expect(page.blocks.length).toBeGreaterThan(0);
  });

  it("fails with a fatal AccessDeniedException naming the key when the role is not granted it", async () => {
    const snap = await emu.createSyntheticSnapshot({
      volumeSizeGiB: 1,
      writtenFraction: 0.05,
      kmsKeyArn: KEY,
    });
    const error = await source("AKIDOTHERROLE")
      .listBlocks({ snapshotId: snap.snapshotId })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BlockSourceFatalError);
    expect(String((error as Error).message)).toContain(KEY);
    expect(emu.stats().errors).toMatchObject({ AccessDeniedException: 1 });
  });
});
