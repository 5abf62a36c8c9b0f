import { createHash } from "node:crypto";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { InvalidArgumentError } from "../errors.ts";

/**
 * The worker's whole program (an eval'd CommonJS script, so that it needs no file of its own next to
 * a bundled Lambda): SHA-256 of each span of a shared buffer, the 32-byte digests sent back in one
 * transferred array.
 */
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { createHash } = require("node:crypto");
parentPort.on("message", ({ id, buffer, spans }) => {
  const bytes = new Uint8Array(buffer);
  for (let i = 0; i < spans.length; i += 2) {
    const digest = createHash("sha256").update(bytes.subarray(spans[i], spans[i] + spans[i + 1])).digest();
    parentPort.postMessage({ id, k: i / 2, digest });
  }
});
`;

/** Shared buffers below this size are rounded up, so that one buffer serves ranges of any size up to it. */
const MIN_SLOT = 8 * 1024 * 1024;

interface Request {
  readonly views: readonly Uint8Array[];
  /** The pool's buffer the views were copied into (reused once their digests are known). */
  readonly slot: SharedArrayBuffer | undefined;
  readonly resolvers: Array<((digest: Uint8Array) => void) | undefined>;
  left: number;
  readonly thread: Thread;
}

interface Thread {
  readonly worker: Worker;
  pending: number;
}

function hashInline(view: Uint8Array): Uint8Array {
  return createHash("sha256").update(view).digest();
}

/**
 * SHA-256 of many blocks on worker threads, so that checking what restore reads does not take the
 * event loop's thread (which also parses every response and issues every write). Blocks read into a
 * buffer from `borrow` are hashed in place; others are first copied into a reused shared buffer (one
 * memcpy, pages already mapped). One thread hashes the blocks of a call in order, each digest sent
 * back as soon as it is known; the calling thread is free meanwhile. A thread that dies (or a closed pool) costs nothing but speed:
 * its calls, and every later one, are hashed on the calling thread instead.
 */
export class Sha256Pool {
  readonly #threads: Thread[] = [];
  readonly #requests = new Map<number, Request>();
  /** Shared buffers not in use, kept for reuse (at most #maxFree). */
  readonly #free: SharedArrayBuffer[] = [];
  /** Shared buffers handed out (by `borrow`, or holding a call's copies) and not yet back. */
  readonly #lent = new WeakSet<SharedArrayBuffer>();
  readonly #maxFree: number;
  #nextId = 0;
  #closed = false;

  /** @param threads worker threads (at least 1) */
  constructor(threads: number) {
    const n = Math.max(1, Math.floor(threads));
    this.#maxFree = 16;
    for (let i = 0; i < n; i++) this.#threads.push(this.#spawn());
  }

  /** Worker threads alive (0 once closed, or once every thread died). */
  get threads(): number {
    return this.#threads.length;
  }

  #spawn(): Thread {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    const thread: Thread = { worker, pending: 0 };
    worker.unref(); // referenced only while it has work (below): an idle pool never holds the process
    worker.on("message", ({ id, k, digest }: { id: number; k: number; digest: Uint8Array }) => {
      const r = this.#requests.get(id);
      const resolve = r?.resolvers[k];
      if (!r || !resolve) return;
      r.resolvers[k] = undefined;
      if (--r.left === 0) this.#settle(id, r);
      resolve(digest);
    });
    const lost = () => {
      const at = this.#threads.indexOf(thread);
      if (at >= 0) this.#threads.splice(at, 1);
      for (const [id, r] of this.#requests) {
        if (r.thread !== thread) continue;
        this.#settle(id, r);
        for (const [k, resolve] of r.resolvers.entries()) resolve?.(hashInline(r.views[k]!));
      }
    };
    worker.on("error", lost);
    worker.on("exit", lost);
    return thread;
  }

  #settle(id: number, r: Request): void {
    this.#requests.delete(id);
    if (--r.thread.pending === 0) r.thread.worker.unref();
    if (r.slot) this.giveBack(new Uint8Array(r.slot, 0, 0));
  }

  #slot(bytes: number): SharedArrayBuffer {
    const at = this.#free.findIndex((s) => s.byteLength >= bytes);
    const slot = at >= 0 ? this.#free.splice(at, 1)[0]! : new SharedArrayBuffer(Math.max(bytes, MIN_SLOT));
    this.#lent.add(slot);
    return slot;
  }

  /**
   * A buffer of `length` bytes in memory the hash threads share: blocks read into it are hashed where
   * they are, without a copy. Give it back (`giveBack`) once nothing reads it any more, and it serves
   * a later call with its pages already mapped (a new buffer's first touch costs a page fault per
   * page, more than the copy it saves); one never given back is simply collected.
   */
  borrow(length: number): Uint8Array {
    return new Uint8Array(this.#slot(length), 0, length);
  }

  /** Takes back a buffer from `borrow` (anything else is ignored). Its bytes are reused: keep no view of it. */
  giveBack(view: Uint8Array): void {
    const slot = view.buffer;
    if (!(slot instanceof SharedArrayBuffer) || !this.#lent.delete(slot)) return;
    if (this.#free.length < this.#maxFree) this.#free.push(slot);
  }

  /** The SHA-256 of each view (32 bytes), all at once. */
  digest(views: readonly Uint8Array[]): Promise<Uint8Array[]> {
    return Promise.all(this.digestEach(views));
  }

  /**
   * The SHA-256 of each view (32 bytes), each promise settled as soon as its digest is known (the
   * views are hashed in order): a caller can use the first block while the others are still hashed.
   */
  digestEach(views: readonly Uint8Array[]): Array<Promise<Uint8Array>> {
    if (views.length === 0) return [];
    const thread = this.#threads.reduce<Thread | undefined>(
      (best, t) => (best && best.pending <= t.pending ? best : t),
      undefined,
    );
    if (!thread || this.#closed) return views.map((v) => Promise.resolve(hashInline(v)));
    const spans: number[] = [];
    let slot: SharedArrayBuffer;
    let recycle = false;
    const first = views[0]!.buffer;
    if (first instanceof SharedArrayBuffer && views.every((v) => v.buffer === first)) {
      // Already in shared memory (a body read into a borrowed buffer): nothing to copy.
      slot = first;
      for (const v of views) spans.push(v.byteOffset, v.byteLength);
    } else {
      let total = 0;
      for (const v of views) total += v.byteLength;
      slot = this.#slot(total);
      recycle = true;
      const shared = new Uint8Array(slot);
      let at = 0;
      for (const v of views) {
        shared.set(v, at);
        spans.push(at, v.byteLength);
        at += v.byteLength;
      }
    }
    const id = this.#nextId++;
    const resolvers: Request["resolvers"] = [];
    const out = views.map(
      (_, k) =>
        new Promise<Uint8Array>((resolve) => {
          resolvers[k] = resolve;
        }),
    );
    this.#requests.set(id, {
      views,
      slot: recycle ? slot : undefined,
      resolvers,
      left: views.length,
      thread,
    });
    if (thread.pending++ === 0) thread.worker.ref();
    thread.worker.postMessage({ id, buffer: slot, spans });
    return out;
  }

  /** Stops the threads; calls still waiting, and every later one, are hashed on the calling thread. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#threads].map((t) => t.worker.terminate()));
  }
}

let shared: Sha256Pool | null | undefined;

/**
 * The process's pool: one thread per spare vCPU (at most 2), none on a machine with one vCPU (a
 * Lambda function under 1,769 MB), where a thread would only add copies. `CGM_HASH_THREADS` sets the
 * count (0: hash on the calling thread).
 */
export function sharedSha256Pool(): Sha256Pool | null {
  if (shared !== undefined) return shared;
  const env = process.env.CGM_HASH_THREADS;
  const n = env !== undefined && env !== "" ? Number(env) : Math.min(2, availableParallelism() - 1);
  if (!Number.isInteger(n) || n < 0) {
    throw new InvalidArgumentError(
      `CGM_HASH_THREADS must be a whole number of threads, 0 or more (0: hash on the calling thread); it is "${env}"`,
    );
  }
  shared = n > 0 ? new Sha256Pool(n) : null;
  return shared;
}
