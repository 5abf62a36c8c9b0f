/**
 * A free list of equal-sized buffers (EBS blocks of 512 KiB). A transfer reads thousands of blocks a
 * second; a fresh 512 KiB buffer per block is an mmap, 128 page faults (the kernel zeroes each page)
 * and an munmap, plus external memory that drives the GC. Recycled buffers cost none of that.
 */
export class BlockBufferPool {
  readonly size: number;
  readonly #maxFree: number;
  readonly #free: Buffer[] = [];
  /** Buffers allocated because the free list was empty (stats, tests). */
  allocated = 0;

  /** `maxFree` bounds what the pool keeps between uses (memory = maxFree × size at most). */
  constructor(size: number, maxFree: number) {
    if (!Number.isInteger(size) || size < 1) throw new TypeError(`expected a buffer size >= 1, got ${size}`);
    if (!Number.isInteger(maxFree) || maxFree < 0) {
      throw new TypeError(`expected maxFree as an integer >= 0, got ${maxFree}`);
    }
    this.size = size;
    this.#maxFree = maxFree;
  }

  get free(): number {
    return this.#free.length;
  }

  /** A buffer of `size` bytes with undefined content, owned by the caller until `give`. */
  take(): Buffer {
    const b = this.#free.pop();
    if (b) return b;
    this.allocated++;
    return Buffer.allocUnsafeSlow(this.size);
  }

  /** Returns a buffer taken from this pool; the caller must not use it afterwards. */
  give(b: Buffer): void {
    if (b.byteLength === this.size && b.byteOffset === 0 && this.#free.length < this.#maxFree) {
      this.#free.push(b);
    }
  }

  /**
   * A `release` function for one buffer: gives it back once; later calls do nothing (a double
   * release would hand the same buffer to two readers).
   */
  releaser(b: Buffer): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.give(b);
    };
  }
}
