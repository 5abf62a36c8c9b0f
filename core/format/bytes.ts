import { createHash, randomBytes } from "node:crypto";

/** EBS block size: 512 KiB. */
export const BLOCK_SIZE = 524_288;

export function sha256(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest().buffer.slice(0));
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

export function fromHex(hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex, "hex"));
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  );
}

const ZEROS = Buffer.alloc(BLOCK_SIZE);

export function isAllZero(data: Uint8Array): boolean {
  const view = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let at = 0;
  while (at < view.byteLength) {
    const n = Math.min(ZEROS.byteLength, view.byteLength - at);
    if (view.compare(ZEROS, 0, n, at, at + n) !== 0) return false;
    at += n;
  }
  return true;
}

/** A random id of 16 bytes as 32 lower-case hex characters. */
export function randomId(): string {
  return randomBytes(16).toString("hex");
}

/** SHA-256 of a 512 KiB all-zero block. */
export const ZERO_BLOCK_SHA256: Uint8Array = sha256(new Uint8Array(BLOCK_SIZE));

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.byteLength;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
