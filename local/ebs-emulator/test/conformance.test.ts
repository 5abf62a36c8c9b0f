/**
 * Conformance of the EBS direct API emulator, driven by the unmodified @aws-sdk/client-ebs.
 * Written from the EBS direct API reference (API_*.html) and the error-retries table.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AccessDeniedException,
  type ChangedBlock,
  CompleteSnapshotCommand,
  ConcurrentLimitExceededException,
  ConflictException,
  EBSClient,
  EBSServiceException,
  GetSnapshotBlockCommand,
  InternalServerException,
  ListChangedBlocksCommand,
  ListSnapshotBlocksCommand,
  PutSnapshotBlockCommand,
  paginateListChangedBlocks,
  paginateListSnapshotBlocks,
  RequestThrottledException,
  ResourceNotFoundException,
  ServiceQuotaExceededException,
  StartSnapshotCommand,
  ValidationException,
} from "@aws-sdk/client-ebs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  BLOCK_SIZE,
  type EbsEmulator,
  type EbsEmulatorOptions,
  ebsAdmin,
  SyntheticBlocks,
  seedOf,
  startEbsEmulator,
} from "../index.ts";

const servers: EbsEmulator[] = [];
let emu: EbsEmulator;
let ebs: EBSClient;

function clientFor(e: EbsEmulator, accessKeyId = "AKIDCGMIRRORTEST"): EBSClient {
  return new EBSClient({
    endpoint: e.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId, secretAccessKey: "not-checked" },
    maxAttempts: 1,
  });
}

async function start(opts: EbsEmulatorOptions = {}): Promise<EbsEmulator> {
  const e = await startEbsEmulator(opts);
  servers.push(e);
  return e;
}

beforeAll(async () => {
  emu = await start();
  ebs = clientFor(emu);
});

afterAll(async () => {
  ebs.destroy();
  await Promise.all(servers.map((s) => s.close()));
});

afterEach(() => {
  emu.resetFaults();
});

const blockOf = (fill: number): Buffer => Buffer.alloc(BLOCK_SIZE, fill);
const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("base64");

async function put(snapshotId: string, index: number, data: Buffer, client = ebs): Promise<void> {
  await client.send(
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

/** Starts, writes `blocks` (index -> fill byte) and completes a snapshot. */
async function snapshot(
  blocks: Record<number, number>,
  opts: { parent?: string; volumeSize?: number; client?: EBSClient } = {},
): Promise<string> {
  const client = opts.client ?? ebs;
  const s = await client.send(
    new StartSnapshotCommand({ VolumeSize: opts.volumeSize ?? 1, ParentSnapshotId: opts.parent }),
  );
  const id = s.SnapshotId as string;
  for (const [i, fill] of Object.entries(blocks)) await put(id, Number(i), blockOf(fill), client);
  await client.send(
    new CompleteSnapshotCommand({ SnapshotId: id, ChangedBlocksCount: Object.keys(blocks).length }),
  );
  return id;
}

async function listAll(snapshotId: string, maxResults?: number, client = ebs) {
  const blocks: { BlockIndex?: number; BlockToken?: string }[] = [];
  let pages = 0;
  for await (const page of paginateListSnapshotBlocks(
    { client, pageSize: maxResults },
    { SnapshotId: snapshotId, MaxResults: maxResults },
  )) {
    pages++;
    blocks.push(...(page.Blocks ?? []));
  }
  return { blocks, pages };
}

async function changedAll(second: string, first?: string, maxResults?: number, client = ebs) {
  const blocks: ChangedBlock[] = [];
  let pages = 0;
  let emptyPages = 0;
  for await (const page of paginateListChangedBlocks(
    { client, pageSize: maxResults },
    { SecondSnapshotId: second, FirstSnapshotId: first, MaxResults: maxResults },
  )) {
    pages++;
    if ((page.ChangedBlocks ?? []).length === 0) emptyPages++;
    blocks.push(...(page.ChangedBlocks ?? []));
  }
  return { blocks, pages, emptyPages };
}

async function read(snapshotId: string, index: number, token: string, client = ebs) {
  const out = await client.send(
    new GetSnapshotBlockCommand({ SnapshotId: snapshotId, BlockIndex: index, BlockToken: token }),
  );
  const data = Buffer.from(
    await (out.BlockData as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
  );
  return { ...out, data };
}

/** The error thrown by `p`, asserting it is an instance of `cls` (and has `reason` when given). */
async function rejection<T extends Error>(
  p: Promise<unknown>,
  cls: abstract new (...args: never[]) => T,
  reason?: string,
): Promise<T> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected the call to fail").toBeInstanceOf(cls);
  if (reason !== undefined) expect((err as { Reason?: string }).Reason).toBe(reason);
  return err as T;
}

describe("StartSnapshot", () => {
  it("GIVEN a size, tags, description and timeout WHEN started THEN it answers a pending snap-<17 hex> with BlockSize 524288", async () => {
    const out = await ebs.send(
      new StartSnapshotCommand({
        VolumeSize: 8,
        Tags: [{ Key: "group", Value: "g1" }],
        Description: "cgmirror test",
        Timeout: 30,
      }),
    );
    expect(out.SnapshotId).toMatch(/^snap-[0-9a-f]{17}$/);
    expect(out.Status).toBe("pending");
    expect(out.BlockSize).toBe(524288);
    expect(out.VolumeSize).toBe(8);
    expect(out.OwnerId).toMatch(/^\d{12}$/);
    expect(out.StartTime).toBeInstanceOf(Date);
    expect(Math.abs((out.StartTime as Date).getTime() - Date.now())).toBeLessThan(60_000);
    expect(out.Tags).toEqual([{ Key: "group", Value: "g1" }]);
    expect(out.Description).toBe("cgmirror test");
    expect(out.$metadata.httpStatusCode).toBe(201);
  });

  it("GIVEN the same ClientToken and parameters WHEN retried THEN it answers the same snapshot", async () => {
    const a = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1, ClientToken: "ct-same-1" }));
    const b = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1, ClientToken: "ct-same-1" }));
    expect(b.SnapshotId).toBe(a.SnapshotId);
  });

  it("fails with ConflictException when a ClientToken is reused with other parameters", async () => {
    await ebs.send(new StartSnapshotCommand({ VolumeSize: 1, ClientToken: "ct-conflict-1" }));
    const err = await rejection(
      ebs.send(new StartSnapshotCommand({ VolumeSize: 2, ClientToken: "ct-conflict-1" })),
      ConflictException,
    );
    expect(err.$metadata.httpStatusCode).toBe(409);
  });

  it("fails with ValidationException INVALID_VOLUME_SIZE for 0 or more than 65536 GiB", async () => {
    await rejection(
      ebs.send(new StartSnapshotCommand({ VolumeSize: 0 })),
      ValidationException,
      "INVALID_VOLUME_SIZE",
    );
    await rejection(
      ebs.send(new StartSnapshotCommand({ VolumeSize: 65537 })),
      ValidationException,
      "INVALID_VOLUME_SIZE",
    );
  });

  it("fails with ValidationException for a Timeout outside 10..4320, too many tags, or ParentSnapshotId with Encrypted", async () => {
    await rejection(ebs.send(new StartSnapshotCommand({ VolumeSize: 1, Timeout: 5 })), ValidationException);
    const tags = Array.from({ length: 51 }, (_, i) => ({ Key: `k${i}`, Value: "v" }));
    await rejection(
      ebs.send(new StartSnapshotCommand({ VolumeSize: 1, Tags: tags })),
      ValidationException,
      "INVALID_TAG",
    );
    const parent = await snapshot({});
    await rejection(
      ebs.send(new StartSnapshotCommand({ VolumeSize: 1, ParentSnapshotId: parent, Encrypted: true })),
      ValidationException,
    );
  });

  it("fails with ResourceNotFoundException for an unknown parent and ValidationException for a pending one", async () => {
    await rejection(
      ebs.send(new StartSnapshotCommand({ VolumeSize: 1, ParentSnapshotId: "snap-0123456789abcdef1" })),
      ResourceNotFoundException,
      "SNAPSHOT_NOT_FOUND",
    );
    const pending = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    await rejection(
      ebs.send(new StartSnapshotCommand({ VolumeSize: 1, ParentSnapshotId: pending.SnapshotId })),
      ValidationException,
    );
  });
});

describe("PutSnapshotBlock and CompleteSnapshot", () => {
  it("GIVEN a block WHEN put THEN EBS answers its SHA-256 checksum", async () => {
    const s = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    const data = blockOf(3);
    const out = await ebs.send(
      new PutSnapshotBlockCommand({
        SnapshotId: s.SnapshotId,
        BlockIndex: 0,
        BlockData: data,
        DataLength: BLOCK_SIZE,
        Checksum: sha(data),
        ChecksumAlgorithm: "SHA256",
        Progress: 50,
      }),
    );
    expect(out.Checksum).toBe(sha(data));
    expect(out.ChecksumAlgorithm).toBe("SHA256");
    expect(out.$metadata.httpStatusCode).toBe(201);
  });

  it("fails with ValidationException INVALID_BLOCK when the checksum does not match the data", async () => {
    const s = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    await rejection(
      ebs.send(
        new PutSnapshotBlockCommand({
          SnapshotId: s.SnapshotId,
          BlockIndex: 0,
          BlockData: blockOf(1),
          DataLength: BLOCK_SIZE,
          Checksum: sha(blockOf(2)),
          ChecksumAlgorithm: "SHA256",
        }),
      ),
      ValidationException,
      "INVALID_BLOCK",
    );
  });

  it("fails with ValidationException for a block that is not 512 KiB, whatever DataLength says", async () => {
    const s = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    const small = Buffer.alloc(4096, 1);
    const cmd = (dataLength: number) =>
      new PutSnapshotBlockCommand({
        SnapshotId: s.SnapshotId,
        BlockIndex: 0,
        BlockData: small,
        DataLength: dataLength,
        Checksum: sha(small),
        ChecksumAlgorithm: "SHA256",
      });
    await rejection(ebs.send(cmd(4096)), ValidationException);
    await rejection(ebs.send(cmd(BLOCK_SIZE)), ValidationException, "INVALID_BLOCK");
  });

  it("fails with ValidationException for an index outside the volume", async () => {
    const s = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    await rejection(put(s.SnapshotId as string, 2048, blockOf(1)), ValidationException);
    await put(s.SnapshotId as string, 2047, blockOf(1));
  });

  it("fails with ValidationException when writing to a completed snapshot, and ResourceNotFoundException for an unknown one", async () => {
    const id = await snapshot({ 1: 1 });
    await rejection(put(id, 2, blockOf(2)), ValidationException);
    await rejection(put("snap-0123456789abcdef2", 2, blockOf(2)), ResourceNotFoundException);
  });

  it("fails to complete with a wrong ChangedBlocksCount, and then completes with the right one", async () => {
    const s = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    const id = s.SnapshotId as string;
    await put(id, 1, blockOf(1));
    await put(id, 2, blockOf(2));
    await put(id, 2, blockOf(3)); // rewriting an index counts once
    await rejection(
      ebs.send(new CompleteSnapshotCommand({ SnapshotId: id, ChangedBlocksCount: 3 })),
      ValidationException,
    );
    const out = await ebs.send(new CompleteSnapshotCommand({ SnapshotId: id, ChangedBlocksCount: 2 }));
    expect(out.Status).toBe("completed");
    expect(out.$metadata.httpStatusCode).toBe(202);
  });

  it("GIVEN a LINEAR aggregated checksum WHEN completing THEN a right one is accepted and a wrong one refused", async () => {
    const s = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    const id = s.SnapshotId as string;
    await put(id, 9, blockOf(9));
    await put(id, 4, blockOf(4));
    const agg = createHash("sha256")
      .update(Buffer.concat([Buffer.from(sha(blockOf(4)), "base64"), Buffer.from(sha(blockOf(9)), "base64")]))
      .digest("base64");
    const complete = (checksum: string) =>
      ebs.send(
        new CompleteSnapshotCommand({
          SnapshotId: id,
          ChangedBlocksCount: 2,
          Checksum: checksum,
          ChecksumAlgorithm: "SHA256",
          ChecksumAggregationMethod: "LINEAR",
        }),
      );
    await rejection(complete(sha(Buffer.from("wrong"))), ValidationException);
    expect((await complete(agg)).Status).toBe("completed");
  });
});

describe("GetSnapshotBlock", () => {
  it("GIVEN a completed snapshot WHEN a listed block is read THEN data, Checksum, ChecksumAlgorithm and DataLength match", async () => {
    const id = await snapshot({ 7: 77 });
    const { blocks } = await listAll(id);
    const got = await read(id, 7, blocks[0]?.BlockToken as string);
    expect(got.data.equals(blockOf(77))).toBe(true);
    expect(got.Checksum).toBe(sha(blockOf(77)));
    expect(got.ChecksumAlgorithm).toBe("SHA256");
    expect(got.DataLength).toBe(BLOCK_SIZE);
  });

  it("fails with ValidationException for a pending snapshot (neither read nor listed)", async () => {
    const s = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    await put(s.SnapshotId as string, 0, blockOf(1));
    await rejection(
      ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: s.SnapshotId })),
      ValidationException,
    );
    const other = await snapshot({ 0: 1 });
    const token = (await listAll(other)).blocks[0]?.BlockToken as string;
    await rejection(read(s.SnapshotId as string, 0, token), ValidationException);
  });

  it("fails with ValidationException INVALID_BLOCK_TOKEN for a token of another snapshot, another index, or garbage", async () => {
    const a = await snapshot({ 1: 1, 2: 2 });
    const b = await snapshot({ 1: 1 });
    const tokA1 = (await listAll(a)).blocks.find((x) => x.BlockIndex === 1)?.BlockToken as string;
    await rejection(read(b, 1, tokA1), ValidationException, "INVALID_BLOCK_TOKEN");
    await rejection(read(a, 2, tokA1), ValidationException, "INVALID_BLOCK_TOKEN");
    await rejection(
      read(a, 1, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
      ValidationException,
      "INVALID_BLOCK_TOKEN",
    );
  });

  it("fails with ValidationException INVALID_BLOCK_TOKEN once the token has expired (tokenTtlMs)", async () => {
    emu.setFaults({ tokenTtlMs: 300 });
    const id = await snapshot({ 5: 5 });
    const page = await ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: id }));
    expect((page.ExpiryTime as Date).getTime() - Date.now()).toBeLessThanOrEqual(300);
    const token = page.Blocks?.[0]?.BlockToken as string;
    expect((await read(id, 5, token)).data.equals(blockOf(5))).toBe(true);
    await new Promise((r) => setTimeout(r, 400));
    await rejection(read(id, 5, token), ValidationException, "INVALID_BLOCK_TOKEN");
  });
});

describe("ListSnapshotBlocks", () => {
  let big: string;
  beforeAll(async () => {
    const blocks: Record<number, number> = {};
    for (let i = 0; i < 250; i++) blocks[i * 3] = i % 251;
    big = await snapshot(blocks, { volumeSize: 1 });
  });

  it("GIVEN 250 blocks and MaxResults 100 THEN pages hold 100, 100, 50 sorted entries and the last has no NextToken", async () => {
    const sizes: number[] = [];
    const all: number[] = [];
    let token: string | undefined;
    do {
      const page = await ebs.send(
        new ListSnapshotBlocksCommand({ SnapshotId: big, MaxResults: 100, NextToken: token }),
      );
      expect(page.BlockSize).toBe(524288);
      expect(page.VolumeSize).toBe(1);
      expect(page.ExpiryTime).toBeInstanceOf(Date);
      sizes.push(page.Blocks?.length ?? 0);
      all.push(...(page.Blocks ?? []).map((b) => b.BlockIndex as number));
      token = page.NextToken;
    } while (token !== undefined);
    expect(sizes.slice(0, 3)).toEqual([100, 100, 50]);
    expect(sizes.slice(3).every((n) => n === 0)).toBe(true);
    expect(all).toEqual(Array.from({ length: 250 }, (_, i) => i * 3));
  });

  it("GIVEN MaxResults 100 and 10000 THEN both are accepted; fails with ValidationException for 99 and 10001", async () => {
    await ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: big, MaxResults: 100 }));
    const all = await ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: big, MaxResults: 10000 }));
    expect(all.Blocks).toHaveLength(250);
    await rejection(
      ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: big, MaxResults: 99 })),
      ValidationException,
    );
    await rejection(
      ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: big, MaxResults: 10001 })),
      ValidationException,
    );
  });

  it("GIVEN StartingBlockIndex between two blocks THEN the list starts at the next block; a NextToken overrides it", async () => {
    const page = await ebs.send(
      new ListSnapshotBlocksCommand({ SnapshotId: big, StartingBlockIndex: 301, MaxResults: 100 }),
    );
    expect(page.Blocks?.[0]?.BlockIndex).toBe(303);
    const next = await ebs.send(
      new ListSnapshotBlocksCommand({
        SnapshotId: big,
        StartingBlockIndex: 0,
        NextToken: page.NextToken,
        MaxResults: 100,
      }),
    );
    expect(next.Blocks?.[0]?.BlockIndex).toBe(603);
  });

  it("GIVEN StartingBlockIndex beyond the volume THEN the page is empty without NextToken", async () => {
    const page = await ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: big, StartingBlockIndex: 5000 }));
    expect(page.Blocks).toEqual([]);
    expect(page.NextToken).toBeUndefined();
  });

  it("fails with ValidationException INVALID_PAGE_TOKEN for a garbage token or one from another listing", async () => {
    const other = await snapshot({ 1: 1, 2: 2 });
    const page = await ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: big, MaxResults: 100 }));
    await rejection(
      ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: other, NextToken: page.NextToken })),
      ValidationException,
      "INVALID_PAGE_TOKEN",
    );
    await rejection(
      ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: big, NextToken: "Zm9vYmFy" })),
      ValidationException,
      "INVALID_PAGE_TOKEN",
    );
  });

  it("GIVEN a bounded scan window and far-apart blocks THEN empty pages carry a NextToken and a looping caller still gets every block", async () => {
    const small = await start({ listScanWindowBlocks: 1000 });
    const c = clientFor(small);
    try {
      const id = await snapshot({ 10: 1, 5000: 2, 9999: 3, 20000: 4 }, { volumeSize: 10, client: c });
      const first = await c.send(new ListSnapshotBlocksCommand({ SnapshotId: id, StartingBlockIndex: 1000 }));
      expect(first.Blocks).toEqual([]);
      expect(first.NextToken).toBeDefined();
      const { blocks, pages } = await listAll(id, 100, c);
      expect(blocks.map((b) => b.BlockIndex)).toEqual([10, 5000, 9999, 20000]);
      expect(pages).toBeGreaterThan(4);
      const changed = await changedAll(id, undefined, 100, c);
      expect(changed.blocks.map((b) => b.BlockIndex)).toEqual([10, 5000, 9999, 20000]);
      expect(changed.emptyPages).toBeGreaterThan(0);
    } finally {
      c.destroy();
    }
  });
});

describe("ListChangedBlocks and lineage", () => {
  it("GIVEN a child WHEN listed THEN it has every parent block plus its own, and reads the newest content", async () => {
    const parent = await snapshot({ 1: 1, 2: 2, 3: 3 });
    const child = await snapshot({ 2: 20, 4: 40 }, { parent });
    const { blocks } = await listAll(child);
    expect(blocks.map((b) => b.BlockIndex)).toEqual([1, 2, 3, 4]);
    const tok = (i: number) => blocks.find((b) => b.BlockIndex === i)?.BlockToken as string;
    expect((await read(child, 1, tok(1))).data.equals(blockOf(1))).toBe(true);
    expect((await read(child, 2, tok(2))).data.equals(blockOf(20))).toBe(true);
  });

  it("GIVEN parent and child THEN changed blocks are exactly the child's writes, identical rewrites included, with the tokens that exist", async () => {
    const parent = await snapshot({ 1: 1, 2: 2, 3: 3 });
    const child = await snapshot({ 2: 20, 3: 3, 5: 50 }, { parent }); // block 3 rewritten with the same content
    const { blocks } = await changedAll(child, parent);
    expect(blocks.map((b) => b.BlockIndex)).toEqual([2, 3, 5]);
    const b2 = blocks[0] as ChangedBlock;
    const b5 = blocks[2] as ChangedBlock;
    expect(b2.FirstBlockToken).toBeDefined();
    expect(b2.SecondBlockToken).toBeDefined();
    expect(b5.FirstBlockToken).toBeUndefined();
    expect(b5.SecondBlockToken).toBeDefined();
    expect((await read(parent, 2, b2.FirstBlockToken as string)).data.equals(blockOf(2))).toBe(true);
    expect((await read(child, 2, b2.SecondBlockToken as string)).data.equals(blockOf(20))).toBe(true);
  });

  it("GIVEN a grandchild THEN changes since the grandparent are the union of both generations' writes", async () => {
    const g0 = await snapshot({ 0: 1, 1: 1 });
    const g1 = await snapshot({ 1: 2, 7: 2 }, { parent: g0 });
    const g2 = await snapshot({ 9: 3 }, { parent: g1 });
    expect((await changedAll(g2, g0)).blocks.map((b) => b.BlockIndex)).toEqual([1, 7, 9]);
    expect((await changedAll(g2, g1)).blocks.map((b) => b.BlockIndex)).toEqual([9]);
    expect((await changedAll(g2, g2)).blocks).toEqual([]);
  });

  it("GIVEN two siblings THEN a block only in the first has only a FirstBlockToken", async () => {
    const root = await snapshot({ 0: 1 });
    const a = await snapshot({ 1: 1 }, { parent: root });
    const b = await snapshot({ 2: 2 }, { parent: root });
    const { blocks } = await changedAll(b, a);
    expect(blocks.map((x) => x.BlockIndex)).toEqual([1, 2]);
    expect(blocks[0]?.FirstBlockToken).toBeDefined();
    expect(blocks[0]?.SecondBlockToken).toBeUndefined();
    expect(blocks[1]?.FirstBlockToken).toBeUndefined();
    expect(blocks[1]?.SecondBlockToken).toBeDefined();
  });

  it("GIVEN no first snapshot THEN every block of the second is listed with its SecondBlockToken", async () => {
    const parent = await snapshot({ 1: 1 });
    const child = await snapshot({ 3: 3 }, { parent });
    const { blocks } = await changedAll(child);
    expect(blocks.map((b) => b.BlockIndex)).toEqual([1, 3]);
    expect(blocks.every((b) => b.SecondBlockToken !== undefined && b.FirstBlockToken === undefined)).toBe(
      true,
    );
  });

  it("fails with ValidationException UNRELATED_SNAPSHOTS for snapshots of different lineages", async () => {
    const a = await snapshot({ 1: 1 });
    const b = await snapshot({ 1: 1 });
    await rejection(
      ebs.send(new ListChangedBlocksCommand({ FirstSnapshotId: a, SecondSnapshotId: b })),
      ValidationException,
      "UNRELATED_SNAPSHOTS",
    );
  });

  it("GIVEN a deleted middle snapshot THEN its child keeps every block and its changes since the grandparent", async () => {
    const g0 = await snapshot({ 0: 1 });
    const g1 = await snapshot({ 1: 2 }, { parent: g0 });
    const g2 = await snapshot({ 2: 3 }, { parent: g1 });
    await emu.deleteSnapshot(g1);
    expect(emu.describeSnapshot(g1)).toBeUndefined();
    expect((await listAll(g2)).blocks.map((b) => b.BlockIndex)).toEqual([0, 1, 2]);
    expect((await changedAll(g2, g0)).blocks.map((b) => b.BlockIndex)).toEqual([1, 2]);
  });
});

describe("errors and malformed requests", () => {
  it("fails with AccessDeniedException (403) for a denied access key", async () => {
    emu.setFaults({ denyAccessKeyIds: ["AKIDDENIED"] });
    const denied = clientFor(emu, "AKIDDENIED");
    try {
      const err = await rejection(
        denied.send(new StartSnapshotCommand({ VolumeSize: 1 })),
        AccessDeniedException,
      );
      expect(err.$metadata.httpStatusCode).toBe(403);
      await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    } finally {
      denied.destroy();
    }
  });

  it("fails with ValidationException INVALID_SNAPSHOT_ID for a malformed id", async () => {
    await rejection(
      ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: "vol-123" })),
      ValidationException,
      "INVALID_SNAPSHOT_ID",
    );
  });

  it("fails with a 400 ValidationException JSON (never a 500) for unknown routes, bad JSON, bad numbers and odd methods", async () => {
    const id = await snapshot({ 1: 1 });
    const pending = (await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }))).SnapshotId as string;
    const probes: [string, string, RequestInit?][] = [
      ["GET", "/nothing/here"],
      ["POST", "/snapshots", { body: "{not json" }],
      ["POST", "/snapshots", { body: "[1,2]" }],
      ["POST", "/snapshots", { body: '{"VolumeSize":"8"}' }],
      ["POST", "/snapshots", { body: `{"Description":"${"x".repeat(300_000)}"}` }],
      ["GET", `/snapshots/${id}/blocks/abc?blockToken=x`],
      ["GET", `/snapshots/${id}/blocks/1`],
      ["GET", `/snapshots/${id}/blocks?maxResults=1e3`],
      ["GET", `/snapshots/${id}/blocks?startingBlockIndex=-4`],
      ["GET", `/snapshots/${id}/changedblocks?firstSnapshotId=nope`],
      ["DELETE", `/snapshots/${id}/blocks/1`],
      ["GET", "/snapshots/%E0%A4%A/blocks"],
      ["PUT", `/snapshots/${pending}/blocks/-1`, { body: "x" }],
      ["PUT", `/snapshots/${pending}/blocks/1`, { body: "x" }],
      [
        "PUT",
        `/snapshots/${pending}/blocks/1`,
        {
          body: "x",
          headers: {
            "x-amz-Data-Length": "524288",
            "x-amz-Checksum-Algorithm": "SHA256",
            "x-amz-Checksum": "AAAA",
          },
        },
      ],
      ["POST", `/snapshots/completion/${pending}`],
      ["POST", `/snapshots/completion/${pending}`, { headers: { "x-amz-ChangedBlocksCount": "x" } }],
    ];
    for (const [method, path, init] of probes) {
      const res = await fetch(`${emu.endpoint}${path}`, { method, ...init });
      expect(res.status, `${method} ${path}`).toBe(400);
      expect(res.headers.get("x-amzn-errortype"), `${method} ${path}`).toBe("ValidationException");
      const body = (await res.json()) as { Message?: string; Reason?: string };
      expect(body.Message?.length, `${method} ${path}`).toBeGreaterThan(5);
      expect(body.Reason).toBeDefined();
    }
  });

  it("fails with ServiceQuotaExceededException (402) above maxPendingSnapshots", async () => {
    emu.setFaults({ maxPendingSnapshots: emu.listSnapshots().filter((s) => s.status === "pending").length });
    const err = await rejection(
      ebs.send(new StartSnapshotCommand({ VolumeSize: 1 })),
      ServiceQuotaExceededException,
    );
    expect(err.$metadata.httpStatusCode).toBe(402);
  });
});

describe("fault knobs and counters", () => {
  let id: string;
  let token: string;
  beforeAll(async () => {
    id = await snapshot({ 0: 9 });
    token = (await listAll(id)).blocks[0]?.BlockToken as string;
  });

  it("GIVEN a per-snapshot quota of 20/s WHEN 60 reads arrive at once THEN the excess gets RequestThrottledException RESOURCE_LEVEL_THROTTLE", async () => {
    // The quota clock stands still, so no token refills however slowly the machine serves the 60 reads.
    const frozen = await start({ quotaClock: () => 0 });
    const client = clientFor(frozen);
    const sid = await snapshot({ 0: 9 }, { client });
    const tok = (await listAll(sid, undefined, client)).blocks[0]?.BlockToken as string;
    frozen.setFaults({ dataPlaneRpsPerSnapshot: 20 });
    const before = frozen.stats().throttledBy.snapshot;
    const results = await Promise.allSettled(
      Array.from({ length: 60 }, () =>
        client.send(new GetSnapshotBlockCommand({ SnapshotId: sid, BlockIndex: 0, BlockToken: tok })),
      ),
    );
    const ok = results.filter((r) => r.status === "fulfilled").length;
    const throttled = results.filter(
      (r) =>
        r.status === "rejected" &&
        r.reason instanceof RequestThrottledException &&
        r.reason.Reason === "RESOURCE_LEVEL_THROTTLE",
    ).length;
    expect(ok + throttled).toBe(60);
    expect(ok).toBe(20); // the burst: one second of quota
    expect(frozen.stats().throttledBy.snapshot - before).toBe(throttled);
    client.destroy();
  });

  it("GIVEN an account List quota of 5/s WHEN 20 lists arrive at once THEN the excess gets ThrottlingException (400)", async () => {
    // The quota clock stands still, so no token refills however slowly the machine serves the 20 lists.
    const frozen = await start({ quotaClock: () => 0 });
    const client = clientFor(frozen);
    const sid = await snapshot({ 0: 9 }, { client });
    const tok = (await listAll(sid, undefined, client)).blocks[0]?.BlockToken as string;
    frozen.setFaults({ listRpsPerAccount: 5 });
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, () => client.send(new ListSnapshotBlocksCommand({ SnapshotId: sid }))),
    );
    const rejected = results
      .filter((r) => r.status === "rejected")
      .map((r) => (r as PromiseRejectedResult).reason);
    expect(results.length - rejected.length).toBe(5);
    for (const e of rejected) {
      expect(e).toBeInstanceOf(EBSServiceException);
      expect(e.name).toBe("ThrottlingException");
      expect(e.$metadata.httpStatusCode).toBe(400);
    }
    // the data plane has its own quota: reads still pass
    await read(sid, 0, tok, client);
    client.destroy();
  });

  it("GIVEN a throttled account WHEN the SDK retries with backoff THEN the call eventually succeeds", async () => {
    emu.setFaults({ dataPlaneRpsPerAccount: 2, burstSeconds: 1 });
    const retrying = new EBSClient({
      endpoint: emu.endpoint,
      region: "us-east-1",
      credentials: { accessKeyId: "AKIDRETRY", secretAccessKey: "x" },
      maxAttempts: 8,
    });
    try {
      const results = await Promise.all(Array.from({ length: 4 }, () => read(id, 0, token, retrying)));
      expect(results.every((r) => r.data.equals(blockOf(9)))).toBe(true);
      expect(emu.stats().throttledBy.account).toBeGreaterThan(0);
    } finally {
      retrying.destroy();
    }
  });

  it("GIVEN latencyMs 150 and jitter 20 THEN every request is delayed by 150-170 ms (counted by the emulator)", async () => {
    emu.setFaults({ latencyMs: 150, latencyJitterMs: 20 });
    const before = emu.stats().injectedLatencyMs;
    await read(id, 0, token);
    await read(id, 0, token);
    const added = emu.stats().injectedLatencyMs - before;
    expect(added).toBeGreaterThanOrEqual(300);
    expect(added).toBeLessThanOrEqual(340);
  });

  it("GIVEN errorRate 1 on GetSnapshotBlock only THEN reads fail with InternalServerException (500) and lists still work", async () => {
    emu.setFaults({ errorRate: 1, errorOperations: ["GetSnapshotBlock"] });
    const before = emu.stats().errorsInjected;
    const err = await rejection(read(id, 0, token), InternalServerException);
    expect(err.$metadata.httpStatusCode).toBe(500);
    await ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: id }));
    expect(emu.stats().errorsInjected).toBe(before + 1);
  });

  it("GIVEN errorRate 0.5 THEN roughly half of 200 reads fail", async () => {
    emu.setFaults({ errorRate: 0.5 });
    const results = await Promise.allSettled(Array.from({ length: 200 }, () => read(id, 0, token)));
    const failed = results.filter((r) => r.status === "rejected").length;
    expect(failed).toBeGreaterThan(50);
    expect(failed).toBeLessThan(150);
  });

  it("GIVEN failAfterRequests 3 THEN three requests succeed and every later one fails with InternalServerException", async () => {
    emu.setFaults({ failAfterRequests: 3 });
    for (let i = 0; i < 3; i++) await read(id, 0, token);
    await rejection(read(id, 0, token), InternalServerException);
    await rejection(ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: id })), InternalServerException);
  });

  it("GIVEN maxConcurrentRequests 2 and slow requests WHEN 6 run at once THEN some get ConcurrentLimitExceededException", async () => {
    emu.setFaults({ maxConcurrentRequests: 2, latencyMs: 100 });
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => read(id, 0, token)));
    const limited = results.filter(
      (r) => r.status === "rejected" && r.reason instanceof ConcurrentLimitExceededException,
    ).length;
    expect(limited).toBeGreaterThan(0);
    expect(results.filter((r) => r.status === "fulfilled").length).toBeGreaterThan(0);
  });

  it("GIVEN requests THEN stats count them by operation, with block bytes", async () => {
    emu.resetStats();
    await read(id, 0, token);
    await ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: id }));
    const s = emu.stats();
    expect(s.requests.GetSnapshotBlock).toBe(1);
    expect(s.succeeded.GetSnapshotBlock).toBe(1);
    expect(s.requests.ListSnapshotBlocks).toBe(1);
    expect(s.blockBytesOut).toBe(BLOCK_SIZE);
    expect(s.inFlight).toBe(0);
  });

  it("GIVEN the admin HTTP API THEN another process can set faults, read stats and create synthetic snapshots", async () => {
    const admin = ebsAdmin(emu.endpoint);
    const f = await admin.setFaults({ errorRate: 1, errorOperations: ["ListSnapshotBlocks"] });
    expect(f.errorRate).toBe(1);
    await rejection(ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: id })), InternalServerException);
    await admin.resetFaults();
    const snap = await admin.createSyntheticSnapshot({
      volumeSizeGiB: 1,
      seed: "admin",
      writtenFraction: 0.5,
    });
    const described = await admin.describeSnapshot(snap.snapshotId);
    expect(described?.kind).toBe("synthetic");
    expect(described?.startTime).toBeInstanceOf(Date);
    expect((await admin.listSnapshots()).some((d) => d.snapshotId === snap.snapshotId)).toBe(true);
    expect(await admin.describeSnapshot("snap-0123456789abcdef9")).toBeUndefined();
    expect((await admin.stats()).requests.ListSnapshotBlocks).toBeGreaterThan(0);
    await expect(admin.setFaults({ latencyMs: -1 })).rejects.toThrow(/latencyMs/);
    await expect(admin.setFaults({ nonsense: 1 } as never)).rejects.toThrow(/unknown fault knob/);
  });
});

describe("synthetic snapshots", () => {
  it("GIVEN a 16 TiB synthetic lineage WHEN changed blocks are listed page by page THEN the count matches the predicate and sampled blocks verify", async () => {
    const root = await emu.createSyntheticSnapshot({
      volumeSizeGiB: 16384,
      seed: "conformance",
      writtenFraction: 0.002,
    });
    const child = await emu.createSyntheticSnapshot({
      parentSnapshotId: root.snapshotId,
      changedFraction: 0.004,
      zeroFraction: 0.1,
      compressibleFraction: 0.3,
    });
    const volumeBlocks = 16384 * 2048;
    expect(volumeBlocks).toBe(33_554_432);
    const pred = new SyntheticBlocks({
      seed: seedOf("conformance"),
      generation: 1,
      fraction: 0.004,
      zeroFraction: 0,
      compressibleFraction: 0,
    });
    const expected = pred.count(0, volumeBlocks);
    const { blocks, pages } = await changedAll(child.snapshotId, root.snapshotId, 10000);
    expect(blocks.length).toBe(expected);
    expect(expected).toBeGreaterThan(100_000);
    expect(pages).toBeGreaterThanOrEqual(Math.ceil(expected / 10000));
    for (let k = 1; k < blocks.length; k++) {
      expect((blocks[k] as ChangedBlock).BlockIndex as number).toBeGreaterThan(
        (blocks[k - 1] as ChangedBlock).BlockIndex as number,
      );
    }
    // sample: second-side reads verify; a block the parent also had carries a FirstBlockToken that reads other content
    for (const b of [blocks[0], blocks[Math.floor(blocks.length / 2)], blocks[blocks.length - 1]]) {
      const got = await read(child.snapshotId, b?.BlockIndex as number, b?.SecondBlockToken as string);
      expect(got.Checksum).toBe(sha(got.data));
    }
    const both = blocks.find((b) => b.FirstBlockToken !== undefined);
    expect(both).toBeDefined();
    const older = await read(root.snapshotId, both?.BlockIndex as number, both?.FirstBlockToken as string);
    const newer = await read(child.snapshotId, both?.BlockIndex as number, both?.SecondBlockToken as string);
    expect(older.Checksum).toBe(sha(older.data));
    expect(older.Checksum).not.toBe(newer.Checksum);
  });

  it("GIVEN a synthetic snapshot THEN ListSnapshotBlocks pages through it and the first page starts at the first written index", async () => {
    const s = await emu.createSyntheticSnapshot({ volumeSizeGiB: 64, seed: 7, writtenFraction: 0.05 });
    const pred = new SyntheticBlocks({
      seed: 7,
      generation: 0,
      fraction: 0.05,
      zeroFraction: 0,
      compressibleFraction: 0,
    });
    const { blocks } = await listAll(s.snapshotId, 10000);
    expect(blocks.length).toBe(pred.count(0, 64 * 2048));
    let first = 0;
    while (!pred.has(first)) first++;
    expect(blocks[0]?.BlockIndex).toBe(first);
  });

  it("GIVEN a stored child of a synthetic parent THEN it inherits the synthetic blocks and its changes are its writes", async () => {
    const parent = await emu.createSyntheticSnapshot({ volumeSizeGiB: 1, seed: 99, writtenFraction: 0.5 });
    const child = await snapshot({ 3: 33 }, { parent: parent.snapshotId });
    const changed = await changedAll(child, parent.snapshotId);
    expect(changed.blocks.map((b) => b.BlockIndex)).toEqual([3]);
    const listed = await listAll(child);
    const pred = new SyntheticBlocks({
      seed: 99,
      generation: 0,
      fraction: 0.5,
      zeroFraction: 0,
      compressibleFraction: 0,
    });
    expect(listed.blocks.length).toBe(pred.count(0, 2048) + (pred.has(3) ? 0 : 1));
    const inherited = listed.blocks.find((b) => b.BlockIndex !== 3) as {
      BlockIndex: number;
      BlockToken: string;
    };
    const got = await read(child, inherited.BlockIndex, inherited.BlockToken);
    expect(got.Checksum).toBe(sha(got.data));
  });

  it("GIVEN syntheticWorkers WHEN synthetic blocks are read THEN content equals what the event loop generates", async () => {
    const pooled = await start({ syntheticWorkers: 1 });
    const c = clientFor(pooled);
    try {
      const opts = {
        volumeSizeGiB: 1,
        seed: 1234,
        writtenFraction: 1,
        zeroFraction: 0.3,
        compressibleFraction: 0.3,
      };
      const a = await pooled.createSyntheticSnapshot(opts);
      const b = await emu.createSyntheticSnapshot(opts);
      const la =
        (await c.send(new ListSnapshotBlocksCommand({ SnapshotId: a.snapshotId, MaxResults: 100 }))).Blocks ??
        [];
      const lb =
        (await ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: b.snapshotId, MaxResults: 100 })))
          .Blocks ?? [];
      for (let k = 0; k < 12; k++) {
        const x = await read(a.snapshotId, la[k]?.BlockIndex as number, la[k]?.BlockToken as string, c);
        const y = await read(b.snapshotId, lb[k]?.BlockIndex as number, lb[k]?.BlockToken as string);
        expect(x.Checksum).toBe(sha(x.data));
        expect(x.data.equals(y.data)).toBe(true);
      }
    } finally {
      c.destroy();
    }
  });

  it("fails to create a synthetic snapshot with bad options, saying which", async () => {
    await expect(emu.createSyntheticSnapshot({ volumeSizeGiB: 70000 })).rejects.toThrow(/volumeSizeGiB/);
    await expect(emu.createSyntheticSnapshot({ volumeSizeGiB: 1, writtenFraction: 2 })).rejects.toThrow(
      /writtenFraction/,
    );
    await expect(emu.createSyntheticSnapshot({ volumeSizeGiB: 1, changedFraction: 0.1 })).rejects.toThrow(
      /parentSnapshotId/,
    );
  });
});

describe("snapshot Timeout", () => {
  it("GIVEN a pending snapshot idle past its Timeout THEN it is in error and refuses writes with WRITE_REQUEST_TIMEOUT", async () => {
    let offset = 0;
    const clocked = await start({ now: () => Date.now() + offset });
    const c = clientFor(clocked);
    try {
      const s = await c.send(new StartSnapshotCommand({ VolumeSize: 1, Timeout: 10 }));
      await put(s.SnapshotId as string, 0, blockOf(1), c);
      offset = 9 * 60_000;
      await put(s.SnapshotId as string, 1, blockOf(1), c); // activity resets the idle timer
      offset += 11 * 60_000;
      await rejection(
        put(s.SnapshotId as string, 2, blockOf(1), c),
        ValidationException,
        "WRITE_REQUEST_TIMEOUT",
      );
      expect(clocked.describeSnapshot(s.SnapshotId as string)?.status).toBe("error");
      await rejection(
        c.send(new CompleteSnapshotCommand({ SnapshotId: s.SnapshotId, ChangedBlocksCount: 2 })),
        ValidationException,
      );
    } finally {
      c.destroy();
    }
  });
});

describe("persistence", () => {
  it("GIVEN a dataDir WHEN the emulator restarts THEN completed snapshots, pending writes and block tokens survive", async () => {
    const dir = await mkdtemp(join(tmpdir(), "cgm-ebs-"));
    try {
      const a = await start({ dataDir: dir });
      const ca = clientFor(a);
      const done = await snapshot({ 1: 11, 2: 22 }, { client: ca });
      const synthetic = await a.createSyntheticSnapshot({ volumeSizeGiB: 1, seed: 5, writtenFraction: 0.1 });
      const pending = await ca.send(new StartSnapshotCommand({ VolumeSize: 1, ParentSnapshotId: done }));
      await put(pending.SnapshotId as string, 3, blockOf(33), ca);
      const tokenBefore = (await listAll(done, undefined, ca)).blocks[0]?.BlockToken as string;
      ca.destroy();
      await a.close();

      const b = await start({ dataDir: dir });
      await expect(startEbsEmulator({ dataDir: dir })).rejects.toThrow(/in use by another EBS emulator/);
      const cb = clientFor(b);
      try {
        expect((await read(done, 1, tokenBefore, cb)).data.equals(blockOf(11))).toBe(true);
        const listed = await listAll(done, undefined, cb);
        expect(listed.blocks.map((x) => x.BlockIndex)).toEqual([1, 2]);
        expect(b.describeSnapshot(synthetic.snapshotId)?.kind).toBe("synthetic");
        await put(pending.SnapshotId as string, 4, blockOf(44), cb);
        await cb.send(new CompleteSnapshotCommand({ SnapshotId: pending.SnapshotId, ChangedBlocksCount: 2 }));
        const changed = await changedAll(pending.SnapshotId as string, done, undefined, cb);
        expect(changed.blocks.map((x) => x.BlockIndex)).toEqual([3, 4]);
        const tok = changed.blocks[0]?.SecondBlockToken as string;
        expect((await read(pending.SnapshotId as string, 3, tok, cb)).data.equals(blockOf(33))).toBe(true);
      } finally {
        cb.destroy();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("CLI (the ebs-emulator bin)", () => {
  const bin = new URL("../bin/ebs-emulator.js", import.meta.url).pathname;

  /** Starts the bin; resolves with its first stdout line parsed, or rejects when it exits first. */
  async function serve(args: string[], env: Record<string, string>) {
    const child = spawn(process.execPath, [bin, ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const line = await new Promise<string>((resolve, reject) => {
      let buf = "";
      child.stdout.on("data", (d: Buffer) => {
        buf += d.toString();
        if (buf.includes("\n")) resolve(buf.split("\n")[0] as string);
      });
      child.once("exit", (code) => reject(new Error(`emulator exited early with ${code}`)));
    });
    const printed = JSON.parse(line) as { endpoint: string; port: number; dataDir: string | null };
    return { child, exited, printed };
  }

  /** Runs the bin to its end; its exit code, stdout and stderr. */
  async function run(args: string[], env: Record<string, string> = {}) {
    const child = spawn(process.execPath, [bin, ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
    return { code, stdout, stderr };
  }

  it("GIVEN CGM_EBS_* variables WHEN started THEN it prints the endpoint, applies the knobs and stops cleanly on SIGTERM", async () => {
    const { child, exited, printed } = await serve([], {
      CGM_EBS_PORT: "0",
      CGM_EBS_LIST_RPS_PER_ACCOUNT: "50",
      CGM_EBS_LATENCY_MS: "1",
    });
    try {
      expect(printed.endpoint).toBe(`http://127.0.0.1:${printed.port}`);
      expect(printed.dataDir).toBeNull();
      const faults = await ebsAdmin(printed.endpoint).faults();
      expect(faults.listRpsPerAccount).toBe(50);
      expect(faults.latencyMs).toBe(1);
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });

  it("GIVEN --port and --data-dir WHEN started THEN the options win over the environment variables", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ebs-cli-"));
    const { child, exited, printed } = await serve(["--port", "0", "--data-dir", dir], {
      CGM_EBS_PORT: "not-a-port",
      CGM_EBS_DATA_DIR: "",
    });
    try {
      expect(printed.dataDir).toBe(dir);
      expect((await ebsAdmin(printed.endpoint).listSnapshots()).length).toBe(0);
      child.kill("SIGINT");
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("GIVEN --help THEN it prints the usage with every option and exits 0 without listening", async () => {
    const { code, stdout } = await run(["--help"]);
    expect(code).toBe(0);
    for (const option of [
      "--host",
      "--port",
      "--data-dir",
      "--owner-id",
      "--list-scan-window",
      "--synthetic-workers",
    ]) {
      expect(stdout).toContain(option);
    }
  });

  it.each([
    [["--bogus"], {}, /Unknown option '--bogus'/],
    [["--port", "eighty"], {}, /--port must be a non-negative integer, got "eighty"/],
    [[], { CGM_EBS_PORT: "0", CGM_EBS_ERROR_RATE: "lots" }, /CGM_EBS_ERROR_RATE/],
  ])("GIVEN bad input %j %j THEN exit code 2 and one clear line", async (args, env, message) => {
    const { code, stderr } = await run(args, env as Record<string, string>);
    expect(code).toBe(2);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toMatch(/^ebs-emulator: /);
    expect(stderr).toMatch(message);
  });
});

describe("encrypted snapshots and KMS grants (@aws-sdk/client-ebs)", () => {
  const KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
  const OTHER_KEY = "arn:aws:kms:us-east-1:123456789012:key/0000abcd-12ab-34cd-56ef-1234567890ab";
  let kms: EbsEmulator;
  let granted: EBSClient;
  let stranger: EBSClient;

  beforeAll(async () => {
    kms = await start({ kmsGrants: { [KEY]: ["AKIDGRANTED"] } });
    granted = clientFor(kms, "AKIDGRANTED");
    stranger = clientFor(kms, "AKIDSTRANGER");
  });
  afterAll(() => {
    granted.destroy();
    stranger.destroy();
  });

  async function encryptedSnapshot(client: EBSClient, parent?: string): Promise<string> {
    const s = await client.send(
      new StartSnapshotCommand(
        parent
          ? { VolumeSize: 1, ParentSnapshotId: parent }
          : { VolumeSize: 1, Encrypted: true, KmsKeyArn: KEY },
      ),
    );
    const id = s.SnapshotId as string;
    await put(id, 3, blockOf(7), client);
    await client.send(new CompleteSnapshotCommand({ SnapshotId: id, ChangedBlocksCount: 1 }));
    return id;
  }

  it("GIVEN a snapshot encrypted with a key WHEN a caller granted that key reads it THEN it lists and reads as usual, and the snapshot reports the key", async () => {
    const id = await encryptedSnapshot(granted);
    const { blocks } = await listAll(id, undefined, granted);
    const out = await read(id, 3, blocks[0]?.BlockToken as string, granted);
    expect(out.data.equals(blockOf(7))).toBe(true);
    expect(kms.describeSnapshot(id)).toMatchObject({ encrypted: true, kmsKeyArn: KEY });
  });

  it("fails with AccessDeniedException (DEPENDENCY_ACCESS_DENIED) for every read by a caller not granted the key", async () => {
    const id = await encryptedSnapshot(granted);
    const { blocks } = await listAll(id, undefined, granted);
    const token = blocks[0]?.BlockToken as string;
    const denied = await rejection(
      stranger.send(new ListSnapshotBlocksCommand({ SnapshotId: id })),
      AccessDeniedException,
      "DEPENDENCY_ACCESS_DENIED",
    );
    expect(denied.message).toContain(`kms:Decrypt on ${KEY}`);
    expect(denied.$metadata.httpStatusCode).toBe(403);
    await rejection(
      stranger.send(new GetSnapshotBlockCommand({ SnapshotId: id, BlockIndex: 3, BlockToken: token })),
      AccessDeniedException,
      "DEPENDENCY_ACCESS_DENIED",
    );
    await rejection(
      stranger.send(new ListChangedBlocksCommand({ SecondSnapshotId: id })),
      AccessDeniedException,
      "DEPENDENCY_ACCESS_DENIED",
    );
  });

  it("GIVEN a child of an encrypted snapshot THEN it inherits the key: the stranger can neither write nor read it", async () => {
    const parent = await encryptedSnapshot(granted);
    const child = await encryptedSnapshot(granted, parent);
    expect(kms.describeSnapshot(child)?.kmsKeyArn).toBe(KEY);
    await rejection(
      stranger.send(new StartSnapshotCommand({ VolumeSize: 1, ParentSnapshotId: parent })),
      AccessDeniedException,
      "DEPENDENCY_ACCESS_DENIED",
    );
    await rejection(
      stranger.send(new ListChangedBlocksCommand({ FirstSnapshotId: parent, SecondSnapshotId: child })),
      AccessDeniedException,
    );
    expect((await changedAll(child, parent, undefined, granted)).blocks.map((b) => b.BlockIndex)).toEqual([
      3,
    ]);
  });

  it("GIVEN a synthetic snapshot encrypted with a key THEN grants apply to it too, and changed at run time", async () => {
    const synth = await kms.createSyntheticSnapshot({
      volumeSizeGiB: 1,
      writtenFraction: 0.01,
      kmsKeyArn: OTHER_KEY,
    });
    await rejection(
      granted.send(new ListSnapshotBlocksCommand({ SnapshotId: synth.snapshotId })),
      AccessDeniedException,
    );
    await ebsAdmin(kms.endpoint).setKmsGrants({ [KEY]: ["AKIDGRANTED"], [OTHER_KEY]: ["AKIDGRANTED"] });
    expect((await listAll(synth.snapshotId, undefined, granted)).blocks.length).toBeGreaterThan(0);
    kms.setKmsGrants({ [KEY]: ["AKIDGRANTED"] });
  });

  it("GIVEN an unencrypted snapshot THEN no grant is needed", async () => {
    const id = await snapshot({ 1: 1 }, { client: stranger });
    expect((await listAll(id, undefined, stranger)).blocks).toHaveLength(1);
  });

  it("fails with ValidationException for KmsKeyArn without Encrypted, and refuses malformed grants", async () => {
    await rejection(
      granted.send(new StartSnapshotCommand({ VolumeSize: 1, KmsKeyArn: KEY })),
      ValidationException,
      "INVALID_PARAMETER_VALUE",
    );
    expect(() => kms.setKmsGrants({ "alias/x": ["A"] })).toThrow(/KMS key ARNs/);
    expect(() => kms.setKmsGrants({ [KEY]: "AKIDGRANTED" as unknown as string[] })).toThrow(
      /list of access key ids/,
    );
  });
});
