/**
 * A small in-memory EBS for protocol tests (no network): volumes whose blocks are named by content
 * seeds, point-in-time snapshots of them (SnapshotPort), and the EBS direct API read side over those
 * snapshots (BlockSource: ListSnapshotBlocks / ListChangedBlocks with pagination, GetSnapshotBlock
 * with a SHA-256 checksum). Snapshots complete on their second DescribeSnapshots, like the
 * MemorySnapshotPort of the handler tests. Fast enough to run a backup hundreds of times per test.
 */
import { createHash } from "node:crypto";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import {
  type BlockData,
  type BlockSource,
  BlockSourceFatalError,
  type GetBlockRequest,
  type ListBlocksPage,
  type ListBlocksRequest,
  type ListedBlock,
} from "#core/ports/block-source.ts";
import type {
  SnapshotLabels,
  SnapshotPort,
  SnapshotRef,
  SnapshotStatus,
  TaggedSnapshot,
} from "#core/protocol/snapshot-group.ts";

/** Block content: `null` = zero (trimmed), else a seed string naming the bytes. */
export type Content = string | null;

const cache = new Map<string, Buffer>();

/** The 512 KiB block a seed names (deterministic; "zero" and null give zeros). */
export function blockBytes(seed: Content): Buffer {
  if (seed === null || seed === "zero") return Buffer.alloc(BLOCK_SIZE);
  let b = cache.get(seed);
  if (!b) {
    b = Buffer.alloc(BLOCK_SIZE);
    const h = createHash("sha256").update(seed).digest();
    for (let at = 0; at < BLOCK_SIZE; at += 64) {
      h.copy(b, at);
      b.writeUInt32LE(at, at + 32);
    }
    if (cache.size > 512) cache.clear();
    cache.set(seed, b);
  }
  return b;
}

type Snap = { -readonly [K in keyof TaggedSnapshot]: TaggedSnapshot[K] } & {
  describes: number;
  readonly blocks: ReadonlyMap<number, Content>;
  readonly sizeBlocks: number;
};

export class MemoryEbs implements SnapshotPort, BlockSource {
  readonly volumes = new Map<string, { sizeBlocks: number; blocks: Map<number, Content> }>();
  readonly snaps = new Map<string, Snap>();
  /** Every snapshot's blocks, kept after the snapshot is deleted (what a restore must give). */
  readonly archive = new Map<
    string,
    { volumeId: string; sizeBlocks: number; blocks: ReadonlyMap<number, Content> }
  >();
  #next = 1;
  gets = 0;

  /** An independent copy (volumes, snapshots, archive). */
  clone(): MemoryEbs {
    const c = new MemoryEbs();
    for (const [id, v] of this.volumes)
      c.volumes.set(id, { sizeBlocks: v.sizeBlocks, blocks: new Map(v.blocks) });
    for (const [id, s] of this.snaps) c.snaps.set(id, { ...s });
    for (const [id, a] of this.archive) c.archive.set(id, a);
    c.#next = this.#next;
    return c;
  }

  addVolume(volumeId: string, sizeBlocks: number): void {
    this.volumes.set(volumeId, { sizeBlocks, blocks: new Map() });
  }

  write(volumeId: string, block: number, content: Content): void {
    const v = this.volumes.get(volumeId);
    if (!v) throw new Error(`no volume ${volumeId}`);
    if (block < 0 || block >= v.sizeBlocks) throw new Error(`block ${block} outside ${volumeId}`);
    v.blocks.set(block, content);
  }

  /** The expected image of a volume in a snapshot: block → content (unwritten blocks absent). */
  image(snapshotId: string): { sizeBlocks: number; blocks: ReadonlyMap<number, Content> } {
    const s = this.archive.get(snapshotId);
    if (!s) throw new Error(`no snapshot ${snapshotId}`);
    return s;
  }

  #make(volumeId: string, labels: SnapshotLabels): SnapshotRef {
    const v = this.volumes.get(volumeId);
    if (!v) throw new Error(`no volume ${volumeId}`);
    const snapshotId = `snap-${String(this.#next++).padStart(17, "0")}`;
    const blocks = new Map([...v.blocks].filter(([b]) => b < v.sizeBlocks));
    this.archive.set(snapshotId, { volumeId, sizeBlocks: v.sizeBlocks, blocks });
    this.snaps.set(snapshotId, {
      snapshotId,
      volumeId,
      ...labels,
      state: "pending",
      describes: 0,
      blocks,
      sizeBlocks: v.sizeBlocks,
    });
    return { volumeId, snapshotId };
  }

  async createInstanceSnapshots(_instanceId: string, volumeIds: readonly string[], labels: SnapshotLabels) {
    return volumeIds.map((v) => this.#make(v, labels));
  }

  async createVolumeSnapshot(volumeId: string, labels: SnapshotLabels) {
    return this.#make(volumeId, labels);
  }

  async describeSnapshots(ids: readonly string[]): Promise<SnapshotStatus[]> {
    return ids.flatMap((id) => {
      const s = this.snaps.get(id);
      if (!s) return [];
      s.describes += 1;
      if (s.describes >= 2 && s.state === "pending") s.state = "completed";
      return [{ snapshotId: id, volumeId: s.volumeId, state: s.state }];
    });
  }

  async findSnapshots(group: string, runId?: string): Promise<TaggedSnapshot[]> {
    return [...this.snaps.values()]
      .filter((s) => s.group === group && (runId === undefined || s.runId === runId))
      .map(({ snapshotId, volumeId, group: g, generation, runId: r, state }) => ({
        snapshotId,
        volumeId,
        group: g,
        generation,
        runId: r,
        state,
      }));
  }

  async deleteSnapshot(id: string): Promise<void> {
    this.snaps.delete(id);
  }

  #snap(id: string, op: string): Snap {
    const s = this.snaps.get(id);
    if (!s) throw new BlockSourceFatalError(op, "ResourceNotFoundException", `snapshot ${id} not found`);
    return s;
  }

  async listBlocks(r: ListBlocksRequest): Promise<ListBlocksPage> {
    const op = r.baseSnapshotId ? "ListChangedBlocks" : "ListSnapshotBlocks";
    const s = this.#snap(r.snapshotId, op);
    const base = r.baseSnapshotId ? this.#snap(r.baseSnapshotId, op) : undefined;
    const max = Math.min(Math.max(r.maxResults ?? 10_000, 1), 10_000);
    const start = r.nextToken ? Number(r.nextToken) : (r.startingBlockIndex ?? 0);
    const indices = new Set<number>(s.blocks.keys());
    if (base) for (const i of base.blocks.keys()) indices.add(i);
    // EBS lists blocks of the (second) snapshot's volume only.
    const all = [...indices].filter((i) => i >= start && i < s.sizeBlocks).sort((a, b) => a - b);
    const blocks: ListedBlock[] = [];
    let i = 0;
    for (; i < all.length && blocks.length < max; i++) {
      const b = all[i]!;
      const now = s.blocks.get(b);
      if (base) {
        const before = base.blocks.get(b);
        if (before === now) continue; // unchanged
      }
      // A block the new snapshot no longer holds (trimmed since the base) has no token.
      blocks.push({ index: b, token: s.blocks.has(b) ? `${s.snapshotId}:${b}` : undefined });
    }
    return {
      blocks,
      nextToken: i < all.length ? String(all[i]) : undefined,
      expiresAt: undefined,
      volumeSizeBytes: s.sizeBlocks * BLOCK_SIZE,
      blockSize: BLOCK_SIZE,
    };
  }

  async getBlock(r: GetBlockRequest): Promise<BlockData> {
    this.gets++;
    const s = this.#snap(r.snapshotId, "GetSnapshotBlock");
    if (r.blockToken !== `${r.snapshotId}:${r.blockIndex}` || !s.blocks.has(r.blockIndex)) {
      throw new BlockSourceFatalError("GetSnapshotBlock", "ValidationException", "invalid block token");
    }
    const data = Buffer.from(blockBytes(s.blocks.get(r.blockIndex) ?? null));
    return {
      data,
      checksum: createHash("sha256").update(data).digest("base64"),
      checksumAlgorithm: "SHA256",
      dataLength: BLOCK_SIZE,
    };
  }
}
