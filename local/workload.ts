/**
 * The demo workload: a tiny write-ahead-logged store spread over several volumes of several instances.
 *
 * Record n is written to the log volume FIRST (sequence number, target volume, block, SHA-256 of the
 * data), and only then its data block to a data volume. So at any single point in time:
 *
 *   every data block that carries a record header is named, with the same hash, by a log record.
 *
 * A backup whose volumes were captured at different moments (data later than log) can break that
 * invariant; a consistency group never does. `checkInvariant` checks it on restored images.
 */
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import type { VolumeSimulator } from "./volumes/simulator.ts";

export const WAL_BLOCK = 524_288;
const LOG_RECORD = 64;
const DATA_MAGIC = 0x43474d44; // "CGMD"
const LOG_MAGIC = 0x43474d4c; // "CGML"
/** Data records go to blocks [DATA_FIRST_BLOCK, DATA_FIRST_BLOCK + dataBlocks). */
const DATA_FIRST_BLOCK = 16;

export interface WorkloadLayout {
  readonly logVolume: string;
  readonly dataVolumes: readonly string[];
  /** Data blocks used per data volume (records overwrite them round-robin). @default 64 */
  readonly dataBlocks?: number;
}

function dataBlock(seq: number, volumeIndex: number, block: number): Buffer {
  const buf = Buffer.alloc(WAL_BLOCK);
  // Deterministic, mostly incompressible content identified by (seq, volume, block).
  const seed = createHash("sha256").update(`cgmirror-demo:${seq}:${volumeIndex}:${block}`).digest();
  for (let off = 0; off < WAL_BLOCK; off += 32) {
    seed.copy(buf, off);
    seed[0] = (seed[0]! + 1) & 0xff;
  }
  buf.writeUInt32BE(DATA_MAGIC, 0);
  buf.writeUInt32BE(seq, 4);
  return buf;
}

/** Writes records one after the other (log first, then data) until stopped. */
export class WalWorkload {
  readonly #sim: VolumeSimulator;
  readonly #layout: WorkloadLayout;
  #seq = 0;
  #running: Promise<void> | undefined;
  #stop = false;

  constructor(simulator: VolumeSimulator, layout: WorkloadLayout) {
    this.#sim = simulator;
    this.#layout = layout;
  }

  get records(): number {
    return this.#seq;
  }

  /** Writes one record: the log record, then the data block it names. */
  async writeRecord(): Promise<void> {
    const seq = ++this.#seq;
    const dataBlocks = this.#layout.dataBlocks ?? 64;
    const volumeIndex = seq % this.#layout.dataVolumes.length;
    const volume = this.#layout.dataVolumes[volumeIndex]!;
    const block = DATA_FIRST_BLOCK + ((seq * 7919) % dataBlocks);
    const data = dataBlock(seq, volumeIndex, block);
    const record = Buffer.alloc(LOG_RECORD);
    record.writeUInt32BE(LOG_MAGIC, 0);
    record.writeUInt32BE(seq, 4);
    record.writeUInt16BE(volumeIndex, 8);
    record.writeUInt32BE(block, 10);
    createHash("sha256").update(data).digest().copy(record, 14);
    await this.#sim.write(this.#layout.logVolume, seq * LOG_RECORD, record);
    await this.#sim.write(volume, block * WAL_BLOCK, data);
  }

  /** Keeps writing in the background, `pauseMs` between records, until `stop()`. */
  start(pauseMs = 5): void {
    this.#stop = false;
    this.#running = (async () => {
      while (!this.#stop) {
        await this.writeRecord();
        await new Promise((r) => setTimeout(r, pauseMs));
      }
    })();
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await this.#running;
  }
}

export interface InvariantReport {
  readonly ok: boolean;
  readonly logRecords: number;
  readonly dataRecords: number;
  readonly problems: readonly string[];
}

/**
 * Checks the write-ahead invariant on images of the log volume and the data volumes (in layout order),
 * e.g. restored from one generation.
 */
export async function checkInvariant(
  logImage: string,
  dataImages: readonly string[],
  dataBlocks = 64,
): Promise<InvariantReport> {
  const problems: string[] = [];
  const log = new Map<number, { volumeIndex: number; block: number; sha256: string }>();
  const fh = await open(logImage, "r");
  try {
    const buf = Buffer.alloc(LOG_RECORD);
    for (let seq = 1; ; seq++) {
      const { bytesRead } = await fh.read(buf, 0, LOG_RECORD, seq * LOG_RECORD);
      if (bytesRead < LOG_RECORD || buf.readUInt32BE(0) !== LOG_MAGIC) break;
      if (buf.readUInt32BE(4) !== seq)
        problems.push(`log record at slot ${seq} names sequence ${buf.readUInt32BE(4)}`);
      log.set(seq, {
        volumeIndex: buf.readUInt16BE(8),
        block: buf.readUInt32BE(10),
        sha256: buf.subarray(14, 46).toString("hex"),
      });
    }
  } finally {
    await fh.close();
  }
  let dataRecords = 0;
  for (const [volumeIndex, image] of dataImages.entries()) {
    const dh = await open(image, "r");
    try {
      const size = (await dh.stat()).size;
      const buf = Buffer.alloc(WAL_BLOCK);
      const end = Math.min(DATA_FIRST_BLOCK + dataBlocks, Math.floor(size / WAL_BLOCK));
      for (let block = DATA_FIRST_BLOCK; block < end; block++) {
        const { bytesRead } = await dh.read(buf, 0, 8, block * WAL_BLOCK);
        if (bytesRead < 8 || buf.readUInt32BE(0) !== DATA_MAGIC) continue;
        await dh.read(buf, 0, WAL_BLOCK, block * WAL_BLOCK);
        dataRecords++;
        const seq = buf.readUInt32BE(4);
        const entry = log.get(seq);
        const sha = createHash("sha256").update(buf).digest("hex");
        if (!entry)
          problems.push(
            `data block ${block} of data volume ${volumeIndex} holds record ${seq}, which the log does not have`,
          );
        else if (entry.volumeIndex !== volumeIndex || entry.block !== block || entry.sha256 !== sha) {
          problems.push(`data block ${block} of data volume ${volumeIndex} does not match log record ${seq}`);
        }
      }
    } finally {
      await dh.close();
    }
  }
  return { ok: problems.length === 0, logRecords: log.size, dataRecords, problems };
}
