/**
 * The object store port: the few S3 operations cgmirror's repository needs.
 *
 * Core code talks only to this interface; `adapters/s3-store.ts` implements it with the AWS SDK and
 * `adapters/memory-store.ts` in memory (tests, benchmarks). Semantics follow S3 with versioning on:
 * every `put` creates a new version, `delete` without a version id would create a delete marker (core
 * never does that on versioned keys), `delete` with a version id removes exactly that version.
 */

import { namedError, objectVersion } from "../util/named-error.ts";

/** A byte range: `start` inclusive, `end` exclusive; or the last `suffix` bytes of the object. */
export type ByteRange = { readonly start: number; readonly end: number } | { readonly suffix: number };

export interface GetOptions {
  /** Read this exact version (S3 VersionId). @default the current version */
  readonly versionId?: string;
  /** Read only these bytes. @default the whole object */
  readonly range?: ByteRange;
  /**
   * Where the body goes when the store knows its length before it arrives: called once with that
   * length, it returns a buffer of at least that many bytes, and the body is a view of its start (so
   * that restore reads into reused buffers its hash threads take without a copy,
   * core/util/hash-pool.ts). A store that does not know the length up front ignores it; the body is
   * then a buffer of its own.
   */
  readonly into?: (length: number) => Uint8Array;
}

export interface GetResult {
  readonly body: Uint8Array;
  readonly etag: string;
  readonly versionId?: string;
  /** Size of the whole object (not of the range). */
  readonly size: number;
  readonly metadata: Readonly<Record<string, string>>;
}

export interface PutOptions {
  /** Write only if the current version has this ETag (S3 If-Match). */
  readonly ifMatch?: string;
  /** `"*"`: write only if the key does not exist (S3 If-None-Match: *). */
  readonly ifNoneMatch?: "*";
  /** SHA-256 of the body; the store verifies it on receipt (S3 x-amz-checksum-sha256). */
  readonly checksumSha256?: Uint8Array;
  /**
   * CRC-32 (IEEE, as `zlib.crc32`) of the body, 4 bytes big-endian; the store verifies it on receipt
   * (S3 x-amz-checksum-crc32, a full-object checksum). Cheaper than a SHA-256 for bulk data.
   */
  readonly checksumCrc32?: Uint8Array;
  /** User metadata (lower-case keys, ASCII values). */
  readonly metadata?: Readonly<Record<string, string>>;
  readonly contentType?: string;
}

export interface PutResult {
  readonly etag: string;
  /** Present when the bucket has versioning enabled. */
  readonly versionId?: string;
}

export interface HeadResult {
  readonly etag: string;
  readonly versionId?: string;
  readonly size: number;
  readonly metadata: Readonly<Record<string, string>>;
}

export interface ObjectSummary {
  readonly key: string;
  readonly size: number;
  readonly etag: string;
  readonly lastModified?: Date;
}

export interface ObjectVersionSummary {
  readonly key: string;
  readonly versionId: string;
  readonly isLatest: boolean;
  readonly isDeleteMarker: boolean;
  readonly size: number;
  readonly etag?: string;
  readonly lastModified?: Date;
}

export interface MultipartUploadOptions {
  readonly metadata?: Readonly<Record<string, string>>;
  readonly contentType?: string;
  /** Ask the store to verify a SHA-256 of every part. @default false */
  readonly checksumSha256?: boolean;
}

/** A multipart upload in progress. Parts are numbered 1..10000; all but the last must be >= 5 MiB. */
export interface MultipartUpload {
  readonly key: string;
  uploadPart(partNumber: number, body: Uint8Array): Promise<void>;
  complete(): Promise<PutResult>;
  abort(): Promise<void>;
}

export interface ObjectStore {
  /** @throws ObjectNotFoundError when the key (or version) does not exist. */
  get(key: string, options?: GetOptions): Promise<GetResult>;
  /** @throws PreconditionFailedError when `ifMatch` / `ifNoneMatch` does not hold. */
  put(key: string, body: Uint8Array, options?: PutOptions): Promise<PutResult>;
  /**
   * Deletes the key (or exactly one version). Deleting something absent is not an error.
   * @throws ObjectLockedError when the version is under an Object Lock retention
   */
  delete(key: string, options?: { readonly versionId?: string }): Promise<void>;
  /** Metadata of the key (or version), or `undefined` when absent. */
  head(key: string, options?: { readonly versionId?: string }): Promise<HeadResult | undefined>;
  /** Current objects whose key starts with `prefix`, in key order (after `startAfter`, when given). */
  list(prefix: string, options?: ListOptions): AsyncIterable<ObjectSummary>;
  /** All versions (and delete markers) under `prefix`: keys in order, each key's versions newest first. */
  listVersions(prefix: string): AsyncIterable<ObjectVersionSummary>;
  createMultipartUpload(key: string, options?: MultipartUploadOptions): Promise<MultipartUpload>;
  /**
   * Deletes exact versions (S3 DeleteObjects, up to 1,000 per request). Deleting something absent is
   * not an error.
   * @throws ObjectLockedError listing the versions kept because an Object Lock retention protects
   *   them (every other version was deleted)
   * @throws an Error naming the first version the store refused to delete for any other reason
   */
  deleteVersions(objects: readonly ObjectVersionRef[]): Promise<void>;
  /**
   * Object Lock (a bucket created with it enabled): sets or extends one version's retention (S3
   * PutObjectRetention). Stores without Object Lock leave it out. A retention is never shortened.
   */
  putRetention?(ref: ObjectVersionRef, retention: ObjectRetention): Promise<void>;
  /** One version's Object Lock retention, or undefined when it has none (S3 GetObjectRetention). */
  getRetention?(ref: ObjectVersionRef): Promise<ObjectRetention | undefined>;
}

/** S3 Object Lock retention modes. */
export type RetentionMode = "GOVERNANCE" | "COMPLIANCE";

/** An Object Lock retention: the version cannot be deleted before `retainUntil`. */
export interface ObjectRetention {
  readonly mode: RetentionMode;
  readonly retainUntil: Date;
}

/**
 * Versions the store kept because an Object Lock retention protects them (not a failure of the
 * caller: they can be deleted once the retention has passed).
 */
export class ObjectLockedError extends Error {
  override readonly name = "ObjectLockedError";
  readonly refs: readonly ObjectVersionRef[];
  constructor(refs: readonly ObjectVersionRef[], options?: ErrorOptions) {
    const first = refs[0];
    super(
      `${refs.length} version(s) are under an Object Lock retention and were kept` +
        (first ? ` (e.g. ${first.key} version ${first.versionId})` : "") +
        "; they can be deleted once their retention has passed",
      options,
    );
    this.refs = refs;
  }
}

export interface ListOptions {
  /** List only keys that sort after this one (S3 StartAfter). */
  readonly startAfter?: string;
}

/** One exact version of an object. */
export interface ObjectVersionRef {
  readonly key: string;
  readonly versionId: string;
}

/** The key (or the version) does not exist. */
export class ObjectNotFoundError extends namedError("ObjectNotFoundError") {
  readonly key: string;
  readonly versionId: string | undefined;
  constructor(key: string, versionId?: string, options?: ErrorOptions) {
    super(
      `object ${objectVersion(key, versionId)} does not exist in the bucket; ` +
        "check the key and that nothing pruned it",
      options,
    );
    this.key = key;
    this.versionId = versionId;
  }
}

/** A conditional write (`ifMatch` / `ifNoneMatch`) did not hold: someone else wrote the key first. */
export class PreconditionFailedError extends namedError("PreconditionFailedError") {
  readonly key: string;
  constructor(key: string, condition: string, options?: ErrorOptions) {
    super(`conditional write of ${key} failed (${condition}): another writer changed it first`, options);
    this.key = key;
  }
}

export function formatRange(range: ByteRange): string {
  return "suffix" in range ? `bytes=-${range.suffix}` : `bytes=${range.start}-${range.end - 1}`;
}
