/** Byte comparison of two image files in bounded memory (restored image vs. point-in-time image). */
import { open } from "node:fs/promises";

/** The first byte offset where the files differ (or where one ends), or -1 when they are identical. */
export async function firstDifference(a: string, b: string, chunkBytes = 8 * 1024 * 1024): Promise<number> {
  const fa = await open(a, "r");
  const fb = await open(b, "r");
  try {
    const [sa, sb] = [(await fa.stat()).size, (await fb.stat()).size];
    const bufA = Buffer.alloc(chunkBytes);
    const bufB = Buffer.alloc(chunkBytes);
    const size = Math.min(sa, sb);
    for (let off = 0; off < size; off += chunkBytes) {
      const n = Math.min(chunkBytes, size - off);
      await fa.read(bufA, 0, n, off);
      await fb.read(bufB, 0, n, off);
      if (bufA.compare(bufB, 0, n, 0, n) !== 0) {
        for (let i = 0; i < n; i++) if (bufA[i] !== bufB[i]) return off + i;
      }
    }
    return sa === sb ? -1 : size;
  } finally {
    await fa.close();
    await fb.close();
  }
}
