/**
 * The volume simulator: sparse image files with dirty-block tracking stand in for EC2 volumes.
 *
 * - A snapshot is a new EBS snapshot in the (emulated) EBS direct API with ParentSnapshotId set to the
 *   volume's previous snapshot, holding only the blocks written since then (PutSnapshotBlock).
 * - Its point in time is when it is *initiated*: the dirty blocks are captured then, synchronously, so
 *   writes that arrive while the upload runs belong to the next snapshot, as with EBS.
 * - A freeze holds incoming writes in a queue and applies them, in order, after the thaw
 *   (claim 14 of shared/seeds/000: writes queued while the new data structure is created).
 *
 * State lives under `stateDir` (one JSON + one sparse image per volume), so separate CLI processes see
 * the same volumes. Point-in-time images of every snapshot are kept beside them, for byte comparisons.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, open, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  CompleteSnapshotCommand,
  type EBSClient,
  PutSnapshotBlockCommand,
  StartSnapshotCommand,
} from "@aws-sdk/client-ebs";

export const BLOCK_SIZE = 524_288;
const GIB = 1024 ** 3;
const VOLUME_ID = /^vol-[0-9a-z]{1,32}$/;
const INSTANCE_ID = /^i-[0-9a-z]{1,32}$/;

export class VolumeSimulatorError extends Error {
  override readonly name = "VolumeSimulatorError";
}

export interface SimulatedVolume {
  readonly id: string;
  readonly sizeGiB: number;
  readonly instanceId?: string;
  /** The newest snapshot of this volume, the parent of the next one. */
  readonly lastSnapshotId?: string;
  /** Every snapshot taken, oldest first. */
  readonly snapshots: readonly {
    readonly snapshotId: string;
    readonly takenAt: string;
    /** The blocks this snapshot holds beyond its parent. */
    readonly changed: readonly number[];
  }[];
}

interface VolumeState extends SimulatedVolume {
  /** Blocks written since the last snapshot, sorted. */
  dirty: number[];
  /** Blocks ever written, sorted (for point-in-time images). */
  written: number[];
}

export interface InitiatedSnapshot {
  readonly volumeId: string;
  readonly snapshotId: string;
  /** The point in time: when the dirty set was captured. */
  readonly startTime: Date;
  readonly changedBlocks: number;
  /** Resolves when every block is put and the snapshot is completed. */
  readonly completed: Promise<void>;
}

function sortedUnion(a: number[], b: Iterable<number>): number[] {
  const set = new Set(a);
  for (const x of b) set.add(x);
  return [...set].sort((x, y) => x - y);
}

/** Throttling and 5xx answers (the emulator's fault knobs apply to the simulator's puts too). */
function retryable(error: unknown): boolean {
  const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
  const status = e.$metadata?.httpStatusCode ?? 0;
  return /Throttl|ConcurrentLimitExceeded|InternalServer/.test(e.name ?? "") || status >= 500;
}

/** Retries `fn` with capped exponential backoff and jitter while it fails with a retryable error. */
async function withRetries<T>(fn: () => Promise<T>, attempts = 30): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (attempt >= attempts || !retryable(error)) throw error;
      const backoff = Math.min(2000, 50 * 2 ** Math.min(attempt, 6));
      await new Promise((r) => setTimeout(r, backoff / 2 + Math.random() * (backoff / 2)));
    }
  }
}

export class VolumeSimulator {
  readonly #dir: string;
  readonly #ebs: EBSClient | undefined;
  readonly #frozen = new Set<string>();
  readonly #queued = new Map<string, { offset: number; data: Uint8Array }[]>();
  /** Per-volume serialization of writes and snapshot captures. */
  readonly #locks = new Map<string, Promise<unknown>>();

  readonly #uploadAttempts: number;

  /**
   * `ebs` is needed only to take snapshots. `uploadAttempts`: tries per block put on throttling or
   * 5xx before the snapshot's upload fails. @default 30
   */
  constructor(options: { stateDir: string; ebs?: EBSClient; uploadAttempts?: number }) {
    this.#uploadAttempts = options.uploadAttempts ?? 30;
    this.#dir = options.stateDir;
    this.#ebs = options.ebs;
  }

  #metaPath(id: string): string {
    return join(this.#dir, "volumes", `${id}.json`);
  }
  imagePath(id: string): string {
    return join(this.#dir, "volumes", `${id}.img`);
  }
  /** The volume's image at the point in time of one of its snapshots. */
  snapshotImagePath(snapshotId: string): string {
    return join(this.#dir, "snapshots", `${snapshotId}.img`);
  }

  async #serialize<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(id) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    this.#locks.set(
      id,
      next.catch(() => {}),
    );
    return next;
  }

  async #load(id: string): Promise<VolumeState> {
    if (!VOLUME_ID.test(id)) {
      throw new VolumeSimulatorError(
        `expected a volume id like vol-a or vol-0123abcd, got ${JSON.stringify(id)}`,
      );
    }
    try {
      return JSON.parse(await readFile(this.#metaPath(id), "utf8")) as VolumeState;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw new VolumeSimulatorError(
          `no simulated volume ${id}; create it first with: cgmirror local volume create --id ${id} --size-gib N`,
        );
      }
      throw err;
    }
  }

  async #save(state: VolumeState): Promise<void> {
    const tmp = `${this.#metaPath(state.id)}.tmp`;
    await writeFile(tmp, JSON.stringify(state));
    await rename(tmp, this.#metaPath(state.id));
  }

  async create(options: { id: string; sizeGiB: number; instanceId?: string }): Promise<SimulatedVolume> {
    const { id, sizeGiB, instanceId } = options;
    if (!VOLUME_ID.test(id)) {
      throw new VolumeSimulatorError(
        `expected a volume id like vol-a or vol-0123abcd, got ${JSON.stringify(id)}`,
      );
    }
    if (!Number.isInteger(sizeGiB) || sizeGiB < 1 || sizeGiB > 16_384) {
      throw new VolumeSimulatorError(`expected a size of 1-16384 GiB (a whole number), got ${sizeGiB}`);
    }
    if (instanceId !== undefined && !INSTANCE_ID.test(instanceId)) {
      throw new VolumeSimulatorError(
        `expected an instance id like i-a or i-0123abcd, got ${JSON.stringify(instanceId)}`,
      );
    }
    await mkdir(join(this.#dir, "volumes"), { recursive: true });
    await mkdir(join(this.#dir, "snapshots"), { recursive: true });
    if (existsSync(this.#metaPath(id))) {
      throw new VolumeSimulatorError(
        `simulated volume ${id} already exists; pick another id or delete it first`,
      );
    }
    const fh = await open(this.imagePath(id), "w");
    await fh.truncate(sizeGiB * GIB);
    await fh.close();
    const state: VolumeState = {
      id,
      sizeGiB,
      ...(instanceId ? { instanceId } : {}),
      snapshots: [],
      dirty: [],
      written: [],
    };
    await this.#save(state);
    return this.#public(state);
  }

  #public(state: VolumeState): SimulatedVolume {
    const { dirty: _d, written: _w, ...rest } = state;
    return rest;
  }

  async get(id: string): Promise<SimulatedVolume> {
    return this.#public(await this.#load(id));
  }

  async list(): Promise<SimulatedVolume[]> {
    const dir = join(this.#dir, "volumes");
    if (!existsSync(dir)) return [];
    const names = (await readdir(dir)).filter((n) => n.endsWith(".json")).sort();
    return Promise.all(names.map((n) => this.get(n.slice(0, -5))));
  }

  async delete(id: string): Promise<void> {
    await this.#load(id);
    await rm(this.#metaPath(id), { force: true });
    await rm(this.imagePath(id), { force: true });
  }

  /**
   * Writes `data` at any byte `offset`. While the volume is frozen the write is queued (and applied
   * after the thaw); the returned promise resolves when the write is applied.
   */
  async write(id: string, offset: number, data: Uint8Array): Promise<void> {
    const state = await this.#load(id);
    const size = state.sizeGiB * GIB;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + data.length > size) {
      throw new VolumeSimulatorError(
        `a write of ${data.length} bytes at offset ${offset} does not fit volume ${id} of ${size} bytes`,
      );
    }
    if (this.#frozen.has(id)) {
      const queue = this.#queued.get(id) ?? [];
      queue.push({ offset, data: Uint8Array.from(data) });
      this.#queued.set(id, queue);
      return;
    }
    await this.#serialize(id, () => this.#apply(id, [{ offset, data }]));
  }

  async #apply(id: string, writes: { offset: number; data: Uint8Array }[]): Promise<void> {
    if (writes.length === 0) return;
    const state = await this.#load(id);
    const fh = await open(this.imagePath(id), "r+");
    const touched = new Set<number>();
    try {
      for (const w of writes) {
        if (w.data.length === 0) continue;
        await fh.write(w.data, 0, w.data.length, w.offset);
        const first = Math.floor(w.offset / BLOCK_SIZE);
        const last = Math.floor((w.offset + w.data.length - 1) / BLOCK_SIZE);
        for (let b = first; b <= last; b++) touched.add(b);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    state.dirty = sortedUnion(state.dirty, touched);
    state.written = sortedUnion(state.written, touched);
    await this.#save(state);
  }

  async read(id: string, offset: number, length: number): Promise<Buffer> {
    const state = await this.#load(id);
    if (offset < 0 || length < 0 || offset + length > state.sizeGiB * GIB) {
      throw new VolumeSimulatorError(`a read of ${length} bytes at ${offset} does not fit volume ${id}`);
    }
    const fh = await open(this.imagePath(id), "r");
    try {
      const buf = Buffer.alloc(length);
      await fh.read(buf, 0, length, offset);
      return buf;
    } finally {
      await fh.close();
    }
  }

  /** Copies the whole image (sparse where never written) to `out`. */
  async exportImage(id: string, out: string): Promise<void> {
    const state = await this.#load(id);
    await this.#sparseCopy(this.imagePath(id), out, state.sizeGiB, state.written);
  }

  async #sparseCopy(from: string, to: string, sizeGiB: number, blocks: number[]): Promise<void> {
    const src = await open(from, "r");
    const dst = await open(`${to}.tmp`, "w");
    try {
      await dst.truncate(sizeGiB * GIB);
      const buf = Buffer.alloc(BLOCK_SIZE);
      for (const b of blocks) {
        await src.read(buf, 0, BLOCK_SIZE, b * BLOCK_SIZE);
        await dst.write(buf, 0, BLOCK_SIZE, b * BLOCK_SIZE);
      }
    } finally {
      await src.close();
      await dst.close();
    }
    await rename(`${to}.tmp`, to);
  }

  isFrozen(id: string): boolean {
    return this.#frozen.has(id);
  }

  /** Holds writes to these volumes in a queue until thaw. */
  async freeze(ids: readonly string[]): Promise<void> {
    for (const id of ids) await this.#load(id);
    for (const id of ids) this.#frozen.add(id);
    // Wait until writes already in progress are applied: the freeze point is then well defined.
    await Promise.all(ids.map((id) => this.#serialize(id, async () => {})));
  }

  /** Applies the queued writes in arrival order and lets new writes through. */
  async thaw(ids: readonly string[]): Promise<{ appliedWrites: number }> {
    let applied = 0;
    for (const id of ids) {
      this.#frozen.delete(id);
      const queue = this.#queued.get(id) ?? [];
      this.#queued.delete(id);
      applied += queue.length;
      await this.#serialize(id, () => this.#apply(id, queue));
    }
    return { appliedWrites: applied };
  }

  /**
   * Initiates snapshots of several volumes at one point in time (like EC2 CreateSnapshots for the
   * volumes of one instance): no write to any of them lands between the first and the last capture.
   */
  async initiateSnapshots(
    ids: readonly string[],
    options: { tags?: Record<string, string>; description?: string } = {},
  ): Promise<InitiatedSnapshot[]> {
    const sorted = [...new Set(ids)].sort();
    const captureAll = async (i: number): Promise<InitiatedSnapshot[]> => {
      if (i === sorted.length) {
        const out: InitiatedSnapshot[] = [];
        for (const id of ids) out.push(await this.#initiateUnlocked(id, options));
        return out;
      }
      // Nest the per-volume locks in a fixed order so concurrent callers cannot deadlock.
      return this.#serialize(sorted[i]!, () => captureAll(i + 1));
    };
    return captureAll(0);
  }

  /**
   * Initiates a snapshot: captures the dirty blocks now (the point in time), then puts them into a new
   * EBS snapshot whose parent is the volume's previous snapshot, and completes it in the background.
   */
  async initiateSnapshot(
    id: string,
    options: { tags?: Record<string, string>; description?: string; clientToken?: string } = {},
  ): Promise<InitiatedSnapshot> {
    return this.#serialize(id, () => this.#initiateUnlocked(id, options));
  }

  async #initiateUnlocked(
    id: string,
    options: { tags?: Record<string, string>; description?: string; clientToken?: string },
  ): Promise<InitiatedSnapshot> {
    const ebs = this.#ebs;
    if (!ebs)
      throw new VolumeSimulatorError("taking a snapshot needs the EBS endpoint; start the local stack first");
    {
      const state = await this.#load(id);
      const captured = new Map<number, Buffer>();
      const fh = await open(this.imagePath(id), "r");
      try {
        for (const b of state.dirty) {
          const buf = Buffer.alloc(BLOCK_SIZE);
          await fh.read(buf, 0, BLOCK_SIZE, b * BLOCK_SIZE);
          captured.set(b, buf);
        }
      } finally {
        await fh.close();
      }
      const started = await ebs.send(
        new StartSnapshotCommand({
          VolumeSize: state.sizeGiB,
          ...(state.lastSnapshotId ? { ParentSnapshotId: state.lastSnapshotId } : {}),
          Description: options.description ?? `cgmirror simulated snapshot of ${id}`,
          Tags: Object.entries({ ...options.tags, "cgmirror:volume": id }).map(([Key, Value]) => ({
            Key,
            Value,
          })),
          ...(options.clientToken ? { ClientToken: options.clientToken } : {}),
        }),
      );
      const snapshotId = started.SnapshotId!;
      const startTime = started.StartTime ?? new Date();
      const pitImage = this.snapshotImagePath(snapshotId);
      await this.#sparseCopy(this.imagePath(id), pitImage, state.sizeGiB, state.written);
      state.dirty = [];
      (state as { lastSnapshotId?: string }).lastSnapshotId = snapshotId;
      (state as { snapshots: SimulatedVolume["snapshots"] }).snapshots = [
        ...state.snapshots,
        { snapshotId, takenAt: startTime.toISOString(), changed: [...captured.keys()] },
      ];
      await this.#save(state);
      const completed = this.#upload(ebs, snapshotId, captured);
      completed.catch(() => {});
      return { volumeId: id, snapshotId, startTime, changedBlocks: captured.size, completed };
    }
  }

  async #upload(ebs: EBSClient, snapshotId: string, blocks: Map<number, Buffer>): Promise<void> {
    const entries = [...blocks.entries()];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < entries.length) {
        const [index, data] = entries[next++]!;
        const checksum = createHash("sha256").update(data).digest("base64");
        await withRetries(
          () =>
            ebs.send(
              new PutSnapshotBlockCommand({
                SnapshotId: snapshotId,
                BlockIndex: index,
                BlockData: data,
                DataLength: BLOCK_SIZE,
                Checksum: checksum,
                ChecksumAlgorithm: "SHA256",
              }),
            ),
          this.#uploadAttempts,
        );
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, entries.length) }, worker));
    await withRetries(
      () =>
        ebs.send(new CompleteSnapshotCommand({ SnapshotId: snapshotId, ChangedBlocksCount: entries.length })),
      this.#uploadAttempts,
    );
  }

  /**
   * Forgets a snapshot that was deleted (a reverted run deletes its new snapshots). When it is the
   * volume's newest, the previous snapshot becomes the parent of the next one again and the deleted
   * snapshot's blocks are dirty again, so the next snapshot still holds every change since that parent.
   */
  async forgetSnapshot(snapshotId: string): Promise<void> {
    for (const volume of await this.list()) {
      const at = volume.snapshots.findIndex((s) => s.snapshotId === snapshotId);
      if (at < 0) continue;
      await this.#serialize(volume.id, async () => {
        const state = await this.#load(volume.id);
        const gone = state.snapshots[at]!;
        const snapshots = state.snapshots.filter((_, i) => i !== at);
        if (at === state.snapshots.length - 1) {
          state.dirty = sortedUnion(state.dirty, gone.changed);
          const previous = snapshots.at(-1)?.snapshotId;
          if (previous) (state as { lastSnapshotId?: string }).lastSnapshotId = previous;
          else delete (state as { lastSnapshotId?: string }).lastSnapshotId;
        }
        (state as { snapshots: SimulatedVolume["snapshots"] }).snapshots = snapshots;
        await this.#save(state);
      });
    }
    await rm(this.snapshotImagePath(snapshotId), { force: true });
  }

  /** Copy a snapshot's point-in-time image to `out` (for comparisons). */
  async exportSnapshotImage(snapshotId: string, out: string): Promise<void> {
    if (!existsSync(this.snapshotImagePath(snapshotId))) {
      throw new VolumeSimulatorError(`no point-in-time image is kept for snapshot ${snapshotId}`);
    }
    await copyFile(this.snapshotImagePath(snapshotId), out);
  }
}
