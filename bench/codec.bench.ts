/**
 * Block codec benchmark (npm run bench:codec): compresses 512 KiB blocks of four kinds of data with
 * every Node-native codec at fast levels (best of 3) and prints one JSON line.
 * Data: source text (node_modules JavaScript), a binary (the Node executable), database-like pages
 * (8 KiB pages of rows with free space zeroed, as PostgreSQL/MySQL leave them), and random bytes
 * (encrypted or already-compressed data).
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  brotliCompressSync,
  brotliDecompressSync,
  constants,
  gunzipSync,
  gzipSync,
  zstdCompressSync,
  zstdDecompressSync,
} from "node:zlib";
import { BLOCK_SIZE } from "#core/format/bytes.ts";

const BLOCKS_PER_KIND = Number(process.env.CGM_BENCH_BLOCKS ?? 32);

function blocksOf(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at + BLOCK_SIZE <= data.byteLength && out.length < BLOCKS_PER_KIND; at += BLOCK_SIZE * 3) {
    out.push(data.subarray(at, at + BLOCK_SIZE));
  }
  return out;
}

function dbPages(): Buffer {
  const buf = Buffer.alloc(BLOCK_SIZE * BLOCKS_PER_KIND * 3);
  let id = 1;
  for (let page = 0; page < buf.byteLength / 8192; page++) {
    const base = page * 8192;
    const fill = 0.55 + ((page * 7919) % 100) / 250; // 55–95 % full
    let at = base + 24;
    while (at < base + 8192 * fill) {
      const row = `${id}\t${(id * 2654435761) >>> 0}\tcustomer-${id % 5000}\t${(id % 977) * 3.25}\t2026-11-${String((id % 28) + 1).padStart(2, "0")}\tstatus=${id % 3 ? "shipped" : "open"}\n`;
      at += buf.write(row, at);
      id++;
    }
  }
  return buf;
}

const kinds: Record<string, Buffer[]> = {
  text: blocksOf(readFileSync("node_modules/typescript/lib/typescript.js")),
  binary: blocksOf(readFileSync("node_modules/node/bin/node").subarray(8 * 1024 * 1024)),
  database: blocksOf(dbPages()),
  random: Array.from({ length: BLOCKS_PER_KIND }, () => randomBytes(BLOCK_SIZE)),
};

const codecs: Record<string, { c: (b: Buffer) => Buffer; d: (b: Buffer) => Buffer }> = {
  "zstd-1": {
    c: (b) => zstdCompressSync(b, { params: { [constants.ZSTD_c_compressionLevel]: 1 } }),
    d: (b) => zstdDecompressSync(b),
  },
  "zstd-3": {
    c: (b) => zstdCompressSync(b, { params: { [constants.ZSTD_c_compressionLevel]: 3 } }),
    d: (b) => zstdDecompressSync(b),
  },
  "brotli-1": {
    c: (b) => brotliCompressSync(b, { params: { [constants.BROTLI_PARAM_QUALITY]: 1 } }),
    d: (b) => brotliDecompressSync(b),
  },
  "gzip-1": { c: (b) => gzipSync(b, { level: 1 }), d: (b) => gunzipSync(b) },
};

const results: Record<
  string,
  Record<string, { ratio: number; compress_mib_s: number; decompress_mib_s: number }>
> = {};
for (const [kind, blocks] of Object.entries(kinds)) {
  results[kind] = {};
  const raw = blocks.length * BLOCK_SIZE;
  for (const [name, codec] of Object.entries(codecs)) {
    for (const b of blocks.slice(0, 2)) codec.d(codec.c(b)); // warm up
    let stored = 0;
    let packed: Buffer[] = [];
    let cBest = Number.POSITIVE_INFINITY;
    let dBest = Number.POSITIVE_INFINITY;
    for (let rep = 0; rep < 3; rep++) {
      const t0 = performance.now();
      packed = blocks.map((b) => codec.c(b));
      const t1 = performance.now();
      for (const p of packed) codec.d(p);
      const t2 = performance.now();
      cBest = Math.min(cBest, t1 - t0);
      dBest = Math.min(dBest, t2 - t1);
    }
    for (const [i, p] of packed.entries()) stored += Math.min(p.byteLength, blocks[i]!.byteLength); // never expand
    results[kind]![name] = {
      ratio: Number((stored / raw).toFixed(3)),
      compress_mib_s: Math.round(raw / 2 ** 20 / (cBest / 1000)),
      decompress_mib_s: Math.round(raw / 2 ** 20 / (dBest / 1000)),
    };
  }
}
console.log(JSON.stringify({ blocks_per_kind: BLOCKS_PER_KIND, node: process.version, results }));
