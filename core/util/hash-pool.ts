import { createHash } from "node:crypto";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { InvalidArgumentError } from "../errors.ts";

/**
 * The worker's whole program (an eval'd CommonJS script, so that it needs no file of its own next to
 * a bundled Lambda). Two kinds of call: spans of a shared buffer, each digest sent back as soon as it
 * is known; or a buffer moved here, sent back (moved again) with every digest once all are known.
 */
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { createHash } = require("node:crypto");
parentPort.on("message", ({ id, buffer, moved, spans }) => {
  const bytes = new Uint8Array(buffer ?? moved);
  const digests = [];
  for (let i = 0; i < spans.length; i += 2) {
    const digest = createHash("sha256").update(bytes.subarray(spans[i], spans[i] + spans[i + 1])).digest();
    if (moved) digests.push(digest);
    else parentPort.postMessage({ id, k: i / 2, digest });
  }
  if (moved) parentPort.postMessage({ id, moved, digests }, [moved]);
});
`;

/** Buffers below this size are rounded up, so that one buffer serves ranges of any size up to it. */
const MIN_SLOT = 8 * 1024 * 1024;
/** Free buffers of each kind kept for reuse. */
const MAX_FREE = 16;

/** A call's spans in a buffer shared with the thread: digests come back one by one. */
interface SharedCall {
  readonly kind: "shared";
  readonly views: readonly Uint8Array[];
  /** The pool's buffer the views were copied into (reused once their digests are known). */
  readonly slot: SharedArrayBuffer | undefined;
  readonly resolvers: Array<((digest: Uint8Array) => void) | undefined>;
  left: number;
  readonly thread: Thread;
}

/** A call whose buffer was moved to the thread: it comes back with every digest. */
interface MovedCall {
  readonly kind: "moved";
  readonly resolve: (r: { view: Uint8Array; digests: Uint8Array[] }) => void;
  readonly reject: (error: unknown) => void;
  readonly byteOffset: number;
  readonly byteLength: number;
  readonly thread: Thread;
}

interface Thread {
  readonly worker: Worker;
  pending: number;
}

function hashInline(view: Uint8Array): Uint8Array {
  return createHash("sha256").update(view).digest();
}

/** A buffer moved to a hash thread that died with it: its bytes are gone, read them again. */
export class HashThreadLostError extends Error {
  constructor() {
    super("a SHA-256 thread stopped while it held a buffer; its bytes must be read again");
    this.name = "HashThreadLostError";
  }
}

/**
 * SHA-256 of many blocks on worker threads, so that checking what restore reads does not take the
 * event loop's thread (which also parses every response and issues every write).
 *
 * - A buffer from `borrow` (an ordinary one, reused: its pages stay mapped) is moved to a thread and
 *   back (`digestMoved`): no byte is copied; the caller waits for all its digests.
 * - Any other bytes (`digestEach`) are copied into a reused shared buffer (V8 copies into shared
 *   memory at about half memcpy's speed) and their digests come back one by one.
 *
 * A thread that dies (or a closed pool) costs nothing but speed: `digestEach` calls, and every later
 * one, are hashed on the calling thread; a moved buffer is lost with it (HashThreadLostError).
 */
export class Sha256Pool {
  readonly #threads: Thread[] = [];
  readonly #calls = new Map<number, SharedCall | MovedCall>();
  /** Shared buffers for copies, not in use. */
  readonly #freeShared: SharedArrayBuffer[] = [];
  /** Buffers for `borrow`, not in use. */
  readonly #free: ArrayBuffer[] = [];
  /** Buffers handed out by `borrow` (or back from a thread) and not given back yet. */
  readonly #lent = new WeakSet<ArrayBuffer>();
  #nextId = 0;
  #closed = false;
  /** Buffers `borrow` had to make (the others were given back and reused). */
  buffersMade = 0;

  /**
   * @param threads worker threads; 0: none, every hash is made on the calling thread (the pool still
   *   lends reused buffers)
   */
  constructor(threads: number) {
    const n = Math.max(0, Math.floor(threads));
    for (let i = 0; i < n; i++) this.#threads.push(this.#spawn());
  }

  /** Worker threads alive (0 once closed, or once every thread died). */
  get threads(): number {
    return this.#threads.length;
  }

  #spawn(): Thread {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    const thread: Thread = { worker, pending: 0 };
    worker.on(
      "message",
      (m: { id: number; k: number; digest: Uint8Array; moved?: ArrayBuffer; digests?: Uint8Array[] }) => {
        const call = this.#calls.get(m.id);
        if (!call) return;
        if (call.kind === "moved") {
          this.#settle(m.id, call);
          this.#lent.add(m.moved!);
          call.resolve({
            view: new Uint8Array(m.moved!, call.byteOffset, call.byteLength),
            digests: m.digests!,
          });
          return;
        }
        const resolve = call.resolvers[m.k];
        if (!resolve) return;
        call.resolvers[m.k] = undefined;
        if (--call.left === 0) this.#settle(m.id, call);
        resolve(m.digest);
      },
    );
    const lost = () => {
      const at = this.#threads.indexOf(thread);
      if (at >= 0) this.#threads.splice(at, 1);
      for (const [id, call] of this.#calls) {
        if (call.thread !== thread) continue;
        this.#settle(id, call);
        if (call.kind === "moved") call.reject(new HashThreadLostError());
        else for (const [k, resolve] of call.resolvers.entries()) resolve?.(hashInline(call.views[k]!));
      }
    };
    worker.on("error", lost);
    worker.on("exit", lost);
    // Referenced only while it has work: an idle pool never holds the process. After the listeners:
    // listening for "message" refs the worker's port again, so a thread unreferenced before that kept
    // the process alive until its first call had come and gone.
    worker.unref();
    return thread;
  }

  #settle(id: number, call: SharedCall | MovedCall): void {
    this.#calls.delete(id);
    if (--call.thread.pending === 0) call.thread.worker.unref();
    if (call.kind === "shared" && call.slot && this.#freeShared.length < MAX_FREE) {
      this.#freeShared.push(call.slot);
    }
  }

  /** The least busy live thread, if any (none once closed). */
  #thread(): Thread | undefined {
    if (this.#closed) return undefined;
    return this.#threads.reduce<Thread | undefined>(
      (best, t) => (best && best.pending <= t.pending ? best : t),
      undefined,
    );
  }

  /**
   * A buffer of `length` bytes the pool can move to a hash thread and back without copying it. Give
   * it back (`giveBack`) once nothing reads it any more, and it serves a later call with its pages
   * already mapped (a new buffer's first touch costs a page fault per page, more than the hash saves);
   * one never given back is simply collected.
   */
  borrow(length: number): Uint8Array {
    const at = this.#free.findIndex((b) => b.byteLength >= length);
    let buffer: ArrayBuffer;
    if (at >= 0) buffer = this.#free.splice(at, 1)[0]!;
    else {
      buffer = new ArrayBuffer(Math.max(length, MIN_SLOT));
      this.buffersMade++;
    }
    this.#lent.add(buffer);
    return new Uint8Array(buffer, 0, length);
  }

  /** Whether `view` is in a buffer from `borrow` not given back yet (so `digestMoved` takes it). */
  lent(view: Uint8Array): boolean {
    return view.buffer instanceof ArrayBuffer && this.#lent.has(view.buffer);
  }

  /** Takes back a buffer from `borrow` (anything else is ignored). Its bytes are reused: keep no view of it. */
  giveBack(view: Uint8Array): void {
    const buffer = view.buffer;
    if (!(buffer instanceof ArrayBuffer) || !this.#lent.delete(buffer)) return;
    if (this.#free.length < MAX_FREE) this.#free.push(buffer);
  }

  /**
   * The SHA-256 of spans of a borrowed buffer (`[offset, length]` relative to `view`), hashed on a
   * thread the buffer is moved to: until this settles every view of the buffer reads as empty. Resolves
   * to a view of the same bytes (same offset and length) and the digests, in order. Hashes on the
   * calling thread (nothing moved) when the pool has no thread or `view` is not a borrowed buffer.
   * @throws HashThreadLostError when the thread died holding the buffer (its bytes are gone)
   */
  digestMoved(
    view: Uint8Array,
    spans: ReadonlyArray<readonly [number, number]>,
  ): Promise<{ view: Uint8Array; digests: Uint8Array[] }> {
    const thread = this.#thread();
    if (!thread || !this.lent(view)) {
      return Promise.resolve({
        view,
        digests: spans.map(([at, n]) => hashInline(view.subarray(at, at + n))),
      });
    }
    const buffer = view.buffer as ArrayBuffer;
    this.#lent.delete(buffer); // it comes back as a new ArrayBuffer (the same memory)
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#calls.set(id, {
        kind: "moved",
        resolve,
        reject,
        byteOffset: view.byteOffset,
        byteLength: view.byteLength,
        thread,
      });
      if (thread.pending++ === 0) thread.worker.ref();
      const flat = spans.flatMap(([at, n]) => [view.byteOffset + at, n]);
      thread.worker.postMessage({ id, moved: buffer, spans: flat }, [buffer]);
    });
  }

  /** The SHA-256 of each view (32 bytes), all at once. */
  digest(views: readonly Uint8Array[]): Promise<Uint8Array[]> {
    return Promise.all(this.digestEach(views));
  }

  /**
   * The SHA-256 of each view (32 bytes), each promise settled as soon as its digest is known (the
   * views are hashed in order): a caller can use the first block while the others are still hashed.
   * The views are copied into shared memory first (not if they already are in one shared buffer).
   */
  digestEach(views: readonly Uint8Array[]): Array<Promise<Uint8Array>> {
    if (views.length === 0) return [];
    const thread = this.#thread();
    if (!thread) return views.map((v) => Promise.resolve(hashInline(v)));
    const spans: number[] = [];
    let slot: SharedArrayBuffer;
    let recycle = false;
    const first = views[0]!.buffer;
    if (first instanceof SharedArrayBuffer && views.every((v) => v.buffer === first)) {
      slot = first; // already shared: nothing to copy
      for (const v of views) spans.push(v.byteOffset, v.byteLength);
    } else {
      let total = 0;
      for (const v of views) total += v.byteLength;
      const at = this.#freeShared.findIndex((b) => b.byteLength >= total);
      slot = at >= 0 ? this.#freeShared.splice(at, 1)[0]! : new SharedArrayBuffer(Math.max(total, MIN_SLOT));
      recycle = true;
      const shared = new Uint8Array(slot);
      let offset = 0;
      for (const v of views) {
        shared.set(v, offset);
        spans.push(offset, v.byteLength);
        offset += v.byteLength;
      }
    }
    const id = this.#nextId++;
    const resolvers: SharedCall["resolvers"] = [];
    const out = views.map(
      (_, k) =>
        new Promise<Uint8Array>((resolve) => {
          resolvers[k] = resolve;
        }),
    );
    this.#calls.set(id, {
      kind: "shared",
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

  /**
   * Stops the threads. `digestEach` calls still waiting, and every later one, are hashed on the calling
   * thread; a `digestMoved` call still waiting fails with HashThreadLostError.
   */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#threads].map((t) => t.worker.terminate()));
  }
}

let shared: Sha256Pool | undefined;

/**
 * The process's pool: one thread per spare vCPU (at most 2), none on a machine with one vCPU (a
 * Lambda function of 1,769 MB or less), where a thread would only add copies; its buffers are lent
 * there too. `CGM_HASH_THREADS` sets the count (0: hash on the calling thread).
 */
export function sharedSha256Pool(): Sha256Pool {
  if (shared !== undefined) return shared;
  const env = process.env.CGM_HASH_THREADS;
  const n = env !== undefined && env !== "" ? Number(env) : Math.min(2, availableParallelism() - 1);
  if (!Number.isInteger(n) || n < 0) {
    throw new InvalidArgumentError(
      `CGM_HASH_THREADS must be a whole number of threads, 0 or more (0: hash on the calling thread); it is "${env}"`,
    );
  }
  shared = new Sha256Pool(n);
  return shared;
}
