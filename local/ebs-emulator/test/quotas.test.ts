/**
 * The EBS emulator's GetSnapshotBlock request-rate quotas (issue 10: the local run must be throttled
 * where AWS would be), through the unmodified @aws-sdk/client-ebs over HTTP:
 * - per snapshot (AWS: 1,000 requests/s, fixed): RequestThrottledException, Reason
 *   RESOURCE_LEVEL_THROTTLE, HTTP 400;
 * - per account, shared by every snapshot (AWS: 1,000 requests/s by default, adjustable):
 *   ThrottlingException, HTTP 400 (AWS's "Error retries" table), or RequestThrottledException with
 *   Reason ACCOUNT_THROTTLED when `accountThrottleError` asks for it;
 * - GetSnapshotBlock and PutSnapshotBlock each have their own quotas.
 * The quotas here are AWS's scaled down (20 and 30 requests/s) and the quota clock stands still, so
 * no token refills however slowly the machine serves the requests: the counts are exact.
 */
import { createHash } from "node:crypto";
import {
  CompleteSnapshotCommand,
  EBSClient,
  EBSServiceException,
  GetSnapshotBlockCommand,
  ListSnapshotBlocksCommand,
  PutSnapshotBlockCommand,
  RequestThrottledException,
  StartSnapshotCommand,
} from "@aws-sdk/client-ebs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AWS_DEFAULT_QUOTAS, BLOCK_SIZE, type EbsEmulator, FAULT_ENV, startEbsEmulator } from "../index.ts";

let emu: EbsEmulator;
let ebs: EBSClient;
const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("base64");

async function put(snapshotId: string, index: number, fill: number): Promise<void> {
  const data = Buffer.alloc(BLOCK_SIZE, fill);
  await ebs.send(
    new PutSnapshotBlockCommand({
      SnapshotId: snapshotId,
      BlockIndex: index,
      BlockData: data,
      DataLength: data.length,
      Checksum: sha(data),
      ChecksumAlgorithm: "SHA256",
    }),
  );
}

/** A completed one-block snapshot and that block's token. */
async function snapshotWithToken(fill: number): Promise<{ id: string; token: string }> {
  const s = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
  const id = s.SnapshotId!;
  await put(id, 0, fill);
  await ebs.send(new CompleteSnapshotCommand({ SnapshotId: id, ChangedBlocksCount: 1 }));
  const list = await ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: id }));
  return { id, token: list.Blocks![0]!.BlockToken! };
}

type Outcome = "ok" | "snapshot" | "account" | string;

/** `n` GetSnapshotBlock requests of one snapshot at once; what each got. */
async function reads(s: { id: string; token: string }, n: number): Promise<Outcome[]> {
  const results = await Promise.allSettled(
    Array.from({ length: n }, async () => {
      const got = await ebs.send(
        new GetSnapshotBlockCommand({ SnapshotId: s.id, BlockIndex: 0, BlockToken: s.token }),
      );
      // Read the body: an unread stream keeps its connection busy.
      return got.BlockData?.transformToByteArray();
    }),
  );
  return results.map((r) => {
    if (r.status === "fulfilled") return "ok";
    const e = r.reason as EBSServiceException;
    expect(e.$metadata.httpStatusCode, e.name).toBe(400);
    if (e instanceof RequestThrottledException && e.Reason === "RESOURCE_LEVEL_THROTTLE") return "snapshot";
    if (e instanceof RequestThrottledException && e.Reason === "ACCOUNT_THROTTLED") return "account";
    if (e instanceof EBSServiceException && e.name === "ThrottlingException") return "account";
    return `${e.name}: ${e.message}`;
  });
}

const count = (all: Outcome[]) => {
  const c: Record<string, number> = {};
  for (const o of all) c[o] = (c[o] ?? 0) + 1;
  return c;
};

beforeAll(async () => {
  emu = await startEbsEmulator({ quotaClock: () => 0 });
  ebs = new EBSClient({
    endpoint: emu.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "AKIDQUOTAS", secretAccessKey: "x" },
    maxAttempts: 1,
  });
});

afterEach(() => {
  emu.resetFaults();
});

afterAll(async () => {
  ebs.destroy();
  await emu.close();
});

describe("GetSnapshotBlock quotas", () => {
  it("GIVEN two snapshots each within the per-snapshot quota WHEN together they exceed the per-account quota THEN the excess gets ThrottlingException (400)", async () => {
    const a = await snapshotWithToken(1);
    const b = await snapshotWithToken(2);
    // Each alone is within both quotas.
    emu.setFaults({ dataPlaneRpsPerSnapshot: 20, dataPlaneRpsPerAccount: 30 });
    expect(count(await reads(a, 20))).toEqual({ ok: 20 });
    // Together (fresh buckets): 40 requests, 20 per snapshot, 30 for the account.
    emu.setFaults({ dataPlaneRpsPerSnapshot: 20, dataPlaneRpsPerAccount: 30 });
    const before = emu.stats().throttledBy;
    const [ra, rb] = await Promise.all([reads(a, 20), reads(b, 20)]);
    expect(count([...ra!, ...rb!])).toEqual({ ok: 30, account: 10 });
    const after = emu.stats().throttledBy;
    expect(after.account - before.account).toBe(10);
    expect(after.snapshot - before.snapshot).toBe(0);
  });

  it("GIVEN one snapshot over its own quota while the account has room THEN the excess gets RequestThrottledException RESOURCE_LEVEL_THROTTLE (400) and another snapshot is still served", async () => {
    const a = await snapshotWithToken(3);
    const b = await snapshotWithToken(4);
    emu.setFaults({ dataPlaneRpsPerSnapshot: 20, dataPlaneRpsPerAccount: 1000 });
    const before = emu.stats().throttledBy;
    expect(count(await reads(a, 30))).toEqual({ ok: 20, snapshot: 10 });
    expect(count(await reads(b, 20))).toEqual({ ok: 20 });
    const after = emu.stats().throttledBy;
    expect(after.snapshot - before.snapshot).toBe(10);
    expect(after.account - before.account).toBe(0);
  });

  it("GIVEN accountThrottleError RequestThrottledException THEN the account quota answers it with Reason ACCOUNT_THROTTLED", async () => {
    const a = await snapshotWithToken(5);
    emu.setFaults({ dataPlaneRpsPerAccount: 5, accountThrottleError: "RequestThrottledException" });
    const all = await reads(a, 8);
    expect(count(all)).toEqual({ ok: 5, account: 3 });
  });

  it("GIVEN the account's GetSnapshotBlock quota is used up THEN PutSnapshotBlock still passes (AWS: separate quotas per operation)", async () => {
    const a = await snapshotWithToken(6);
    const pending = (await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }))).SnapshotId!;
    emu.setFaults({ dataPlaneRpsPerAccount: 3 });
    expect(count(await reads(a, 5))).toEqual({ ok: 3, account: 2 });
    await put(pending, 0, 7);
    await put(pending, 1, 7);
    await put(pending, 2, 7);
    const fourth = await put(pending, 3, 7).then(
      () => "ok",
      (e: EBSServiceException) => e.name,
    );
    expect(fourth).toBe("ThrottlingException"); // the account's own Put quota (3) is used up now
  });

  it("GIVEN the local stack's start (defaults: AWS's quotas) THEN 1,000 GetSnapshotBlock/s per snapshot and per account apply, and CGM_EBS_* variables override them", async () => {
    const saved = process.env[FAULT_ENV.dataPlaneRpsPerAccount];
    process.env[FAULT_ENV.dataPlaneRpsPerAccount] = "2500";
    try {
      const e = await startEbsEmulator({ defaults: AWS_DEFAULT_QUOTAS, useEnv: true });
      expect(e.faults()).toMatchObject({ dataPlaneRpsPerSnapshot: 1000, dataPlaneRpsPerAccount: 2500 });
      await e.close();
    } finally {
      if (saved === undefined) delete process.env[FAULT_ENV.dataPlaneRpsPerAccount];
      else process.env[FAULT_ENV.dataPlaneRpsPerAccount] = saved;
    }
    const plain = await startEbsEmulator({ defaults: AWS_DEFAULT_QUOTAS });
    expect(plain.faults()).toMatchObject({ dataPlaneRpsPerSnapshot: 1000, dataPlaneRpsPerAccount: 1000 });
    await plain.close();
  });
});
