/**
 * S3ObjectStore.get reads a body straight into one buffer of its Content-Length. A body that does not
 * match its Content-Length cannot come out of the local S3 server (Node's HTTP parser stops at the
 * length, a short body is a reset), so these cases answer from a transport stub; the real server's
 * whole and ranged reads are in test/integration/repo-s3.test.ts. A caller may give the buffer the
 * body is read into (`into`: restore reads into reused buffers its hash threads take).
 */
import { Readable } from "node:stream";
import { S3Client } from "@aws-sdk/client-s3";
import { describe, expect, it } from "vitest";
import { S3ObjectStore } from "#adapters/s3-store.ts";

function storeAnswering(contentLength: number, chunks: Buffer[]): S3ObjectStore {
  const client = new S3Client({
    region: "us-east-1",
    endpoint: "http://127.0.0.1:9",
    forcePathStyle: true,
    credentials: { accessKeyId: "x", secretAccessKey: "y" },
    requestHandler: {
      handle: async () => ({
        response: {
          statusCode: 200,
          headers: { "content-length": String(contentLength), etag: '"e"' },
          body: Readable.from(chunks),
        },
      }),
    },
  });
  return new S3ObjectStore({ client, bucket: "b" });
}

describe("S3ObjectStore.get body", () => {
  it("GIVEN a body in several chunks WHEN read THEN it is one buffer of exactly those bytes", async () => {
    const chunks = [Buffer.alloc(70_000, 1), Buffer.alloc(3, 2), Buffer.alloc(65_536, 3)];
    const got = await storeAnswering(135_539, chunks).get("k");
    expect(Buffer.from(got.body).equals(Buffer.concat(chunks))).toBe(true);
    expect(got.size).toBe(135_539);
  });

  it("GIVEN a body longer than its Content-Length WHEN read THEN it fails naming the key", async () => {
    await expect(storeAnswering(10, [Buffer.alloc(8), Buffer.alloc(8)]).get("seg/k")).rejects.toThrow(
      "GetObject seg/k: the body is longer than its Content-Length of 10 bytes",
    );
  });

  it("GIVEN a body shorter than its Content-Length WHEN read THEN it fails naming the key", async () => {
    await expect(storeAnswering(10, [Buffer.alloc(4)]).get("seg/k")).rejects.toThrow(
      "GetObject seg/k: received 4 bytes of a Content-Length of 10",
    );
  });

  it("GIVEN a buffer to read into WHEN read THEN the body is a view of its start holding exactly those bytes", async () => {
    const chunks = [Buffer.alloc(5000, 7), Buffer.alloc(1, 8), Buffer.alloc(3000, 9)];
    const into = new Uint8Array(new SharedArrayBuffer(10_000));
    const asked: number[] = [];
    const got = await storeAnswering(8001, chunks).get("k", {
      into: (n) => {
        asked.push(n);
        return into;
      },
    });
    expect(asked).toEqual([8001]);
    expect(got.body.buffer).toBe(into.buffer);
    expect(got.body.byteOffset).toBe(0);
    expect(Buffer.from(got.body).equals(Buffer.concat(chunks))).toBe(true);
  });

  it("GIVEN a buffer to read into smaller than the body WHEN read THEN it fails naming the key and the sizes", async () => {
    await expect(
      storeAnswering(10, [Buffer.alloc(10)]).get("seg/k", { into: () => new Uint8Array(9) }),
    ).rejects.toThrow("GetObject seg/k: the buffer given for the body is 9 bytes, not 10");
  });

  it("GIVEN an empty body WHEN read THEN it is empty", async () => {
    expect((await storeAnswering(0, []).get("k")).body.byteLength).toBe(0);
  });
});
