/**
 * Test helper: an S3 client on the suite's S3 target and a versioned bucket of the test file's own.
 * Each call gives a fresh key prefix, so tests never see each other's objects.
 */
import { randomBytes } from "node:crypto";
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { inject } from "vitest";

export interface S3TestBucket {
  readonly client: S3Client;
  readonly bucket: string;
  /** A unique key prefix for this caller, ending in "/". */
  readonly prefix: string;
  readonly endpoint: string | undefined;
  /** Deletes every version under the prefix (and the bucket's own objects are left to the server's teardown). */
  cleanup(): Promise<void>;
}

let shared: { client: S3Client; bucket: string } | undefined;

export function s3Client(): S3Client {
  const target = inject("s3");
  return new S3Client({
    ...(target.endpoint ? { endpoint: target.endpoint } : {}),
    region: target.region,
    forcePathStyle: target.forcePathStyle,
    ...(target.accessKeyId && target.secretAccessKey
      ? { credentials: { accessKeyId: target.accessKeyId, secretAccessKey: target.secretAccessKey } }
      : {}),
  });
}

export async function s3TestBucket(): Promise<S3TestBucket> {
  const target = inject("s3");
  if (!shared) {
    const client = s3Client();
    let bucket = target.bucket;
    if (!bucket) {
      bucket = `cgm-test-${randomBytes(6).toString("hex")}`;
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
      await client.send(
        new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: "Enabled" } }),
      );
    }
    shared = { client, bucket };
  }
  const { client, bucket } = shared;
  const prefix = `t-${randomBytes(6).toString("hex")}/`;
  return {
    client,
    bucket,
    prefix,
    endpoint: target.endpoint,
    async cleanup() {
      let keyMarker: string | undefined;
      let versionMarker: string | undefined;
      for (;;) {
        const page = await client.send(
          new ListObjectVersionsCommand({
            Bucket: bucket,
            Prefix: prefix,
            KeyMarker: keyMarker,
            VersionIdMarker: versionMarker,
          }),
        );
        const objects = [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])].map((v) => ({
          Key: v.Key!,
          VersionId: v.VersionId,
        }));
        if (objects.length > 0) {
          await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: objects } }));
        }
        if (!page.IsTruncated) break;
        keyMarker = page.NextKeyMarker;
        versionMarker = page.NextVersionIdMarker;
      }
    },
  };
}
