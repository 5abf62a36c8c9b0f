import { Worker } from "node:worker_threads";
import type { SyntheticParams } from "./synthetic.ts";

interface Pending {
  resolve(v: { data: Buffer; checksum: string }): void;
  reject(e: Error): void;
}

/**
 * Generates synthetic block content (copy + SHA-256, about 1 ms of CPU per block) on worker threads,
 * so the emulator's event loop only moves bytes. Buffers are transferred, not copied.
 */
export class SyntheticPool {
  readonly #workers: Worker[] = [];
  readonly #pending = new Map<number, Pending>();
  #next = 0;
  #seq = 0;

  constructor(size: number) {
    for (let i = 0; i < size; i++) {
      const w = new Worker(new URL("./synthetic-worker.ts", import.meta.url));
      w.unref();
      w.on("message", (m: { id: number; checksum?: string; data?: ArrayBuffer; error?: string }) => {
        const p = this.#pending.get(m.id);
        if (p === undefined) return;
        this.#pending.delete(m.id);
        if (m.error !== undefined || m.data === undefined || m.checksum === undefined) {
          p.reject(new Error(m.error ?? "synthetic worker answered without data"));
        } else p.resolve({ data: Buffer.from(m.data), checksum: m.checksum });
      });
      w.on("error", (e) => {
        for (const p of this.#pending.values()) p.reject(e);
        this.#pending.clear();
      });
      this.#workers.push(w);
    }
  }

  get size(): number {
    return this.#workers.length;
  }

  content(params: SyntheticParams, index: number): Promise<{ data: Buffer; checksum: string }> {
    const id = this.#seq++;
    const w = this.#workers[this.#next++ % this.#workers.length] as Worker;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      w.postMessage({ id, params, index });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.terminate()));
  }
}
