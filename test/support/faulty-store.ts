/**
 * An ObjectStore wrapper that injects one fault at the n-th mutating request (put, delete,
 * DeleteObjects, multipart create/part/complete) and records every mutating request with the task
 * that issued it. Fault modes model what AWS does to a Lambda task:
 *
 * - `before-revert`: the request fails and the task fails (not retried): the workflow reverts;
 * - `before-die`:    the request fails and the execution dies there (no Revert; the lock stays);
 * - `after-die`:     the request lands, then the execution dies;
 * - `ambiguous`:     the request lands but the caller sees a 500: the task is retried.
 *
 * A dead execution makes no further request of any kind.
 */
import type { MemoryObjectStore } from "#adapters/memory-store.ts";
import type {
  GetOptions,
  ListOptions,
  MultipartUpload,
  MultipartUploadOptions,
  ObjectStore,
  ObjectVersionRef,
  PutOptions,
} from "#core/ports/object-store.ts";

export type FaultMode = "before-revert" | "before-die" | "after-die" | "ambiguous";
export const FAULT_MODES: readonly FaultMode[] = ["before-revert", "before-die", "after-die", "ambiguous"];

export interface MutatingOp {
  readonly n: number;
  readonly task: string;
  readonly op: string;
  readonly key: string;
}

const crash = () => Object.assign(new Error("injected: the task crashed here"), { name: "InjectedCrash" });
const died = () => Object.assign(new Error("injected: the execution is dead"), { name: "InjectedCrash" });
const transient = () =>
  Object.assign(new Error("We encountered an internal error. Please try again."), {
    name: "InternalError",
    $metadata: { httpStatusCode: 500 },
  });

export class FaultyStore implements ObjectStore {
  readonly inner: MemoryObjectStore;
  readonly ops: MutatingOp[] = [];
  /** The task issuing requests now (set by the pipeline hook). */
  task = "";
  fault: { readonly at: number; readonly mode: FaultMode } | undefined;
  /** More faults (request number → mode), for randomized histories. */
  readonly faults = new Map<number, FaultMode>();
  fired = false;
  dead = false;
  #count = 0;

  constructor(inner: MemoryObjectStore) {
    this.inner = inner;
  }

  #alive(): void {
    if (this.dead) throw died();
  }

  async #mutate<T>(op: string, key: string, fn: () => Promise<T>): Promise<T> {
    this.#alive();
    const n = ++this.#count;
    this.ops.push({ n, task: this.task, op, key });
    const f =
      this.fault?.at === n
        ? this.fault
        : this.faults.has(n)
          ? { at: n, mode: this.faults.get(n)! }
          : undefined;
    if (!f) return fn();
    this.fired = true;
    if (f.mode === "before-revert") throw crash();
    if (f.mode === "before-die") {
      this.dead = true;
      throw crash();
    }
    await fn();
    if (f.mode === "after-die") {
      this.dead = true;
      throw crash();
    }
    throw transient();
  }

  async get(key: string, options?: GetOptions) {
    this.#alive();
    return this.inner.get(key, options);
  }

  async head(key: string, options?: { readonly versionId?: string }) {
    this.#alive();
    return this.inner.head(key, options);
  }

  async *list(prefix: string, options?: ListOptions) {
    this.#alive();
    yield* this.inner.list(prefix, options);
  }

  async *listVersions(prefix: string) {
    this.#alive();
    yield* this.inner.listVersions(prefix);
  }

  put(key: string, body: Uint8Array, options?: PutOptions) {
    return this.#mutate("put", key, () => this.inner.put(key, body, options));
  }

  delete(key: string, options?: { readonly versionId?: string }) {
    return this.#mutate("delete", key, () => this.inner.delete(key, options));
  }

  async deleteVersions(objects: readonly ObjectVersionRef[]) {
    if (objects.length === 0) return; // no request at all
    return this.#mutate("deleteVersions", objects[0]!.key, () => this.inner.deleteVersions(objects));
  }

  async createMultipartUpload(key: string, options?: MultipartUploadOptions): Promise<MultipartUpload> {
    const upload = await this.#mutate("createMultipartUpload", key, () =>
      this.inner.createMultipartUpload(key, options),
    );
    return {
      key,
      uploadPart: (n, body) => this.#mutate("uploadPart", key, () => upload.uploadPart(n, body)),
      complete: () => this.#mutate("completeMultipartUpload", key, () => upload.complete()),
      abort: () => upload.abort(),
    };
  }
}
