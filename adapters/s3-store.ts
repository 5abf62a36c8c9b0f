import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  GetObjectRetentionCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutObjectCommand,
  PutObjectRetentionCommand,
  type S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import {
  formatRange,
  type GetOptions,
  type GetResult,
  type HeadResult,
  type ListOptions,
  type MultipartUpload,
  type MultipartUploadOptions,
  ObjectLockedError,
  ObjectNotFoundError,
  type ObjectRetention,
  type ObjectStore,
  type ObjectSummary,
  type ObjectVersionRef,
  type ObjectVersionSummary,
  PreconditionFailedError,
  type PutOptions,
  type PutResult,
} from "#core/ports/object-store.ts";

export interface S3ObjectStoreProps {
  /** A configured client (created once by the caller, e.g. at Lambda cold start). */
  readonly client: S3Client;
  readonly bucket: string;
  /**
   * Send per-part SHA-256 checksums on multipart uploads when asked to.
   * @default true
   */
  readonly multipartChecksums?: boolean;
}

function status(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

function errorName(error: unknown): string | undefined {
  return (error as { name?: string })?.name;
}

function isNotFound(error: unknown, versioned: boolean): boolean {
  const name = errorName(error);
  const code = status(error);
  return (
    name === "NoSuchKey" ||
    name === "NoSuchVersion" ||
    name === "NotFound" ||
    code === 404 ||
    // GET/HEAD of a delete marker by version id answers 405.
    (versioned && (code === 405 || name === "MethodNotAllowed"))
  );
}

/** Per-entry DeleteObjects errors worth sending again (S3's "please try again" codes). */
const RETRYABLE_DELETE_CODES = new Set(["InternalError", "ServiceUnavailable", "SlowDown"]);

function isPreconditionFailed(error: unknown): boolean {
  const name = errorName(error);
  const code = status(error);
  // 409 ConditionalRequestConflict: a concurrent conditional write to the same key is in flight.
  return (
    name === "PreconditionFailed" || code === 412 || name === "ConditionalRequestConflict" || code === 409
  );
}

function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

function parseTotal(contentRange: string | undefined): number | undefined {
  const m = contentRange ? /\/(\d+)\s*$/.exec(contentRange) : null;
  return m ? Number(m[1]) : undefined;
}

/** Largest body read straight into one buffer of the announced length (larger ones go through the SDK). */
const MAX_DIRECT_BODY = 256 * 1024 * 1024;

/**
 * A GetObject body as one buffer. Over Node's HTTP (a Readable with a Content-Length) the socket's
 * chunks are copied once into a buffer of the announced length as they arrive: no list of chunks
 * held until the end and no second, zero-filled buffer to concatenate them into (the SDK's
 * `transformToByteArray`). A body longer or shorter than its Content-Length is an error.
 */
async function readBody(
  key: string,
  body: { transformToByteArray(): Promise<Uint8Array> },
  length: number | undefined,
  into: ((length: number) => Uint8Array) | undefined,
): Promise<Uint8Array> {
  if (
    !(body instanceof Readable) ||
    length === undefined ||
    !Number.isSafeInteger(length) ||
    length < 0 ||
    length > MAX_DIRECT_BODY
  ) {
    return body.transformToByteArray();
  }
  // The caller's buffer, or one not from Node's shared pool: the buffer owns its memory, however small.
  const given = into?.(length);
  if (given && given.byteLength < length) {
    body.destroy();
    throw new RangeError(
      `GetObject ${key}: the buffer given for the body is ${given.byteLength} bytes, not ${length}`,
    );
  }
  const out = given ? Buffer.from(given.buffer, given.byteOffset, length) : Buffer.allocUnsafeSlow(length);
  let at = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    if (at + chunk.byteLength > length) {
      body.destroy();
      throw new Error(`GetObject ${key}: the body is longer than its Content-Length of ${length} bytes`);
    }
    chunk.copy(out, at);
    at += chunk.byteLength;
  }
  if (at !== length) {
    throw new Error(`GetObject ${key}: received ${at} bytes of a Content-Length of ${length}`);
  }
  return out;
}

/** The ObjectStore port on Amazon S3 (or any S3-compatible endpoint) with AWS SDK v3. */
export class S3ObjectStore implements ObjectStore {
  readonly #client: S3Client;
  readonly bucket: string;
  readonly #multipartChecksums: boolean;

  constructor(props: S3ObjectStoreProps) {
    this.#client = props.client;
    this.bucket = props.bucket;
    this.#multipartChecksums = props.multipartChecksums ?? true;
  }

  async get(key: string, options: GetOptions = {}): Promise<GetResult> {
    try {
      const out = await this.#client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: key,
          VersionId: options.versionId,
          Range: options.range ? formatRange(options.range) : undefined,
        }),
      );
      const body = out.Body
        ? await readBody(key, out.Body, out.ContentLength, options.into)
        : new Uint8Array(0);
      const size = parseTotal(out.ContentRange) ?? out.ContentLength ?? body.byteLength;
      return {
        body,
        etag: out.ETag ?? "",
        ...(out.VersionId && out.VersionId !== "null" ? { versionId: out.VersionId } : {}),
        size,
        metadata: out.Metadata ?? {},
      };
    } catch (error) {
      if (isNotFound(error, options.versionId !== undefined))
        throw new ObjectNotFoundError(key, options.versionId, { cause: error });
      throw error;
    }
  }

  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    try {
      const out = await this.#client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: body,
          ContentLength: body.byteLength,
          IfMatch: options.ifMatch,
          IfNoneMatch: options.ifNoneMatch,
          ChecksumSHA256: options.checksumSha256 ? b64(options.checksumSha256) : undefined,
          ChecksumCRC32: options.checksumCrc32 ? b64(options.checksumCrc32) : undefined,
          Metadata: options.metadata ? { ...options.metadata } : undefined,
          ContentType: options.contentType ?? "application/octet-stream",
        }),
      );
      return {
        etag: out.ETag ?? "",
        ...(out.VersionId && out.VersionId !== "null" ? { versionId: out.VersionId } : {}),
      };
    } catch (error) {
      if (isPreconditionFailed(error)) {
        const condition = options.ifMatch !== undefined ? `If-Match: ${options.ifMatch}` : "If-None-Match: *";
        throw new PreconditionFailedError(key, condition, { cause: error });
      }
      throw error;
    }
  }

  async delete(key: string, options: { readonly versionId?: string } = {}): Promise<void> {
    try {
      await this.#client.send(
        new DeleteObjectCommand({ Bucket: this.bucket, Key: key, VersionId: options.versionId }),
      );
    } catch (error) {
      if (isNotFound(error, false)) return;
      if (options.versionId !== undefined && (error as { name?: string }).name === "AccessDenied") {
        const ref = { key, versionId: options.versionId };
        if (await this.#underRetention(ref)) throw new ObjectLockedError([ref], { cause: error });
      }
      throw error;
    }
  }

  async putRetention(ref: ObjectVersionRef, retention: ObjectRetention): Promise<void> {
    await this.#client.send(
      new PutObjectRetentionCommand({
        Bucket: this.bucket,
        Key: ref.key,
        VersionId: ref.versionId,
        Retention: { Mode: retention.mode, RetainUntilDate: retention.retainUntil },
      }),
    );
  }

  async getRetention(ref: ObjectVersionRef): Promise<ObjectRetention | undefined> {
    try {
      const out = await this.#client.send(
        new GetObjectRetentionCommand({ Bucket: this.bucket, Key: ref.key, VersionId: ref.versionId }),
      );
      const r = out.Retention;
      if (!r?.Mode || !r.RetainUntilDate) return undefined;
      return { mode: r.Mode, retainUntil: new Date(r.RetainUntilDate) };
    } catch (error) {
      const name = (error as { name?: string }).name;
      // S3 answers a version without a retention with NoSuchObjectLockConfiguration.
      if (name === "NoSuchObjectLockConfiguration" || name === "ObjectLockConfigurationNotFoundError") {
        return undefined;
      }
      if (isNotFound(error, false)) throw new ObjectNotFoundError(ref.key, ref.versionId, { cause: error });
      throw error;
    }
  }

  /** Whether a retention protects the version now (a refused delete is AccessDenied, as an IAM deny is). */
  async #underRetention(ref: ObjectVersionRef): Promise<boolean> {
    try {
      const r = await this.getRetention(ref);
      return r !== undefined && r.retainUntil.getTime() > Date.now();
    } catch {
      return false;
    }
  }

  async head(key: string, options: { readonly versionId?: string } = {}): Promise<HeadResult | undefined> {
    try {
      const out = await this.#client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: key, VersionId: options.versionId }),
      );
      return {
        etag: out.ETag ?? "",
        ...(out.VersionId && out.VersionId !== "null" ? { versionId: out.VersionId } : {}),
        size: out.ContentLength ?? 0,
        metadata: out.Metadata ?? {},
      };
    } catch (error) {
      if (isNotFound(error, options.versionId !== undefined)) return undefined;
      throw error;
    }
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectSummary> {
    let token: string | undefined;
    do {
      const out = await this.#client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: prefix,
          ContinuationToken: token,
          ...(token === undefined && options.startAfter !== undefined
            ? { StartAfter: options.startAfter }
            : {}),
        }),
      );
      for (const o of out.Contents ?? []) {
        yield {
          key: o.Key!,
          size: o.Size ?? 0,
          etag: o.ETag ?? "",
          ...(o.LastModified ? { lastModified: o.LastModified } : {}),
        };
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  async *listVersions(prefix: string): AsyncIterable<ObjectVersionSummary> {
    let keyMarker: string | undefined;
    let versionMarker: string | undefined;
    for (;;) {
      const out = await this.#client.send(
        new ListObjectVersionsCommand({
          Bucket: this.bucket,
          Prefix: prefix,
          KeyMarker: keyMarker,
          VersionIdMarker: versionMarker,
        }),
      );
      // The SDK splits versions and delete markers; merge them back: key order, newest first.
      const all: ObjectVersionSummary[] = [
        ...(out.Versions ?? []).map((v) => ({
          key: v.Key!,
          versionId: v.VersionId ?? "null",
          isLatest: v.IsLatest ?? false,
          isDeleteMarker: false,
          size: v.Size ?? 0,
          ...(v.ETag ? { etag: v.ETag } : {}),
          ...(v.LastModified ? { lastModified: v.LastModified } : {}),
        })),
        ...(out.DeleteMarkers ?? []).map((d) => ({
          key: d.Key!,
          versionId: d.VersionId ?? "null",
          isLatest: d.IsLatest ?? false,
          isDeleteMarker: true,
          size: 0,
          ...(d.LastModified ? { lastModified: d.LastModified } : {}),
        })),
      ];
      const order = new Map(all.map((v, i) => [v, i]));
      all.sort((a, b) => {
        if (a.key !== b.key) return a.key < b.key ? -1 : 1;
        if (a.isLatest !== b.isLatest) return a.isLatest ? -1 : 1;
        const t = (b.lastModified?.getTime() ?? 0) - (a.lastModified?.getTime() ?? 0);
        return t !== 0 ? t : order.get(a)! - order.get(b)!;
      });
      yield* all;
      if (!out.IsTruncated) return;
      keyMarker = out.NextKeyMarker;
      versionMarker = out.NextVersionIdMarker;
    }
  }

  /**
   * Deletes versions in DeleteObjects batches of 1,000. What each entry may answer:
   * - NoSuchKey / NoSuchVersion: gone already, which is what was asked;
   * - InvalidArgument (versitygw answers a delete of a noncurrent version that no longer exists with
   *   "Invalid version id specified", where S3 answers it as deleted; also when a PUT of the key races
   *   the delete): a HEAD of that version decides, gone → deleted; still there → sent again, up to 4
   *   times, then the error stands (a malformed id never gets through);
   * - InternalError / ServiceUnavailable / SlowDown (S3 documents them per entry; versitygw answers
   *   InternalError when two deletes of one key race): those entries are sent again, up to 4 times;
   * - AccessDenied on a version under an Object Lock retention: ObjectLockedError (after the rest);
   * - anything else fails the call, naming the first refused version.
   */
  async deleteVersions(objects: readonly ObjectVersionRef[]): Promise<void> {
    const allLocked: ObjectVersionRef[] = [];
    for (let i = 0; i < objects.length; i += 1000) {
      let pending: readonly ObjectVersionRef[] = objects.slice(i, i + 1000);
      for (let attempt = 1; pending.length > 0; attempt++) {
        const out = await this.#client.send(
          new DeleteObjectsCommand({
            Bucket: this.bucket,
            Delete: { Quiet: true, Objects: pending.map((o) => ({ Key: o.key, VersionId: o.versionId })) },
          }),
        );
        let failed = (out.Errors ?? []).filter((e) => e.Code !== "NoSuchKey" && e.Code !== "NoSuchVersion");
        const refused = (code: string) => failed.filter((x) => x.Code === code && x.Key && x.VersionId);
        const settled = new Set<string>();
        const id = (key: string | undefined, versionId: string | undefined) => `${key}\0${versionId}`;
        // A version the server calls invalid is deleted when it is gone (what S3 answers).
        for (const e of refused("InvalidArgument")) {
          if (await this.#versionGone({ key: e.Key!, versionId: e.VersionId! }))
            settled.add(id(e.Key, e.VersionId));
        }
        // S3 refuses a version under an Object Lock retention with AccessDenied, as it does an IAM deny:
        // a refusal counts as "locked" only when the version's retention says so.
        for (const e of refused("AccessDenied")) {
          const ref = { key: e.Key!, versionId: e.VersionId! };
          if (await this.#underRetention(ref)) {
            allLocked.push(ref);
            settled.add(id(e.Key, e.VersionId));
          }
        }
        failed = failed.filter((e) => !settled.has(id(e.Key, e.VersionId)));
        // A refused version still there (versitygw: a PUT of the key racing this delete) is asked again.
        const retryable = failed.filter(
          (e) => (RETRYABLE_DELETE_CODES.has(e.Code ?? "") || e.Code === "InvalidArgument") && e.Key,
        );
        if (retryable.length === failed.length && retryable.length > 0 && attempt < 4) {
          await new Promise((r) => setTimeout(r, 50 * 2 ** attempt * Math.random()));
          pending = retryable.map((e) => ({ key: e.Key!, versionId: e.VersionId ?? "null" }));
          continue;
        }
        if (failed.length > 0) {
          const e = failed[0]!;
          throw Object.assign(
            new Error(
              `DeleteObjects refused ${failed.length} of ${pending.length} versions; first: ${e.Key} (version ${e.VersionId}): ${e.Code} ${e.Message ?? ""}`,
            ),
            { name: e.Code ?? "DeleteObjectsError" },
          );
        }
        pending = [];
      }
    }
    if (allLocked.length > 0) throw new ObjectLockedError(allLocked);
  }

  /** True only when HEAD of the version answers that it does not exist (404); a delete marker is not gone. */
  async #versionGone(ref: ObjectVersionRef): Promise<boolean> {
    try {
      await this.#client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: ref.key, VersionId: ref.versionId }),
      );
      return false;
    } catch (error) {
      const name = errorName(error);
      return name === "NoSuchKey" || name === "NoSuchVersion" || name === "NotFound" || status(error) === 404;
    }
  }

  async createMultipartUpload(key: string, options: MultipartUploadOptions = {}): Promise<MultipartUpload> {
    const checksums = Boolean(options.checksumSha256) && this.#multipartChecksums;
    const created = await this.#client.send(
      new CreateMultipartUploadCommand({
        Bucket: this.bucket,
        Key: key,
        Metadata: options.metadata ? { ...options.metadata } : undefined,
        ContentType: options.contentType ?? "application/octet-stream",
        ChecksumAlgorithm: checksums ? "SHA256" : undefined,
      }),
    );
    const uploadId = created.UploadId!;
    const parts = new Map<number, { ETag: string; ChecksumSHA256?: string }>();
    const client = this.#client;
    const bucket = this.bucket;
    return {
      key,
      async uploadPart(partNumber: number, body: Uint8Array): Promise<void> {
        const sha = checksums ? createHash("sha256").update(body).digest("base64") : undefined;
        const out = await client.send(
          new UploadPartCommand({
            Bucket: bucket,
            Key: key,
            UploadId: uploadId,
            PartNumber: partNumber,
            Body: body,
            ContentLength: body.byteLength,
            ChecksumSHA256: sha,
          }),
        );
        parts.set(partNumber, {
          ETag: out.ETag ?? "",
          ...(sha ? { ChecksumSHA256: out.ChecksumSHA256 ?? sha } : {}),
        });
      },
      async complete(): Promise<PutResult> {
        const list = [...parts.entries()]
          .sort((a, b) => a[0] - b[0])
          .map(([PartNumber, p]) => ({ PartNumber, ...p }));
        const out = await client.send(
          new CompleteMultipartUploadCommand({
            Bucket: bucket,
            Key: key,
            UploadId: uploadId,
            MultipartUpload: { Parts: list },
          }),
        );
        return {
          etag: out.ETag ?? "",
          ...(out.VersionId && out.VersionId !== "null" ? { versionId: out.VersionId } : {}),
        };
      },
      async abort(): Promise<void> {
        await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }));
      },
    };
  }
}
