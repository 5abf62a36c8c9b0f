import { createHash, randomUUID } from "node:crypto";
import { appendFileSync, closeSync, openSync, readSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import {
  type ByteRange,
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

/** Stored bytes: in memory, or (when spilling) in a temporary file. */
interface Body {
  readonly byteLength: number;
  read(start: number, end: number): Uint8Array;
}

class MemoryBody implements Body {
  readonly #bytes: Uint8Array;
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }
  get byteLength(): number {
    return this.#bytes.byteLength;
  }
  read(start: number, end: number): Uint8Array {
    // A copy (never a view, even when the stored bytes are a Node Buffer): callers own what they get.
    return new Uint8Array(this.#bytes.subarray(start, end));
  }
}

class FileBody implements Body {
  readonly #path: string;
  readonly byteLength: number;
  constructor(path: string, bytes: Uint8Array | number) {
    this.#path = path;
    if (typeof bytes === "number") {
      this.byteLength = bytes;
    } else {
      this.byteLength = bytes.byteLength;
      writeFileSync(path, bytes);
    }
  }
  static existing(path: string, size: number): FileBody {
    return new FileBody(path, size);
  }
  read(start: number, end: number): Uint8Array {
    const out = new Uint8Array(end - start);
    const fd = openSync(this.#path, "r");
    try {
      readSync(fd, out, 0, out.byteLength, start);
    } finally {
      closeSync(fd);
    }
    return out;
  }
}

export interface MemoryObjectStoreOptions {
  /**
   * Keep bodies of at least `spillBytes` in files under this directory instead of memory (benchmarks:
   * the process RSS then shows the working set, not the stored objects). @default keep all in memory
   */
  readonly spillDir?: string;
  /** @default 1 MiB */
  readonly spillBytes?: number;
  /**
   * The bucket has S3 Object Lock enabled: putRetention/getRetention work and a version under
   * retention cannot be deleted (as S3: even a COMPLIANCE lock is never shortened; no bypass).
   * @default false
   */
  readonly objectLock?: boolean;
  /** The clock retentions are checked against (ms since the epoch). @default Date.now */
  readonly now?: () => number;
}

interface Version {
  readonly versionId: string;
  readonly body: Body | null; // null = delete marker
  readonly etag: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly lastModified: Date;
}

/** Counters of traffic through a MemoryObjectStore. */
export interface MemoryStoreStats {
  gets: number;
  puts: number;
  bytesRead: number;
  bytesWritten: number;
}

/**
 * An in-memory, versioned ObjectStore with S3's conditional-write semantics. For unit tests and
 * benchmarks (it counts requests and bytes); not a substitute for the S3 conformance suite.
 */
export class MemoryObjectStore implements ObjectStore {
  readonly #objects = new Map<string, Version[]>(); // newest first
  #seq = 0;
  readonly #spillDir: string | undefined;
  readonly #spillBytes: number;
  readonly #objectLock: boolean;
  readonly #now: () => number;
  /** Retention per `key\0versionId`. */
  readonly #retention = new Map<string, ObjectRetention>();
  readonly stats: MemoryStoreStats = { gets: 0, puts: 0, bytesRead: 0, bytesWritten: 0 };
  /** Test hook: called before every operation with its name and key; may throw to inject faults. */
  beforeOperation: ((operation: string, key: string) => void) | undefined;

  constructor(options: MemoryObjectStoreOptions = {}) {
    this.#spillDir = options.spillDir;
    this.#spillBytes = options.spillBytes ?? 1024 * 1024;
    this.#objectLock = options.objectLock ?? false;
    this.#now = options.now ?? Date.now;
  }

  /** Whether a retention protects the version now. */
  #locked(key: string, versionId: string): boolean {
    const r = this.#retention.get(`${key}\0${versionId}`);
    return r !== undefined && r.retainUntil.getTime() > this.#now();
  }

  async putRetention(ref: ObjectVersionRef, retention: ObjectRetention): Promise<void> {
    this.beforeOperation?.("putRetention", ref.key);
    if (!this.#objectLock) {
      throw Object.assign(new Error("Bucket is missing Object Lock Configuration"), {
        name: "InvalidRequest",
      });
    }
    this.#find(ref.key, ref.versionId);
    const id = `${ref.key}\0${ref.versionId}`;
    const old = this.#retention.get(id);
    if (old && old.retainUntil.getTime() > this.#now()) {
      if (
        retention.retainUntil < old.retainUntil ||
        (old.mode === "COMPLIANCE" && retention.mode !== "COMPLIANCE")
      ) {
        throw Object.assign(
          new Error(
            `AccessDenied: the retention of ${ref.key} version ${ref.versionId} cannot be shortened or weakened`,
          ),
          { name: "AccessDenied" },
        );
      }
    }
    this.#retention.set(id, { mode: retention.mode, retainUntil: new Date(retention.retainUntil) });
  }

  async getRetention(ref: ObjectVersionRef): Promise<ObjectRetention | undefined> {
    this.beforeOperation?.("getRetention", ref.key);
    this.#find(ref.key, ref.versionId);
    const r = this.#retention.get(`${ref.key}\0${ref.versionId}`);
    return r ? { mode: r.mode, retainUntil: new Date(r.retainUntil) } : undefined;
  }

  resetStats(): void {
    this.stats.gets = 0;
    this.stats.puts = 0;
    this.stats.bytesRead = 0;
    this.stats.bytesWritten = 0;
  }

  #current(key: string): Version | undefined {
    const v = this.#objects.get(key)?.[0];
    return v && v.body !== null ? v : undefined;
  }

  #find(key: string, versionId?: string): Version {
    const versions = this.#objects.get(key);
    const v = versionId === undefined ? versions?.[0] : versions?.find((x) => x.versionId === versionId);
    if (!v || v.body === null) throw new ObjectNotFoundError(key, versionId);
    return v;
  }

  async get(key: string, options: GetOptions = {}): Promise<GetResult> {
    this.beforeOperation?.("get", key);
    const v = this.#find(key, options.versionId);
    const body = v.body!;
    const read = options.range ? sliceRange(body, options.range) : body.read(0, body.byteLength);
    // Like S3ObjectStore, which knows a body's length from its Content-Length before it arrives.
    const into = options.into?.(read.byteLength);
    if (into && into.byteLength < read.byteLength) {
      throw new RangeError(
        `get ${key}: the buffer given for the body is ${into.byteLength} bytes, not ${read.byteLength}`,
      );
    }
    into?.set(read);
    const slice = into ? into.subarray(0, read.byteLength) : read;
    this.stats.gets++;
    this.stats.bytesRead += slice.byteLength;
    return {
      body: slice,
      etag: v.etag,
      versionId: v.versionId,
      size: body.byteLength,
      metadata: v.metadata,
    };
  }

  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    this.beforeOperation?.("put", key);
    const current = this.#current(key);
    if (options.ifNoneMatch === "*" && current) throw new PreconditionFailedError(key, "If-None-Match: *");
    if (options.ifMatch !== undefined && current?.etag !== options.ifMatch) {
      throw new PreconditionFailedError(key, `If-Match: ${options.ifMatch}`);
    }
    if (options.checksumSha256) {
      const got = createHash("sha256").update(body).digest();
      if (!got.equals(Buffer.from(options.checksumSha256)))
        throw new Error(`BadDigest: ${key} checksum mismatch`);
    }
    if (options.checksumCrc32 && crc32(body) !== Buffer.from(options.checksumCrc32).readUInt32BE(0))
      throw new Error(`BadDigest: ${key} CRC-32 mismatch`);
    // A copy: a caller that mutates its buffer after put must not change the stored object.
    return this.#store(key, new Uint8Array(body), options.metadata ?? {});
  }

  #store(key: string, bytes: Uint8Array | null, metadata: Readonly<Record<string, string>>): PutResult {
    const versionId = `v${String(++this.#seq).padStart(12, "0")}`;
    const etag = bytes ? `"${createHash("md5").update(bytes).digest("hex")}"` : "";
    const body = bytes ? this.#keep(versionId, bytes) : null;
    const versions = this.#objects.get(key) ?? [];
    versions.unshift({ versionId, body, etag, metadata: { ...metadata }, lastModified: new Date() });
    this.#objects.set(key, versions);
    if (body) {
      this.stats.puts++;
      this.stats.bytesWritten += body.byteLength;
    }
    return { etag, versionId };
  }

  #storeParts(key: string, list: readonly Body[], metadata: Readonly<Record<string, string>>): PutResult {
    const total = list.reduce((n, b) => n + b.byteLength, 0);
    if (!this.#spillDir || total < this.#spillBytes) {
      return this.#store(key, Buffer.concat(list.map((b) => b.read(0, b.byteLength))), metadata);
    }
    // Assemble the object in a file part by part (bounded memory), then register it as a version.
    const versionId = `v${String(++this.#seq).padStart(12, "0")}`;
    const path = join(this.#spillDir, versionId);
    const md5 = createHash("md5");
    writeFileSync(path, new Uint8Array(0));
    for (const b of list) {
      const bytes = b.read(0, b.byteLength);
      md5.update(bytes);
      appendFileSync(path, bytes);
    }
    const etag = `"${md5.digest("hex")}"`;
    const versions = this.#objects.get(key) ?? [];
    versions.unshift({
      versionId,
      body: FileBody.existing(path, total),
      etag,
      metadata: { ...metadata },
      lastModified: new Date(),
    });
    this.#objects.set(key, versions);
    this.stats.puts++;
    this.stats.bytesWritten += total;
    return { etag, versionId };
  }

  #keep(versionId: string, bytes: Uint8Array): Body {
    if (this.#spillDir && bytes.byteLength >= this.#spillBytes)
      return new FileBody(join(this.#spillDir, versionId), bytes);
    return new MemoryBody(bytes);
  }

  async delete(key: string, options: { readonly versionId?: string } = {}): Promise<void> {
    this.beforeOperation?.("delete", key);
    const versions = this.#objects.get(key);
    if (options.versionId === undefined) {
      if (versions) this.#store(key, null, {});
      return;
    }
    if (!versions) return;
    const i = versions.findIndex((v) => v.versionId === options.versionId);
    if (i >= 0 && this.#locked(key, options.versionId)) {
      throw new ObjectLockedError([{ key, versionId: options.versionId }]);
    }
    if (i >= 0) versions.splice(i, 1);
    if (versions.length === 0) this.#objects.delete(key);
  }

  async head(key: string, options: { readonly versionId?: string } = {}): Promise<HeadResult | undefined> {
    this.beforeOperation?.("head", key);
    try {
      const v = this.#find(key, options.versionId);
      return { etag: v.etag, versionId: v.versionId, size: v.body!.byteLength, metadata: v.metadata };
    } catch (error) {
      if (error instanceof ObjectNotFoundError) return undefined;
      throw error;
    }
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectSummary> {
    this.beforeOperation?.("list", prefix);
    const after = options.startAfter;
    for (const key of [...this.#objects.keys()]
      .filter((k) => k.startsWith(prefix) && (after === undefined || k > after))
      .sort()) {
      const v = this.#current(key);
      if (v) yield { key, size: v.body!.byteLength, etag: v.etag, lastModified: v.lastModified };
    }
  }

  async *listVersions(prefix: string): AsyncIterable<ObjectVersionSummary> {
    this.beforeOperation?.("listVersions", prefix);
    for (const key of [...this.#objects.keys()].filter((k) => k.startsWith(prefix)).sort()) {
      const versions = this.#objects.get(key) ?? [];
      for (let i = 0; i < versions.length; i++) {
        const v = versions[i]!;
        yield {
          key,
          versionId: v.versionId,
          isLatest: i === 0,
          isDeleteMarker: v.body === null,
          size: v.body?.byteLength ?? 0,
          etag: v.etag,
          lastModified: v.lastModified,
        };
      }
    }
  }

  async createMultipartUpload(key: string, options: MultipartUploadOptions = {}): Promise<MultipartUpload> {
    this.beforeOperation?.("createMultipartUpload", key);
    // Parts are kept as Bodies too, so a spilling store keeps large uploads out of memory.
    const parts = new Map<number, Body>();
    const id = randomUUID();
    let done = false;
    return {
      key,
      uploadPart: async (partNumber, body) => {
        if (done) throw new Error(`multipart upload ${id} of ${key} is finished`);
        this.beforeOperation?.("uploadPart", key);
        parts.set(partNumber, this.#keep(`mpu-${id}-${partNumber}`, new Uint8Array(body)));
      },
      complete: async () => {
        if (done) throw new Error(`multipart upload ${id} of ${key} is finished`);
        this.beforeOperation?.("completeMultipartUpload", key);
        done = true;
        const numbers = [...parts.keys()].sort((a, b) => a - b);
        numbers.forEach((n, i) => {
          if (n !== i + 1) throw new Error(`multipart upload of ${key}: part ${i + 1} is missing`);
          if (i < numbers.length - 1 && parts.get(n)!.byteLength < 5 * 1024 * 1024) {
            throw new Error(`EntityTooSmall: part ${n} of ${key} is below 5 MiB`);
          }
        });
        const list = numbers.map((n) => parts.get(n)!);
        parts.clear();
        return this.#storeParts(key, list, options.metadata ?? {});
      },
      abort: async () => {
        done = true;
        parts.clear();
      },
    };
  }

  /**
   * Test helper: an independent copy of every object and version (bodies are immutable and shared),
   * so one prepared repository can be the starting point of many test cases.
   */
  clone(): MemoryObjectStore {
    const c = new MemoryObjectStore({
      ...(this.#spillDir ? { spillDir: this.#spillDir } : {}),
      spillBytes: this.#spillBytes,
      objectLock: this.#objectLock,
      now: this.#now,
    });
    for (const [id, r] of this.#retention) c.#retention.set(id, r);
    for (const [key, versions] of this.#objects)
      c.#objects.set(
        key,
        versions.map((v) => ({ ...v })),
      );
    c.#seq = this.#seq;
    return c;
  }

  async deleteVersions(objects: readonly ObjectVersionRef[]): Promise<void> {
    const locked: ObjectVersionRef[] = [];
    for (const o of objects) {
      try {
        await this.delete(o.key, { versionId: o.versionId });
      } catch (error) {
        if (!(error instanceof ObjectLockedError)) throw error;
        locked.push(...error.refs);
      }
    }
    if (locked.length > 0) throw new ObjectLockedError(locked);
  }

  /**
   * Test helper: replaces the bytes of a version in place (simulates bit rot or tampering).
   * @param versionId @default the current version
   */
  corrupt(key: string, mutate: (body: Uint8Array) => Uint8Array, versionId?: string): void {
    const versions = this.#objects.get(key);
    const i = versionId === undefined ? 0 : (versions?.findIndex((x) => x.versionId === versionId) ?? -1);
    const v = versions?.[i];
    if (!versions || !v || v.body === null) throw new ObjectNotFoundError(key, versionId);
    versions[i] = { ...v, body: new MemoryBody(mutate(v.body.read(0, v.body.byteLength))) };
  }
}

function sliceRange(body: Body, range: ByteRange): Uint8Array {
  if ("suffix" in range) return body.read(Math.max(0, body.byteLength - range.suffix), body.byteLength);
  if (range.start >= body.byteLength || range.end <= range.start) {
    throw new Error(
      `InvalidRange: bytes ${range.start}-${range.end - 1} of a ${body.byteLength}-byte object`,
    );
  }
  return body.read(range.start, Math.min(range.end, body.byteLength));
}
