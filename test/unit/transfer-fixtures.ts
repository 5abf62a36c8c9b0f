/**
 * An in-process BlockSource for unit tests of the planner and the transfer worker: deterministic
 * blocks, EBS-like pagination (StartingBlockIndex / NextToken / MaxResults, empty pages), and fault
 * knobs (throttling, 5xx, expired tokens, corrupt reads). No network.
 */
import { createHash } from "node:crypto";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import {
  type BlockData,
  type BlockSource,
  BlockSourceFatalError,
  BlockSourceThrottledError,
  BlockSourceTransientError,
  BlockTokenExpiredError,
  type GetBlockRequest,
  type ListBlocksPage,
  type ListBlocksRequest,
  type ListedBlock,
} from "#core/ports/block-source.ts";

export interface FakeSourceOptions {
  readonly snapshotId?: string;
  readonly volumeBlocks: number;
  /** Whether block i is listed (changed / written). */
  readonly has: (index: number) => boolean;
  /** Listed blocks without a token (not in the new snapshot). @default none */
  readonly absent?: (index: number) => boolean;
  /** Content class: blocks with the same key have the same bytes; "zero" gives zeros. @default String(index) */
  readonly contentKey?: (index: number) => string;
  /** Insert an empty page (NextToken only) before every k-th page. @default 0 = never */
  readonly emptyPageEvery?: number;
  /** Listing scans at most this many indices per call (then returns a short page + NextToken). @default ∞ */
  readonly scanWindow?: number;
  /** Tokens expire this long after their listing, which announces it as ExpiryTime. @default never */
  readonly tokenTtlMs?: number;
  /** The clock tokens expire by (a test's own, so expiry does not depend on the machine's load). @default Date.now */
  readonly now?: () => number;
}

export class FakeBlockSource implements BlockSource {
  readonly snapshotId: string;
  readonly o: FakeSourceOptions;
  /** Fault decisions per GetSnapshotBlock call (n = 1, 2, ... of the call). */
  getFault:
    | ((index: number, call: number) => "throttle" | "transient" | "fatal" | "corrupt" | undefined)
    | undefined;
  listFault: ((call: number) => "throttle" | "transient" | undefined) | undefined;
  /** Tokens minted before this generation are expired. */
  tokenGeneration = 0;
  getCalls = 0;
  listCalls = 0;
  reads = new Map<number, number>();
  inFlight = 0;
  maxInFlight = 0;
  #pages = 0;

  constructor(o: FakeSourceOptions) {
    this.o = o;
    this.snapshotId = o.snapshotId ?? "snap-0000000000000000b";
  }

  content(index: number): Buffer {
    const key = this.o.contentKey?.(index) ?? String(index);
    const out = Buffer.alloc(BLOCK_SIZE);
    if (key === "zero") return out;
    const seed = createHash("sha256").update(key).digest();
    for (let at = 0; at < BLOCK_SIZE; at += 4096) {
      seed.copy(out, at);
      out.writeUInt32LE(at, at + 32);
    }
    return out;
  }

  async listBlocks(r: ListBlocksRequest): Promise<ListBlocksPage> {
    this.listCalls++;
    await Promise.resolve();
    const f = this.listFault?.(this.listCalls);
    if (f === "throttle")
      throw new BlockSourceThrottledError("ListChangedBlocks", "ThrottlingException", "slow down");
    if (f === "transient")
      throw new BlockSourceTransientError("ListChangedBlocks", "InternalServerException", "oops");
    const max = r.maxResults ?? 10_000;
    let start = r.nextToken ? Number(r.nextToken.slice(1)) : (r.startingBlockIndex ?? 0);
    const ttl = this.o.tokenTtlMs;
    const expires = ttl === undefined ? undefined : (this.o.now ?? Date.now)() + ttl;
    const page = {
      volumeSizeBytes: this.o.volumeBlocks * BLOCK_SIZE,
      blockSize: BLOCK_SIZE,
      expiresAt: expires === undefined ? undefined : new Date(expires),
    };
    this.#pages++;
    if (this.o.emptyPageEvery && this.#pages % this.o.emptyPageEvery === 0 && start < this.o.volumeBlocks) {
      return { ...page, blocks: [], nextToken: `n${start}` };
    }
    const blocks: ListedBlock[] = [];
    const limit = Math.min(this.o.volumeBlocks, start + (this.o.scanWindow ?? Number.POSITIVE_INFINITY));
    for (; start < limit && blocks.length < max; start++) {
      if (!this.o.has(start)) continue;
      blocks.push({
        index: start,
        token: this.o.absent?.(start)
          ? undefined
          : `t${this.tokenGeneration}.${start}${expires === undefined ? "" : `.${expires}`}`,
      });
    }
    return { ...page, blocks, nextToken: start < this.o.volumeBlocks ? `n${start}` : undefined };
  }

  async getBlock(r: GetBlockRequest): Promise<BlockData> {
    this.getCalls++;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((res) => setImmediate(res));
      const [gen, idx, expires] = r.blockToken.slice(1).split(".").map(Number);
      if (idx !== r.blockIndex)
        throw new BlockSourceFatalError("GetSnapshotBlock", "ValidationException", "wrong token");
      if (gen !== this.tokenGeneration || (expires !== undefined && (this.o.now ?? Date.now)() >= expires)) {
        throw new BlockTokenExpiredError("GetSnapshotBlock", "ValidationException", "token expired");
      }
      const n = (this.reads.get(r.blockIndex) ?? 0) + 1;
      this.reads.set(r.blockIndex, n);
      const f = this.getFault?.(r.blockIndex, n);
      if (f === "throttle")
        throw new BlockSourceThrottledError("GetSnapshotBlock", "ThrottlingException", "slow down");
      if (f === "transient")
        throw new BlockSourceTransientError("GetSnapshotBlock", "InternalServerException", "oops");
      if (f === "fatal")
        throw new BlockSourceFatalError("GetSnapshotBlock", "AccessDeniedException", "denied");
      const data = this.content(r.blockIndex);
      const checksum = createHash("sha256").update(data).digest("base64");
      if (f === "corrupt") data[100] = (data[100]! + 1) % 256;
      return { data, checksum, checksumAlgorithm: "SHA256", dataLength: BLOCK_SIZE };
    } finally {
      this.inFlight--;
    }
  }
}
