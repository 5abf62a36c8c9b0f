/**
 * Byte comparison of two image files in bounded memory (restored image vs. point-in-time image).
 *
 * The images are sparse (a 1 GiB volume with a few written blocks). A buffered read of a hole makes
 * the kernel allocate and zero a page-cache page for it, so comparing two fresh 1 GiB images costs
 * 2 GiB of page cache and seconds of system time (9 s per GiB on a loaded 2-core machine), every
 * time, since every restore and every snapshot makes fresh files. Read with O_DIRECT (Linux), a hole
 * is zero-filled straight into the buffer without the page cache: 0.1–0.2 s per GiB. O_DIRECT needs
 * page-aligned buffers, which WebAssembly memories are. Where O_DIRECT is not available (another OS,
 * a file system without it such as tmpfs) the files are read through the page cache as before. Either
 * way every byte of both files is read and compared.
 */
import { constants } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";

/** Chunk of each read (a multiple of every O_DIRECT alignment). */
const CHUNK = 8 * 1024 * 1024;
const WASM_PAGE = 65_536;

/** WebAssembly.Memory (a global of Node; the project's TypeScript libs do not declare it). */
const WasmMemory = (
  globalThis as unknown as {
    WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } };
  }
).WebAssembly.Memory;

/** Page-aligned buffer pairs for O_DIRECT reads, reused across calls (one per concurrent compare). */
const alignedPool: Array<[Buffer, Buffer]> = [];

function alignedPair(): [Buffer, Buffer] {
  const reused = alignedPool.pop();
  if (reused) return reused;
  // One memory per buffer: a WebAssembly memory's backing store starts on a page boundary.
  const make = () => Buffer.from(new WasmMemory({ initial: CHUNK / WASM_PAGE }).buffer, 0, CHUNK);
  return [make(), make()];
}

/** Reads up to `CHUNK` bytes at `position` (a multiple of CHUNK): fewer only at the end of the file. */
async function readChunk(fh: FileHandle, buf: Buffer, position: number): Promise<number> {
  let got = 0;
  while (got < CHUNK) {
    const { bytesRead } = await fh.read(buf, got, CHUNK - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
    // An O_DIRECT read is short only at the end of the file (a tail that is not block-aligned).
    if (got % 512 !== 0) break;
  }
  return got;
}

async function compareOpen(fa: FileHandle, fb: FileHandle, bufA: Buffer, bufB: Buffer): Promise<number> {
  const [sa, sb] = [(await fa.stat()).size, (await fb.stat()).size];
  const size = Math.min(sa, sb);
  for (let off = 0; off < size; off += CHUNK) {
    const n = Math.min(CHUNK, size - off);
    const [ra, rb] = await Promise.all([readChunk(fa, bufA, off), readChunk(fb, bufB, off)]);
    if (ra < n || rb < n) {
      throw new Error(`short read at byte ${off} (${Math.min(ra, rb)} of ${n} bytes): the file changed`);
    }
    if (bufA.compare(bufB, 0, n, 0, n) !== 0) {
      for (let i = 0; i < n; i++) if (bufA[i] !== bufB[i]) return off + i;
    }
  }
  return sa === sb ? -1 : size;
}

async function compareWith(a: string, b: string, flags: number, bufA: Buffer, bufB: Buffer): Promise<number> {
  const fa = await open(a, flags);
  try {
    const fb = await open(b, flags);
    try {
      return await compareOpen(fa, fb, bufA, bufB);
    } finally {
      await fb.close();
    }
  } finally {
    await fa.close();
  }
}

/** Whether O_DIRECT was refused (by the file system, or a buffer it does not accept), not a real error. */
function directRefused(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === "EINVAL";
}

/**
 * The first byte offset where the files differ (or where the shorter one ends), or -1 when they are
 * identical. `direct: false` reads through the page cache (tests use it to check both paths).
 */
export async function firstDifference(
  a: string,
  b: string,
  options: { direct?: boolean } = {},
): Promise<number> {
  const direct = options.direct ?? true;
  if (direct && constants.O_DIRECT !== undefined) {
    const pair = alignedPair();
    try {
      return await compareWith(a, b, constants.O_RDONLY | constants.O_DIRECT, pair[0], pair[1]);
    } catch (err) {
      if (!directRefused(err)) throw err;
    } finally {
      alignedPool.push(pair);
    }
  }
  return compareWith(a, b, constants.O_RDONLY, Buffer.alloc(CHUNK), Buffer.alloc(CHUNK));
}
