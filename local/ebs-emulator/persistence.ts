import { randomBytes } from "node:crypto";
import { appendFile, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { SyntheticParams } from "./synthetic.ts";

/** On-disk layout of a persisted emulator (`dataDir`). Every file is written to a temp name, then renamed. */
export const PERSIST_FORMAT_VERSION = 1;

export interface PersistedMeta {
  readonly formatVersion: number;
  readonly tokenKey: readonly [number, number];
  readonly ownerId: string;
}

export interface PersistedSnapshot {
  readonly formatVersion: number;
  readonly id: string;
  readonly ownerId: string;
  readonly volumeSizeGiB: number;
  readonly status: "pending" | "completed" | "error";
  readonly startTimeMs: number;
  readonly parentId?: string | undefined;
  readonly description?: string | undefined;
  readonly tags: ReadonlyArray<{ Key?: string | undefined; Value?: string | undefined }>;
  readonly clientToken?: string | undefined;
  readonly fingerprint?: string | undefined;
  readonly timeoutMinutes: number;
  readonly lastActivityMs: number;
  readonly encrypted: boolean;
  readonly kmsKeyArn?: string | undefined;
  readonly synthetic?: SyntheticParams | undefined;
  /** [index, base64 SHA-256] of the blocks written to this snapshot (absent while pending: see journal). */
  readonly blocks?: ReadonlyArray<readonly [number, string]> | undefined;
}

export class PersistenceFormatError extends Error {
  override readonly name = "PersistenceFormatError";
}

export class DataDirInUseError extends Error {
  override readonly name = "DataDirInUseError";
}

async function writeAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${randomBytes(6).toString("hex")}`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

function hexOf(checksumBase64: string): string {
  return Buffer.from(checksumBase64, "base64").toString("hex");
}

export class DiskPersistence {
  readonly dir: string;
  readonly #knownBlobs = new Set<string>();
  readonly #journalChains = new Map<string, Promise<void>>();

  constructor(dir: string) {
    this.dir = dir;
  }

  async #ensureDirs(): Promise<void> {
    await mkdir(join(this.dir, "snapshots"), { recursive: true });
    await mkdir(join(this.dir, "blocks"), { recursive: true });
  }

  /**
   * Takes `<dir>/LOCK` (holding this pid) so two emulators never share a directory; a lock left by a
   * dead process is taken over.
   */
  async lock(): Promise<void> {
    const path = join(this.dir, "LOCK");
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await writeFile(path, String(process.pid), { flag: "wx" });
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      }
      const pid = Number((await readFile(path, "utf8").catch(() => "")).trim());
      let alive = false;
      if (Number.isInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch (e) {
          alive = (e as NodeJS.ErrnoException).code === "EPERM";
        }
      }
      if (alive) {
        throw new DataDirInUseError(
          `${this.dir} is in use by another EBS emulator (pid ${pid}); stop it or use another data directory`,
        );
      }
      await rm(path, { force: true });
    }
    throw new DataDirInUseError(`could not take ${path}; another emulator is starting on ${this.dir}`);
  }

  async unlock(): Promise<void> {
    await rm(join(this.dir, "LOCK"), { force: true });
  }

  /** Loads (or creates) the directory; returns its metadata and snapshots with journals replayed. */
  async load(fresh: () => PersistedMeta): Promise<{
    meta: PersistedMeta;
    snapshots: PersistedSnapshot[];
    journals: Map<string, [number, string][]>;
  }> {
    await this.#ensureDirs();
    await this.lock();
    const metaPath = join(this.dir, "emulator.json");
    let meta: PersistedMeta;
    try {
      meta = JSON.parse(await readFile(metaPath, "utf8")) as PersistedMeta;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      meta = fresh();
      await writeAtomic(metaPath, JSON.stringify(meta));
    }
    if (meta.formatVersion !== PERSIST_FORMAT_VERSION) {
      throw new PersistenceFormatError(
        `${metaPath} has format version ${meta.formatVersion}, this emulator reads ${PERSIST_FORMAT_VERSION}; use another dataDir`,
      );
    }
    const snapshots: PersistedSnapshot[] = [];
    const journals = new Map<string, [number, string][]>();
    for (const name of await readdir(join(this.dir, "snapshots"))) {
      const path = join(this.dir, "snapshots", name);
      if (name.endsWith(".json")) {
        snapshots.push(JSON.parse(await readFile(path, "utf8")) as PersistedSnapshot);
      } else if (name.endsWith(".journal")) {
        const entries: [number, string][] = [];
        for (const line of (await readFile(path, "utf8")).split("\n")) {
          const [index, checksum] = line.split(" ");
          if (index !== undefined && checksum !== undefined && /^\d+$/.test(index)) {
            entries.push([Number(index), checksum]);
          }
        }
        journals.set(name.slice(0, -".journal".length), entries);
      } else if (name.includes(".tmp-")) {
        await rm(path, { force: true });
      }
    }
    return { meta, snapshots, journals };
  }

  #blobPath(checksum: string): string {
    const hex = hexOf(checksum);
    return join(this.dir, "blocks", hex.slice(0, 2), hex);
  }

  async putBlob(checksum: string, data: Buffer): Promise<void> {
    if (this.#knownBlobs.has(checksum)) return;
    const path = this.#blobPath(checksum);
    await mkdir(join(path, ".."), { recursive: true });
    await writeAtomic(path, data);
    this.#knownBlobs.add(checksum);
  }

  readBlob(checksum: string): Promise<Buffer> {
    return readFile(this.#blobPath(checksum));
  }

  writeSnapshot(s: PersistedSnapshot): Promise<void> {
    return writeAtomic(join(this.dir, "snapshots", `${s.id}.json`), JSON.stringify(s));
  }

  /** Appends one written block to a pending snapshot's journal (serialized per snapshot). */
  appendJournal(snapshotId: string, index: number, checksum: string): Promise<void> {
    const prev = this.#journalChains.get(snapshotId) ?? Promise.resolve();
    const next = prev.then(() =>
      appendFile(join(this.dir, "snapshots", `${snapshotId}.journal`), `${index} ${checksum}\n`),
    );
    this.#journalChains.set(
      snapshotId,
      next.catch(() => undefined),
    );
    return next;
  }

  async removeJournal(snapshotId: string): Promise<void> {
    await (this.#journalChains.get(snapshotId) ?? Promise.resolve());
    this.#journalChains.delete(snapshotId);
    await rm(join(this.dir, "snapshots", `${snapshotId}.journal`), { force: true });
  }

  async deleteSnapshot(snapshotId: string): Promise<void> {
    await this.removeJournal(snapshotId);
    await rm(join(this.dir, "snapshots", `${snapshotId}.json`), { force: true });
  }
}
