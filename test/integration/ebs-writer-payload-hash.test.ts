/**
 * EbsSnapshotWriter signs PutSnapshotBlock with the block's checksum as SigV4's payload hash: the
 * signer does not hash the 512 KiB body again, the header is the body's SHA-256 (so the signature is
 * the one the signer would make itself), and a checksum that is not the body's fails the put and
 * writes nothing. Against the EBS emulator over HTTP, with the unmodified SDK client.
 */
import { createHash, createHmac, type Hash, type Hmac, randomBytes } from "node:crypto";
import { CompleteSnapshotCommand, EBSClient } from "@aws-sdk/client-ebs";
import { type EbsEmulator, ebsAdmin, startEbsEmulator } from "@cgmirror/ebs-emulator";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { EbsSnapshotWriter } from "#adapters/ebs-writer.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { BlockSourceFatalError } from "#core/ports/block-source.ts";
import { emulatorSnapshotCatalog } from "../../local/snapshot-catalog.ts";
import { readSnapshot } from "../support/snapshot-readback.ts";

const bytes = (d: string | ArrayBuffer | ArrayBufferView): Buffer =>
  typeof d === "string"
    ? Buffer.from(d)
    : ArrayBuffer.isView(d)
      ? Buffer.from(d.buffer, d.byteOffset, d.byteLength)
      : Buffer.from(d);

/** The lengths of everything the client's signer hashed (its `sha256` constructor). */
const hashed: number[] = [];
class CountingSha256 {
  readonly #h: Hash | Hmac;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.#h = secret === undefined ? createHash("sha256") : createHmac("sha256", bytes(secret));
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    const b = bytes(data);
    hashed.push(b.byteLength);
    this.#h.update(b);
  }
  async digest(): Promise<Uint8Array> {
    return this.#h.digest();
  }
}

/** The headers of each request as sent (after signing), by HTTP method. */
const sent: Array<{ method: string; headers: Record<string, string>; body: unknown }> = [];

let emulator: EbsEmulator;
let client: EBSClient;
let writer: EbsSnapshotWriter;

beforeAll(async () => {
  emulator = await startEbsEmulator({});
  client = new EBSClient({
    endpoint: emulator.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "AKIDPAYLOADHASH", secretAccessKey: "x" },
    maxAttempts: 1,
    sha256: CountingSha256,
  });
  client.middlewareStack.add(
    (next) => (args) => {
      const r = args.request as { method: string; headers: Record<string, string>; body: unknown };
      sent.push({ method: r.method, headers: { ...r.headers }, body: r.body });
      return next(args);
    },
    { step: "deserialize", name: "recordSentRequest" },
  );
  writer = new EbsSnapshotWriter({ client, catalog: emulatorSnapshotCatalog(ebsAdmin(emulator.endpoint)) });
});

afterAll(async () => {
  client.destroy();
  await emulator.close();
});

beforeEach(() => {
  hashed.length = 0;
  sent.length = 0;
});

const b64 = (b: Uint8Array) => createHash("sha256").update(b).digest("base64");
const hex = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** A new pending 1 GiB snapshot. */
async function newSnapshot(description: string): Promise<string> {
  const started = await writer.startSnapshot({
    volumeSizeGiB: 1,
    description,
    tags: {},
    clientToken: `ph-${randomBytes(8).toString("hex")}`,
  });
  return started.snapshotId;
}

describe("PutSnapshotBlock's payload hash", () => {
  it("GIVEN blocks and their SHA-256 WHEN put THEN each is signed with its checksum as payload hash, no body is hashed by the signer, and EBS holds the blocks", async () => {
    const snapshotId = await newSnapshot("payload hash");
    const blocks = [randomBytes(BLOCK_SIZE), randomBytes(BLOCK_SIZE), Buffer.alloc(BLOCK_SIZE, 7)];
    hashed.length = 0;
    sent.length = 0;
    for (const [i, data] of blocks.entries())
      await writer.putBlock({ snapshotId, blockIndex: i * 3, data, checksum: b64(data) });

    const puts = sent.filter((r) => r.method === "PUT");
    expect(puts).toHaveLength(3);
    for (const [i, put] of puts.entries()) {
      expect(put.headers["x-amz-content-sha256"]).toBe(hex(blocks[i]!));
      expect(put.headers.authorization).toMatch(/SignedHeaders=[^,]*x-amz-content-sha256/);
    }
    // the signer hashed canonical requests and keys (a few hundred bytes), never a 512 KiB body
    expect(hashed.length).toBeGreaterThan(0);
    expect(Math.max(...hashed)).toBeLessThan(BLOCK_SIZE);

    // CompleteSnapshot's Checksum is an aggregate, not its body's hash: it is not used as one
    const aggregate = createHash("sha256")
      .update(Buffer.concat(blocks.map((b) => createHash("sha256").update(b).digest())))
      .digest("base64");
    await client.send(
      new CompleteSnapshotCommand({
        SnapshotId: snapshotId,
        ChangedBlocksCount: 3,
        Checksum: aggregate,
        ChecksumAlgorithm: "SHA256",
        ChecksumAggregationMethod: "LINEAR",
      }),
    );
    const complete = sent.find((r) => r.method === "POST")!;
    expect(complete.headers["x-amz-content-sha256"]).toBe(hex(new Uint8Array(0)));

    const back = await readSnapshot(client, snapshotId);
    expect([...back.keys()].sort((a, b) => a - b)).toEqual([0, 3, 6]);
    for (const [i, data] of blocks.entries()) expect(Buffer.compare(back.get(i * 3)!, data)).toBe(0);
  });

  it("GIVEN a checksum that is another block's WHEN put THEN the put fails (fatal) and writes nothing", async () => {
    const snapshotId = await newSnapshot("payload hash mismatch");
    const data = randomBytes(BLOCK_SIZE);
    const other = randomBytes(BLOCK_SIZE);
    const err = await writer.putBlock({ snapshotId, blockIndex: 1, data, checksum: b64(other) }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BlockSourceFatalError);
    expect(String((err as Error).message)).toMatch(/signature|SHA-256/i);
    await writer.putBlock({ snapshotId, blockIndex: 2, data, checksum: b64(data) });
    await writer.completeSnapshot(snapshotId, 1);
    const back = await readSnapshot(client, snapshotId);
    expect([...back.keys()]).toEqual([2]);
  });

  it("GIVEN a client used by two writers THEN the middleware is added once", () => {
    const again = new EbsSnapshotWriter({
      client,
      catalog: emulatorSnapshotCatalog(ebsAdmin(emulator.endpoint)),
    });
    expect(again).toBeDefined();
    const names = client.middlewareStack
      .identify()
      .filter((m) => m.startsWith("cgmirrorChecksumAsPayloadHash"));
    expect(names).toHaveLength(1);
  });
});
