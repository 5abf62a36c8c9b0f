/**
 * S3 Object Lock through the S3 adapter over HTTP (the local S3 server, Versity S3 Gateway on its
 * posix backend, with a bucket created Object Lock enabled): PutObjectRetention / GetObjectRetention,
 * and a delete of a version under retention reported as ObjectLockedError (the others deleted).
 * GOVERNANCE locks, so the bucket can be emptied with a bypass afterwards.
 */
import { randomBytes } from "node:crypto";
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { createRepo, keys } from "#core/format/layout.ts";
import { ObjectLockedError, type ObjectVersionRef } from "#core/ports/object-store.ts";
import { generationObjects, isGenerationLocked, lockGeneration } from "#core/protocol/object-lock.ts";
import { twoGenerations } from "../support/repo-scenarios.ts";
import { s3Client } from "../support/s3.ts";

const client = s3Client();
const locked = `cgm-lock-${randomBytes(5).toString("hex")}`;
const plain = `cgm-nolock-${randomBytes(5).toString("hex")}`;
let store: S3ObjectStore;

beforeAll(async () => {
  await client.send(new CreateBucketCommand({ Bucket: locked, ObjectLockEnabledForBucket: true }));
  await client.send(new CreateBucketCommand({ Bucket: plain }));
  await client.send(
    new PutBucketVersioningCommand({ Bucket: plain, VersioningConfiguration: { Status: "Enabled" } }),
  );
  store = new S3ObjectStore({ client, bucket: locked });
});

afterAll(async () => {
  // GOVERNANCE locks: removed with the bypass (the local server's data directory goes at teardown).
  const page = await client.send(new ListObjectVersionsCommand({ Bucket: locked }));
  for (const v of page.Versions ?? []) {
    await client
      .send(
        new DeleteObjectCommand({
          Bucket: locked,
          Key: v.Key!,
          VersionId: v.VersionId,
          BypassGovernanceRetention: true,
        }),
      )
      .catch(() => {});
  }
});

describe("Object Lock on the local S3 server", () => {
  it("GIVEN a version locked in GOVERNANCE mode THEN its retention reads back, and deletes keep it while deleting the rest", async () => {
    const a = await store.put("ol/a", new Uint8Array([1, 2, 3]));
    const b = await store.put("ol/b", new Uint8Array([4, 5, 6]));
    const refA: ObjectVersionRef = { key: "ol/a", versionId: a.versionId! };
    const refB: ObjectVersionRef = { key: "ol/b", versionId: b.versionId! };
    const until = new Date(Math.ceil((Date.now() + 86_400_000) / 1000) * 1000);
    await store.putRetention(refA, { mode: "GOVERNANCE", retainUntil: until });

    const got = await store.getRetention(refA);
    expect(got?.mode).toBe("GOVERNANCE");
    expect(got?.retainUntil.getTime()).toBe(until.getTime());
    expect(await store.getRetention(refB)).toBeUndefined();

    await expect(store.delete("ol/a", { versionId: refA.versionId })).rejects.toThrow(ObjectLockedError);
    const kept = await store.deleteVersions([refA, refB]).then(
      () => [] as readonly ObjectVersionRef[],
      (e: unknown) => {
        if (e instanceof ObjectLockedError) return e.refs;
        throw e;
      },
    );
    expect(kept).toEqual([refA]);
    expect((await store.head("ol/a", { versionId: refA.versionId }))?.versionId).toBe(refA.versionId);
    expect(await store.head("ol/b", { versionId: refB.versionId })).toBeUndefined();
  });

  it("GIVEN a bucket created without Object Lock THEN setting a retention is refused", async () => {
    const other = new S3ObjectStore({ client, bucket: plain });
    const put = await other.put("x", new Uint8Array([1]));
    await expect(
      other.putRetention(
        { key: "x", versionId: put.versionId! },
        { mode: "GOVERNANCE", retainUntil: new Date(Date.now() + 86_400_000) },
      ),
    ).rejects.toThrow();
  });

  it("GIVEN two committed generations WHEN each is locked THEN exactly their objects carry the retention, HEAD none, and locking again changes nothing", async () => {
    const repo = createRepo({ store, prefix: "repo", group: "g1" });
    await twoGenerations(repo);
    const policy = { mode: "GOVERNANCE" as const, retentionDays: 1 };
    expect(await isGenerationLocked(repo, 1)).toBe(false);
    const first = await lockGeneration(repo, 1, policy);
    const second = await lockGeneration(repo, 2, policy);
    expect(first.locked).toBe(first.objects);
    expect(await isGenerationLocked(repo, 1)).toBe(true);
    const expected = new Set(
      [...(await generationObjects(repo, 1)), ...(await generationObjects(repo, 2))].map(
        (r) => `${r.key}@${r.versionId}`,
      ),
    );
    const lockedNow = new Set<string>();
    let headChecked = false;
    for await (const v of store.listVersions("repo/")) {
      if (v.isDeleteMarker) continue;
      const r = await store.getRetention({ key: v.key, versionId: v.versionId });
      if (v.key === keys.head(repo)) {
        expect(r, "HEAD is never locked").toBeUndefined();
        headChecked = true;
      }
      if (r) lockedNow.add(`${v.key}@${v.versionId}`);
    }
    expect(headChecked).toBe(true);
    expect(lockedNow).toEqual(expected);
    // Generation 2 shares generation 1's unchanged blocks: their locks already reach far enough.
    expect(second.locked).toBeLessThan(second.objects);
    expect((await lockGeneration(repo, 2, policy)).locked).toBe(0);
  });
});
