/**
 * Conformance of the S3 target (the local server, or whatever CGM_S3_ENDPOINT / CGM_S3_BUCKET name) with
 * every S3 behaviour cgmirror's commit protocol and storage format rely on.
 */
import { createHash, randomBytes } from "node:crypto";
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutObjectCommand,
  type S3Client,
  S3ServiceException,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type S3TestBucket, s3TestBucket } from "../support/s3.ts";

let t: S3TestBucket;
let s3: S3Client;
const key = (name: string) => `${t.prefix}${name}`;

beforeAll(async () => {
  t = await s3TestBucket();
  s3 = t.client;
});
afterAll(async () => {
  await t.cleanup();
});

async function body(k: string, versionId?: string, range?: string): Promise<Buffer> {
  const out = await s3.send(
    new GetObjectCommand({ Bucket: t.bucket, Key: k, VersionId: versionId, Range: range }),
  );
  return Buffer.from(await out.Body!.transformToByteArray());
}

async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (err) {
    if (err instanceof S3ServiceException) return err.$metadata.httpStatusCode ?? -1;
    throw err;
  }
}

describe("versioning", () => {
  it("GIVEN two puts to one key WHEN listed THEN both versions exist, newest current, each readable by id", async () => {
    const k = key("versioned");
    const v1 = await s3.send(new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: "first" }));
    const v2 = await s3.send(new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: "second" }));
    expect(v1.VersionId).toBeTruthy();
    expect(v2.VersionId).toBeTruthy();
    expect(v2.VersionId).not.toBe(v1.VersionId);

    const listed = await s3.send(new ListObjectVersionsCommand({ Bucket: t.bucket, Prefix: k }));
    const versions = (listed.Versions ?? []).filter((v) => v.Key === k);
    expect(versions.map((v) => v.VersionId).sort()).toEqual([v1.VersionId, v2.VersionId].sort());
    expect(versions.find((v) => v.IsLatest)?.VersionId).toBe(v2.VersionId);

    expect((await body(k, v1.VersionId)).toString()).toBe("first");
    expect((await body(k, v2.VersionId)).toString()).toBe("second");
    expect((await body(k)).toString()).toBe("second");
  });

  it("GIVEN two versions WHEN the newest is deleted by VersionId THEN the previous version is current again", async () => {
    const k = key("revert");
    const v1 = await s3.send(new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: "previous group" }));
    const v2 = await s3.send(new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: "reverted run" }));
    await s3.send(new DeleteObjectCommand({ Bucket: t.bucket, Key: k, VersionId: v2.VersionId }));

    expect((await body(k)).toString()).toBe("previous group");
    const head = await s3.send(new HeadObjectCommand({ Bucket: t.bucket, Key: k }));
    expect(head.VersionId).toBe(v1.VersionId);
    const listed = await s3.send(new ListObjectVersionsCommand({ Bucket: t.bucket, Prefix: k }));
    expect((listed.Versions ?? []).map((v) => v.VersionId)).toEqual([v1.VersionId]);
    expect(listed.DeleteMarkers ?? []).toEqual([]);
  });

  it("GIVEN a delete without VersionId WHEN the delete marker is removed THEN the object is back", async () => {
    const k = key("marker");
    await s3.send(new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: "kept" }));
    const del = await s3.send(new DeleteObjectCommand({ Bucket: t.bucket, Key: k }));
    expect(del.DeleteMarker).toBe(true);
    expect(await statusOf(s3.send(new GetObjectCommand({ Bucket: t.bucket, Key: k })))).toBe(404);

    await s3.send(new DeleteObjectCommand({ Bucket: t.bucket, Key: k, VersionId: del.VersionId }));
    expect((await body(k)).toString()).toBe("kept");
  });
});

describe("large objects", () => {
  it("GIVEN a 64 MiB multipart upload WHEN read whole and by range THEN the bytes are exact", async () => {
    const k = key("multipart");
    const partSize = 16 * 1024 * 1024;
    const parts = Array.from({ length: 4 }, () => randomBytes(partSize));
    const whole = Buffer.concat(parts);
    const created = await s3.send(new CreateMultipartUploadCommand({ Bucket: t.bucket, Key: k }));
    const etags = [];
    for (const [i, part] of parts.entries()) {
      const up = await s3.send(
        new UploadPartCommand({
          Bucket: t.bucket,
          Key: k,
          UploadId: created.UploadId,
          PartNumber: i + 1,
          Body: part,
        }),
      );
      etags.push({ ETag: up.ETag, PartNumber: i + 1 });
    }
    const done = await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: t.bucket,
        Key: k,
        UploadId: created.UploadId,
        MultipartUpload: { Parts: etags },
      }),
    );
    expect(done.VersionId).toBeTruthy();

    const head = await s3.send(new HeadObjectCommand({ Bucket: t.bucket, Key: k }));
    expect(head.ContentLength).toBe(64 * 1024 * 1024);
    const all = await body(k);
    expect(createHash("sha256").update(all).digest("hex")).toBe(
      createHash("sha256").update(whole).digest("hex"),
    );

    const start = partSize - 1000; // a range that spans a part boundary
    const ranged = await body(k, undefined, `bytes=${start}-${start + 524287}`);
    expect(ranged.length).toBe(524288);
    expect(ranged.equals(whole.subarray(start, start + 524288))).toBe(true);
  });
});

describe("conditional writes", () => {
  it("GIVEN an object WHEN PutObject carries If-Match with its ETag THEN it succeeds, and with a stale ETag it fails with 412", async () => {
    const k = key("head");
    const first = await s3.send(new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: "gen-1" }));
    const second = await s3.send(
      new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: "gen-2", IfMatch: first.ETag }),
    );
    expect(second.ETag).toBeTruthy();

    const stale = await statusOf(
      s3.send(new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: "gen-3", IfMatch: first.ETag })),
    );
    expect(stale).toBe(412);
    expect((await body(k)).toString()).toBe("gen-2");
  });

  it("fails with 404 or 412 when If-Match names an object that does not exist, and writes nothing", async () => {
    const k = key("absent");
    const status = await statusOf(
      s3.send(new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: "x", IfMatch: '"0123456789abcdef"' })),
    );
    expect([404, 412]).toContain(status);
    expect(await statusOf(s3.send(new HeadObjectCommand({ Bucket: t.bucket, Key: k })))).toBe(404);
  });

  it("fails with 412 when If-None-Match: * meets an existing object", async () => {
    const k = key("lock");
    await s3.send(new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: "holder", IfNoneMatch: "*" }));
    const again = await statusOf(
      s3.send(new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: "intruder", IfNoneMatch: "*" })),
    );
    expect(again).toBe(412);
    expect((await body(k)).toString()).toBe("holder");
  });

  it("GIVEN 32 concurrent If-None-Match: * racers on one key THEN exactly one wins and 31 get 412", async () => {
    const k = key("race");
    const statuses = await Promise.all(
      Array.from({ length: 32 }, (_, i) =>
        statusOf(
          s3.send(new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: `racer-${i}`, IfNoneMatch: "*" })),
        ),
      ),
    );
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.filter((s) => s === 412)).toHaveLength(31);
    const winner = statuses.indexOf(200);
    expect((await body(k)).toString()).toBe(`racer-${winner}`);
    const listed = await s3.send(new ListObjectVersionsCommand({ Bucket: t.bucket, Prefix: k }));
    expect((listed.Versions ?? []).filter((v) => v.Key === k)).toHaveLength(1);
  });
});

describe("checksums", () => {
  it("GIVEN x-amz-checksum-sha256 on PutObject THEN it is accepted and returned on PUT, HEAD and GET", async () => {
    const k = key("checksum");
    const data = randomBytes(524288);
    const sha = createHash("sha256").update(data).digest("base64");
    const put = await s3.send(
      new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: data, ChecksumSHA256: sha }),
    );
    expect(put.ChecksumSHA256).toBe(sha);
    const head = await s3.send(new HeadObjectCommand({ Bucket: t.bucket, Key: k, ChecksumMode: "ENABLED" }));
    expect(head.ChecksumSHA256).toBe(sha);
    const got = await s3.send(new GetObjectCommand({ Bucket: t.bucket, Key: k, ChecksumMode: "ENABLED" }));
    expect(got.ChecksumSHA256).toBe(sha);
    expect(Buffer.from(await got.Body!.transformToByteArray()).equals(data)).toBe(true);
  });

  it("fails with 400 when x-amz-checksum-sha256 does not match the body, and stores nothing", async () => {
    const k = key("bad-checksum");
    const data = randomBytes(1024);
    const wrong = createHash("sha256").update("something else").digest("base64");
    const status = await statusOf(
      s3.send(new PutObjectCommand({ Bucket: t.bucket, Key: k, Body: data, ChecksumSHA256: wrong })),
    );
    expect(status).toBe(400);
    expect(await statusOf(s3.send(new HeadObjectCommand({ Bucket: t.bucket, Key: k })))).toBe(404);
  });
});
