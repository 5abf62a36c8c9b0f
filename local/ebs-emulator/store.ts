import { createHash, hash, randomBytes } from "node:crypto";
import { EbsApiError, notFound, validation } from "./errors.ts";
import {
  DataDirInUseError,
  DiskPersistence,
  PERSIST_FORMAT_VERSION,
  type PersistedSnapshot,
} from "./persistence.ts";
import { BLOCK_SIZE, SyntheticBlocks, seedOf } from "./synthetic.ts";
import type { TokenKey } from "./tokens.ts";

export { BLOCK_SIZE };
export const GIB = 1024 * 1024 * 1024;
export const BLOCKS_PER_GIB = GIB / BLOCK_SIZE; // 2048
export const MAX_VOLUME_SIZE_GIB = 65536;
export const DEFAULT_TIMEOUT_MINUTES = 60;

export type SnapshotStatus = "pending" | "completed" | "error";

export interface Tag {
  Key?: string | undefined;
  Value?: string | undefined;
}

/** Blocks written to one stored snapshot: index -> base64 SHA-256 of the content (the blob key). */
export class StoredBlocks {
  readonly kind = "stored";
  readonly map = new Map<number, string>();
  /** Sorted indices; built when the snapshot completes (lists only read completed snapshots). */
  sorted: Uint32Array | undefined;

  has(index: number): boolean {
    return this.map.has(index);
  }

  seal(): void {
    this.sorted = Uint32Array.from(this.map.keys()).sort();
  }
}

export type OwnBlocks = StoredBlocks | SyntheticBlocks;

export interface SnapshotRecord {
  readonly id: string;
  readonly ownerId: string;
  readonly volumeSizeGiB: number;
  readonly volumeBlocks: number;
  status: SnapshotStatus;
  readonly startTimeMs: number;
  parent: SnapshotRecord | undefined;
  readonly description: string | undefined;
  readonly tags: Tag[];
  readonly clientToken: string | undefined;
  readonly fingerprint: string | undefined;
  readonly timeoutMinutes: number;
  lastActivityMs: number;
  readonly encrypted: boolean;
  readonly kmsKeyArn: string | undefined;
  readonly generation: number;
  readonly own: OwnBlocks;
  readonly children: Set<SnapshotRecord>;
}

export interface StartSnapshotInput {
  VolumeSize: number;
  ParentSnapshotId?: string | undefined;
  Tags?: Tag[] | undefined;
  Description?: string | undefined;
  ClientToken?: string | undefined;
  Encrypted?: boolean | undefined;
  KmsKeyArn?: string | undefined;
  Timeout?: number | undefined;
}

export interface SyntheticSnapshotOptions {
  /** Volume size in GiB (1..65536). For a child, defaults to the parent's. */
  readonly volumeSizeGiB?: number | undefined;
  /** Lineage seed (string or uint32). For a child, inherited from the nearest synthetic ancestor. @default 1 */
  readonly seed?: string | number | undefined;
  /** Root only: fraction of indices written. @default 1 */
  readonly writtenFraction?: number | undefined;
  /** Parent snapshot (any completed snapshot); makes this a child. */
  readonly parentSnapshotId?: string | undefined;
  /** Child only: fraction of indices (re)written in this generation. @default 0.01 */
  readonly changedFraction?: number | undefined;
  /** Fraction of written blocks that are all zeros. @default 0 */
  readonly zeroFraction?: number | undefined;
  /** Fraction of written blocks that compress about 4:1. @default 0 */
  readonly compressibleFraction?: number | undefined;
  readonly description?: string | undefined;
  readonly tags?: Tag[] | undefined;
  /**
   * Encrypt the snapshot with this KMS key: readers need a grant on it (the emulator's `kmsGrants`).
   * A child inherits its parent's key. @default not encrypted
   */
  readonly kmsKeyArn?: string | undefined;
}

export interface SnapshotDescription {
  readonly snapshotId: string;
  readonly encrypted: boolean;
  /** The KMS key the snapshot is encrypted with (inherited from its parent), if any. */
  readonly kmsKeyArn: string | undefined;
  readonly status: SnapshotStatus;
  readonly volumeSizeGiB: number;
  readonly parentSnapshotId: string | undefined;
  readonly kind: "stored" | "synthetic";
  readonly generation: number;
  /** Blocks written to this snapshot itself (stored snapshots only; synthetic: undefined). */
  readonly ownBlockCount: number | undefined;
  readonly startTime: Date;
  readonly description: string | undefined;
  readonly tags: Tag[];
  readonly childSnapshotIds: string[];
}

interface BlobStore {
  put(checksum: string, data: Buffer): Promise<void> | undefined;
  get(checksum: string): Buffer | Promise<Buffer>;
}

class MemoryBlobs implements BlobStore {
  readonly #blobs = new Map<string, Buffer>();
  put(checksum: string, data: Buffer): undefined {
    if (!this.#blobs.has(checksum)) this.#blobs.set(checksum, data);
  }
  get(checksum: string): Buffer {
    const b = this.#blobs.get(checksum);
    if (b === undefined)
      throw new EbsApiError("InternalServerException", `block data ${checksum} is missing`);
    return b;
  }
}

function lowerBound(arr: Uint32Array, value: number): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((arr[mid] as number) < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Appends to `out` the indices in [start, end) that belong to the union of `members`' written blocks,
 * ascending, until `out` holds `max` entries. Returns the index to continue from (`end` when the range
 * was exhausted). Stored members are walked by binary search; synthetic ones by predicate.
 */
export function scanUnion(
  members: OwnBlocks[],
  start: number,
  end: number,
  max: number,
  out: number[],
): number {
  const cursors: { arr: Uint32Array; pos: number }[] = [];
  const synth: SyntheticBlocks[] = [];
  for (const m of members) {
    if (m.kind === "synthetic") synth.push(m);
    else {
      if (m.sorted === undefined) m.seal();
      const arr = m.sorted as Uint32Array;
      cursors.push({ arr, pos: lowerBound(arr, start) });
    }
  }
  if (synth.length === 0) {
    let next = start;
    while (out.length < max) {
      let min = Number.POSITIVE_INFINITY;
      for (const c of cursors)
        if (c.pos < c.arr.length && (c.arr[c.pos] as number) < min) min = c.arr[c.pos] as number;
      if (min >= end) return end;
      out.push(min);
      for (const c of cursors) if (c.pos < c.arr.length && c.arr[c.pos] === min) c.pos++;
      next = min + 1;
    }
    return next;
  }
  let i = start;
  for (; i < end && out.length < max; i++) {
    let hit = false;
    for (const s of synth) {
      if (s.has(i)) {
        hit = true;
        break;
      }
    }
    if (!hit) {
      for (const c of cursors) {
        while (c.pos < c.arr.length && (c.arr[c.pos] as number) < i) c.pos++;
        if (c.arr[c.pos] === i) {
          hit = true;
          break;
        }
      }
    }
    if (hit) out.push(i);
  }
  return i;
}

function newSnapshotId(taken: Map<string, unknown>): string {
  for (;;) {
    const id = `snap-${randomBytes(9).toString("hex").slice(0, 17)}`;
    if (!taken.has(id) && !/^snap-0+$/.test(id)) return id;
  }
}

function fingerprintOf(input: StartSnapshotInput): string {
  return JSON.stringify([
    input.VolumeSize,
    input.ParentSnapshotId ?? null,
    input.Tags ?? [],
    input.Description ?? null,
    input.Encrypted ?? null,
    input.KmsKeyArn ?? null,
    input.Timeout ?? null,
  ]);
}

export interface StoreOptions {
  readonly ownerId: string;
  readonly dataDir?: string | undefined;
  readonly now: () => number;
}

/** The snapshots, their lineage and their blocks. Knows nothing about HTTP. */
export class EbsStore {
  readonly snapshots = new Map<string, SnapshotRecord>();
  readonly #clientTokens = new Map<string, SnapshotRecord>();
  readonly #blobs: BlobStore;
  readonly #disk: DiskPersistence | undefined;
  readonly #now: () => number;
  ownerId: string;
  tokenKey: TokenKey;
  /** In-flight PutSnapshotBlock per "snapshot/index", to report CONFLICTING_BLOCK_UPDATE. */
  readonly #writing = new Set<string>();

  private constructor(opts: StoreOptions) {
    this.#now = opts.now;
    this.ownerId = opts.ownerId;
    const b = randomBytes(8);
    this.tokenKey = { k1: b.readUInt32BE(0), k2: b.readUInt32BE(4) };
    if (opts.dataDir !== undefined) {
      const disk = new DiskPersistence(opts.dataDir);
      this.#disk = disk;
      this.#blobs = { put: (c, d) => disk.putBlob(c, d), get: (c) => disk.readBlob(c) };
    } else {
      this.#disk = undefined;
      this.#blobs = new MemoryBlobs();
    }
  }

  static async open(opts: StoreOptions): Promise<EbsStore> {
    const store = new EbsStore(opts);
    if (store.#disk !== undefined) {
      try {
        await store.#load(store.#disk);
      } catch (e) {
        if (!(e instanceof DataDirInUseError)) await store.#disk.unlock();
        throw e;
      }
    }
    return store;
  }

  /** Releases the dataDir lock (no-op in memory). */
  async close(): Promise<void> {
    await this.#disk?.unlock();
  }

  get persistent(): boolean {
    return this.#disk !== undefined;
  }

  async #load(disk: DiskPersistence): Promise<void> {
    const { meta, snapshots, journals } = await disk.load(() => ({
      formatVersion: PERSIST_FORMAT_VERSION,
      tokenKey: [this.tokenKey.k1, this.tokenKey.k2],
      ownerId: this.ownerId,
    }));
    this.tokenKey = { k1: meta.tokenKey[0], k2: meta.tokenKey[1] };
    this.ownerId = meta.ownerId;
    const byId = new Map(snapshots.map((p) => [p.id, p]));
    const build = (p: PersistedSnapshot): SnapshotRecord => {
      const existing = this.snapshots.get(p.id);
      if (existing !== undefined) return existing;
      const parentP = p.parentId === undefined ? undefined : byId.get(p.parentId);
      const parent = parentP === undefined ? undefined : build(parentP);
      let own: OwnBlocks;
      if (p.synthetic !== undefined) own = new SyntheticBlocks(p.synthetic);
      else {
        const stored = new StoredBlocks();
        for (const [i, c] of p.blocks ?? []) stored.map.set(i, c);
        for (const [i, c] of journals.get(p.id) ?? []) stored.map.set(i, c);
        if (p.status === "completed") stored.seal();
        own = stored;
      }
      const rec: SnapshotRecord = {
        id: p.id,
        ownerId: p.ownerId,
        volumeSizeGiB: p.volumeSizeGiB,
        volumeBlocks: p.volumeSizeGiB * BLOCKS_PER_GIB,
        status: p.status,
        startTimeMs: p.startTimeMs,
        parent,
        description: p.description,
        tags: [...p.tags],
        clientToken: p.clientToken,
        fingerprint: p.fingerprint,
        timeoutMinutes: p.timeoutMinutes,
        lastActivityMs: p.lastActivityMs,
        encrypted: p.encrypted,
        kmsKeyArn: p.kmsKeyArn,
        generation: parent === undefined ? 0 : parent.generation + 1,
        own,
        children: new Set(),
      };
      parent?.children.add(rec);
      this.snapshots.set(rec.id, rec);
      if (rec.clientToken !== undefined) this.#clientTokens.set(rec.clientToken, rec);
      return rec;
    };
    for (const p of snapshots) build(p);
  }

  #persisted(rec: SnapshotRecord): PersistedSnapshot {
    return {
      formatVersion: PERSIST_FORMAT_VERSION,
      id: rec.id,
      ownerId: rec.ownerId,
      volumeSizeGiB: rec.volumeSizeGiB,
      status: rec.status,
      startTimeMs: rec.startTimeMs,
      parentId: rec.parent?.id,
      description: rec.description,
      tags: rec.tags,
      clientToken: rec.clientToken,
      fingerprint: rec.fingerprint,
      timeoutMinutes: rec.timeoutMinutes,
      lastActivityMs: rec.lastActivityMs,
      encrypted: rec.encrypted,
      kmsKeyArn: rec.kmsKeyArn,
      synthetic: rec.own.kind === "synthetic" ? rec.own.params : undefined,
      blocks: rec.own.kind === "stored" && rec.status !== "pending" ? [...rec.own.map.entries()] : undefined,
    };
  }

  async #save(rec: SnapshotRecord): Promise<void> {
    if (this.#disk !== undefined) await this.#disk.writeSnapshot(this.#persisted(rec));
  }

  /** The snapshot, with a pending one moved to `error` once its Timeout has passed. */
  get(snapshotId: string): SnapshotRecord {
    const rec = this.snapshots.get(snapshotId);
    if (rec === undefined) throw notFound(snapshotId);
    if (rec.status === "pending" && this.#now() - rec.lastActivityMs > rec.timeoutMinutes * 60_000) {
      rec.status = "error";
      void this.#save(rec).catch(() => undefined);
    }
    return rec;
  }

  hasClientToken(token: string): boolean {
    return this.#clientTokens.has(token);
  }

  pendingCount(): number {
    let n = 0;
    for (const s of this.snapshots.values()) if (s.status === "pending") n++;
    return n;
  }

  async startSnapshot(input: StartSnapshotInput): Promise<{ rec: SnapshotRecord; replay: boolean }> {
    const fingerprint = fingerprintOf(input);
    if (input.ClientToken !== undefined) {
      const prior = this.#clientTokens.get(input.ClientToken);
      if (prior !== undefined) {
        if (prior.fingerprint !== fingerprint) {
          throw new EbsApiError(
            "ConflictException",
            `ClientToken "${input.ClientToken}" was used by an earlier StartSnapshot with different parameters (${prior.id})`,
          );
        }
        return { rec: prior, replay: true };
      }
    }
    let parent: SnapshotRecord | undefined;
    if (input.ParentSnapshotId !== undefined) {
      parent = this.get(input.ParentSnapshotId);
      if (parent.status !== "completed") {
        throw validation(
          "INVALID_PARAMETER_VALUE",
          `ParentSnapshotId ${parent.id} is ${parent.status}; a parent must be completed`,
        );
      }
      if (input.VolumeSize < parent.volumeSizeGiB) {
        throw validation(
          "INVALID_VOLUME_SIZE",
          `VolumeSize ${input.VolumeSize} GiB is smaller than the parent's ${parent.volumeSizeGiB} GiB`,
        );
      }
    }
    const now = this.#now();
    const rec: SnapshotRecord = {
      id: newSnapshotId(this.snapshots),
      ownerId: this.ownerId,
      volumeSizeGiB: input.VolumeSize,
      volumeBlocks: input.VolumeSize * BLOCKS_PER_GIB,
      status: "pending",
      startTimeMs: now,
      parent,
      description: input.Description,
      tags: input.Tags ?? [],
      clientToken: input.ClientToken,
      fingerprint,
      timeoutMinutes: input.Timeout ?? DEFAULT_TIMEOUT_MINUTES,
      lastActivityMs: now,
      encrypted: input.Encrypted ?? parent?.encrypted ?? false,
      kmsKeyArn: input.KmsKeyArn ?? parent?.kmsKeyArn,
      generation: parent === undefined ? 0 : parent.generation + 1,
      own: new StoredBlocks(),
      children: new Set(),
    };
    this.snapshots.set(rec.id, rec);
    parent?.children.add(rec);
    if (rec.clientToken !== undefined) this.#clientTokens.set(rec.clientToken, rec);
    await this.#save(rec);
    return { rec, replay: false };
  }

  /** Stores a verified block (`checksum` already checked against `data`). */
  async putBlock(rec: SnapshotRecord, index: number, data: Buffer, checksum: string): Promise<void> {
    const key = `${rec.id}/${index}`;
    if (this.#writing.has(key)) {
      throw validation(
        "CONFLICTING_BLOCK_UPDATE",
        `block ${index} of ${rec.id} is being written by another request`,
      );
    }
    this.#writing.add(key);
    try {
      await this.#blobs.put(checksum, data);
      if (this.#disk !== undefined) await this.#disk.appendJournal(rec.id, index, checksum);
      (rec.own as StoredBlocks).map.set(index, checksum);
      rec.lastActivityMs = this.#now();
    } finally {
      this.#writing.delete(key);
    }
  }

  async complete(rec: SnapshotRecord): Promise<void> {
    rec.status = "completed";
    if (rec.own.kind === "stored") rec.own.seal();
    rec.lastActivityMs = this.#now();
    await this.#save(rec);
    if (this.#disk !== undefined) await this.#disk.removeJournal(rec.id);
  }

  /** The snapshot in `rec`'s chain that last wrote `index`, or undefined when the block was never written. */
  owner(rec: SnapshotRecord, index: number): SnapshotRecord | undefined {
    for (let s: SnapshotRecord | undefined = rec; s !== undefined; s = s.parent)
      if (s.own.has(index)) return s;
    return undefined;
  }

  /** Content and checksum of block `index` as written by `owner` (see `owner`). */
  read(owner: SnapshotRecord, index: number): { data: Buffer | Promise<Buffer>; checksum: string } {
    if (owner.own.kind === "synthetic") return owner.own.content(index);
    const checksum = owner.own.map.get(index) as string;
    return { data: this.#blobs.get(checksum), checksum };
  }

  /** Written-block sets whose union is the snapshot's blocks (root first). */
  chain(rec: SnapshotRecord): OwnBlocks[] {
    const out: OwnBlocks[] = [];
    for (let s: SnapshotRecord | undefined = rec; s !== undefined; s = s.parent) out.push(s.own);
    return out.reverse();
  }

  /**
   * Written-block sets whose union is every index that may differ between `first` and `second`: the
   * blocks written on the path from each to their closest common ancestor. Undefined when the two
   * snapshots share no ancestor (unrelated lineages).
   */
  changedPath(first: SnapshotRecord, second: SnapshotRecord): OwnBlocks[] | undefined {
    const ancestorsOfFirst = new Set<SnapshotRecord>();
    for (let s: SnapshotRecord | undefined = first; s !== undefined; s = s.parent) ancestorsOfFirst.add(s);
    const members: OwnBlocks[] = [];
    let common: SnapshotRecord | undefined;
    for (let s: SnapshotRecord | undefined = second; s !== undefined; s = s.parent) {
      if (ancestorsOfFirst.has(s)) {
        common = s;
        break;
      }
      members.push(s.own);
    }
    if (common === undefined) return undefined;
    for (let s: SnapshotRecord | undefined = first; s !== common && s !== undefined; s = s.parent)
      members.push(s.own);
    return members;
  }

  async createSynthetic(opts: SyntheticSnapshotOptions): Promise<SnapshotRecord> {
    const fail = (msg: string): never => {
      throw validation("INVALID_PARAMETER_VALUE", `createSyntheticSnapshot: ${msg}`);
    };
    const fraction = (name: string, v: number | undefined, dflt: number): number => {
      const f = v ?? dflt;
      if (typeof f !== "number" || !(f >= 0 && f <= 1))
        fail(`${name} must be a number in [0, 1], got ${String(v)}`);
      return f;
    };
    let parent: SnapshotRecord | undefined;
    if (opts.parentSnapshotId !== undefined) {
      parent = this.get(opts.parentSnapshotId);
      if (parent.status !== "completed")
        fail(`parent ${parent.id} is ${parent.status}; it must be completed`);
      if (opts.writtenFraction !== undefined)
        fail("writtenFraction is for a root; a child takes changedFraction");
    } else if (opts.changedFraction !== undefined) {
      fail("changedFraction needs parentSnapshotId; a root takes writtenFraction");
    }
    const size = opts.volumeSizeGiB ?? parent?.volumeSizeGiB;
    if (size === undefined || !Number.isInteger(size) || size < 1 || size > MAX_VOLUME_SIZE_GIB) {
      fail(`volumeSizeGiB must be an integer in [1, ${MAX_VOLUME_SIZE_GIB}], got ${String(size)}`);
    }
    const volumeSizeGiB = size as number;
    if (parent !== undefined && volumeSizeGiB < parent.volumeSizeGiB) {
      fail(`volumeSizeGiB ${volumeSizeGiB} is smaller than the parent's ${parent.volumeSizeGiB}`);
    }
    let inherited: number | undefined;
    for (let s = parent; s !== undefined && inherited === undefined; s = s.parent) {
      if (s.own.kind === "synthetic") inherited = s.own.params.seed;
    }
    const seed = opts.seed !== undefined ? seedOf(opts.seed) : (inherited ?? 1);
    const generation = parent === undefined ? 0 : parent.generation + 1;
    const own = new SyntheticBlocks({
      seed,
      generation,
      fraction:
        parent === undefined
          ? fraction("writtenFraction", opts.writtenFraction, 1)
          : fraction("changedFraction", opts.changedFraction, 0.01),
      zeroFraction: fraction("zeroFraction", opts.zeroFraction, 0),
      compressibleFraction: fraction("compressibleFraction", opts.compressibleFraction, 0),
    });
    const now = this.#now();
    const rec: SnapshotRecord = {
      id: newSnapshotId(this.snapshots),
      ownerId: this.ownerId,
      volumeSizeGiB,
      volumeBlocks: volumeSizeGiB * BLOCKS_PER_GIB,
      status: "completed",
      startTimeMs: now,
      parent,
      description: opts.description ?? `synthetic seed=${seed} generation=${generation}`,
      tags: opts.tags ?? [],
      clientToken: undefined,
      fingerprint: undefined,
      timeoutMinutes: DEFAULT_TIMEOUT_MINUTES,
      lastActivityMs: now,
      encrypted: opts.kmsKeyArn !== undefined || (parent?.encrypted ?? false),
      kmsKeyArn: opts.kmsKeyArn ?? parent?.kmsKeyArn,
      generation,
      own,
      children: new Set(),
    };
    this.snapshots.set(rec.id, rec);
    parent?.children.add(rec);
    await this.#save(rec);
    return rec;
  }

  /**
   * Deletes a snapshot as EC2 DeleteSnapshot would: its children keep every block they inherited (the
   * deleted snapshot's writes move into each child), so later listings of the children are unchanged.
   */
  async deleteSnapshot(snapshotId: string): Promise<void> {
    const rec = this.get(snapshotId);
    for (const child of rec.children) {
      if (child.own.kind === "synthetic" || rec.own.kind === "synthetic") {
        throw validation(
          "INVALID_PARAMETER_VALUE",
          `cannot delete ${rec.id}: it has a child ${child.id} and one of them is synthetic (blocks cannot be merged)`,
        );
      }
    }
    for (const child of rec.children) {
      const own = child.own as StoredBlocks;
      for (const [i, c] of (rec.own as StoredBlocks).map) if (!own.map.has(i)) own.map.set(i, c);
      if (child.status === "completed") own.seal();
      child.parent = rec.parent;
      rec.parent?.children.add(child);
      if (child.status !== "pending") await this.#save(child);
      else if (this.#disk !== undefined) {
        // pending child: persist the merged blocks through its journal
        for (const [i, c] of own.map) await this.#disk.appendJournal(child.id, i, c);
        await this.#save(child);
      }
    }
    rec.parent?.children.delete(rec);
    this.snapshots.delete(rec.id);
    if (rec.clientToken !== undefined) this.#clientTokens.delete(rec.clientToken);
    if (this.#disk !== undefined) await this.#disk.deleteSnapshot(rec.id);
  }

  describe(rec: SnapshotRecord): SnapshotDescription {
    return {
      snapshotId: rec.id,
      status: rec.status,
      volumeSizeGiB: rec.volumeSizeGiB,
      parentSnapshotId: rec.parent?.id,
      kind: rec.own.kind,
      generation: rec.generation,
      ownBlockCount: rec.own.kind === "stored" ? rec.own.map.size : undefined,
      startTime: new Date(rec.startTimeMs),
      description: rec.description,
      tags: rec.tags,
      childSnapshotIds: [...rec.children].map((c) => c.id),
      encrypted: rec.encrypted,
      kmsKeyArn: rec.kmsKeyArn,
    };
  }
}

export function sha256Base64(data: Uint8Array): string {
  return hash("sha256", data, "base64");
}

export function aggregateChecksums(checksums: string[]): { ofDigests: string; ofStrings: string } {
  const digests = createHash("sha256");
  const strings = createHash("sha256");
  for (const c of checksums) {
    digests.update(Buffer.from(c, "base64"));
    strings.update(c);
  }
  return { ofDigests: digests.digest("base64"), ofStrings: strings.digest("base64") };
}
