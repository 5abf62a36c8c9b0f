/**
 * Segment uploads with a CRC-32 full-object checksum against the S3 target: S3 verifies the body
 * against the checksum, and with `usePrecomputedPayloadHash` the request is signed UNSIGNED-PAYLOAD
 * (no SHA-256 pass over the body on the client).
 */
import { crc32 } from "node:zlib";
import { GetObjectCommand, HeadObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { usePrecomputedPayloadHash } from "#adapters/s3-payload-hash.ts";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { type S3TestBucket, s3Client, s3TestBucket } from "../support/s3.ts";

let t: S3TestBucket;
let client: S3Client;
let store: S3ObjectStore;
const sent: Record<string, string>[] = [];

const crcOf = (b: Uint8Array) => {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, crc32(b), false);
  return out;
};

beforeAll(async () => {
  t = await s3TestBucket();
  client = usePrecomputedPayloadHash(s3Client());
  client.middlewareStack.add(
    (next) => async (args) => {
      const headers = (args.request as { headers?: Record<string, string> }).headers;
      if (headers) sent.push({ ...headers });
      return next(args);
    },
    { step: "finalizeRequest", name: "recordSignedHeaders", priority: "low" },
  );
  store = new S3ObjectStore({ client, bucket: t.bucket });
});

afterAll(async () => {
  client?.destroy();
  await t?.cleanup();
});

describe("CRC-32 segment checksum", () => {
  it("GIVEN a body and its CRC-32 WHEN put THEN S3 stores it, keeps the checksum, and the request was UNSIGNED-PAYLOAD", async () => {
    const body = new Uint8Array(3 * 1024 * 1024).map((_, i) => (i * 7919) & 0xff);
    const key = `${t.prefix}crc-ok`;
    sent.length = 0;
    await store.put(key, body, { checksumCrc32: crcOf(body) });
    const put = sent.find((h) => h["x-amz-checksum-crc32"] !== undefined);
    expect(put?.["x-amz-content-sha256"]).toBe("UNSIGNED-PAYLOAD");
    const got = await client.send(new GetObjectCommand({ Bucket: t.bucket, Key: key }));
    expect(Buffer.from(await got.Body!.transformToByteArray()).equals(Buffer.from(body))).toBe(true);
    const head = await client.send(
      new HeadObjectCommand({ Bucket: t.bucket, Key: key, ChecksumMode: "ENABLED" }),
    );
    expect(head.ChecksumCRC32).toBe(Buffer.from(crcOf(body)).toString("base64"));
  });

  it("fails with BadDigest when the body does not match its CRC-32, and stores nothing", async () => {
    const body = new Uint8Array(1024 * 1024).fill(7);
    const wrong = crcOf(body);
    wrong[0]! ^= 1;
    const key = `${t.prefix}crc-bad`;
    await expect(store.put(key, body, { checksumCrc32: wrong })).rejects.toMatchObject({
      name: expect.stringMatching(/BadDigest|InvalidRequest|XAmzContentChecksumMismatch/),
    });
    expect(await store.head(key)).toBeUndefined();
  });
});
