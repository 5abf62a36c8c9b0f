/**
 * A small pool of 512 KiB block buffers. The EBS adapter reads each block into a pooled buffer
 * (`take`) and the worker gives it back (`give`) once the segment writer has copied or encoded it,
 * so a transfer does not allocate (and page-fault) fresh memory for every block.
 *
 * Give a buffer back only when nothing else holds it.
 */
import { BLOCK_SIZE } from "./bytes.ts";

export class BlockBufferPool {
  readonly #free: Buffer[] = [];
  readonly #max: number;
  allocated = 0;
  reused = 0;

  /** `max`: buffers kept for reuse (about the worker's maximum concurrency). @default 128 */
  constructor(max = 128) {
    this.#max = max;
  }

  take(length: number): Buffer | undefined {
    if (length !== BLOCK_SIZE) return undefined;
    const b = this.#free.pop();
    if (b) {
      this.reused++;
      return b;
    }
    this.allocated++;
    return Buffer.allocUnsafeSlow(BLOCK_SIZE);
  }

  give(buffer: Uint8Array): void {
    if (buffer.byteLength !== BLOCK_SIZE || !Buffer.isBuffer(buffer) || this.#free.length >= this.#max)
      return;
    if (buffer.byteOffset !== 0 || buffer.buffer.byteLength !== BLOCK_SIZE) return;
    this.#free.push(buffer);
  }
}
