import { createCipheriv, createHash } from "node:crypto";

/** Deterministic pseudo-random bytes for `--random N --seed S` (AES-256-CTR keystream). */
export function seededBytes(length: number, seed: number): Buffer {
  const key = createHash("sha256").update(`cgmirror-random:${seed}`).digest();
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(length)), cipher.final()]);
}
