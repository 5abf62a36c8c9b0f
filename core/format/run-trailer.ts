/**
 * The trailer shared by block-index runs (kind 1) and dedup runs (kind 2) (docs/format.md §4.2):
 *
 *   "CGMIRUN\0"[8] major:u16 minor:u16 kind:u16 reserved:u16(0) pageCount:u32 entryCount:u64
 *   directoryLength:u32   (32 bytes)   then sha256[32] of (directory ‖ those 32 bytes)   = 64 bytes
 *
 * The checksum seals the directory (which holds every page's SHA-256) and every trailer field, so it
 * identifies the whole run: index roots pin it (`RunRef.sha256`).
 */
import { createHash } from "node:crypto";
import { CorruptObjectError, UnsupportedFormatError } from "../errors.ts";
import { ObjectNotFoundError, type ObjectStore } from "../ports/object-store.ts";
import { equalBytes, toHex } from "./bytes.ts";

export const RUN_MAGIC = new TextEncoder().encode("CGMIRUN\0");
export const RUN_FORMAT = { major: 2, minor: 0 } as const;
export const RUN_TRAILER_BYTES = 64;
const SEALED = 32;

/** Encodes a run's trailer for `directory`; returns it and its checksum (hex). */
export function encodeRunTrailer(
  kind: number,
  pageCount: number,
  entryCount: number,
  directory: Uint8Array,
): { trailer: Uint8Array; sha256: string } {
  const trailer = new Uint8Array(RUN_TRAILER_BYTES);
  const dv = new DataView(trailer.buffer);
  trailer.set(RUN_MAGIC, 0);
  dv.setUint16(8, RUN_FORMAT.major, true);
  dv.setUint16(10, RUN_FORMAT.minor, true);
  dv.setUint16(12, kind, true);
  dv.setUint16(14, 0, true);
  dv.setUint32(16, pageCount, true);
  dv.setBigUint64(20, BigInt(entryCount), true);
  dv.setUint32(28, directory.byteLength, true);
  const digest = createHash("sha256").update(directory).update(trailer.subarray(0, SEALED)).digest();
  trailer.set(digest, SEALED);
  return { trailer, sha256: toHex(digest) };
}

export interface OpenedRunTail {
  readonly size: number;
  readonly versionId: string | undefined;
  readonly pageCount: number;
  readonly entryCount: number;
  readonly directory: Uint8Array;
  /** The run's checksum (hex): what a pointer pins. */
  readonly sha256: string;
}

/**
 * Reads and checks a run's trailer and directory (one ranged GET of the last `guess` bytes, a second
 * only for a larger directory).
 * @param what "index run" or "dedup run", for messages
 * @param expected the object size and checksum a pointer pins, when there is one
 */
export async function openRunTail(
  store: ObjectStore,
  key: string,
  kind: number,
  dirEntryBytes: number,
  what: string,
  expected: { readonly bytes?: number; readonly sha256?: string } = {},
  guess = 64 * 1024,
): Promise<OpenedRunTail> {
  let tail: Awaited<ReturnType<ObjectStore["get"]>>;
  try {
    tail = await store.get(key, { range: { suffix: Math.max(RUN_TRAILER_BYTES, guess) } });
  } catch (cause) {
    if (cause instanceof ObjectNotFoundError) {
      throw new CorruptObjectError(key, undefined, `the ${what} is missing`, { cause });
    }
    throw cause;
  }
  const size = tail.size;
  const v = tail.versionId;
  if (expected.bytes !== undefined && size !== expected.bytes) {
    throw new CorruptObjectError(key, v, `${what} is ${size} bytes, its pointer says ${expected.bytes}`);
  }
  if (tail.body.byteLength < RUN_TRAILER_BYTES) {
    throw new CorruptObjectError(key, v, `${what} is only ${tail.body.byteLength} bytes`);
  }
  const t = tail.body.subarray(tail.body.byteLength - RUN_TRAILER_BYTES);
  if (!equalBytes(t.subarray(0, 8), RUN_MAGIC)) {
    throw new CorruptObjectError(key, v, `${what} trailer magic is not CGMIRUN`);
  }
  const dv = new DataView(t.buffer, t.byteOffset, t.byteLength);
  const major = dv.getUint16(8, true);
  const minor = dv.getUint16(10, true);
  if (major !== RUN_FORMAT.major) {
    throw new UnsupportedFormatError(key, `${what} ${major}.${minor}`, `${what} ${RUN_FORMAT.major}.x`);
  }
  const pageCount = dv.getUint32(16, true);
  const entryCount = Number(dv.getBigUint64(20, true));
  const dirLength = dv.getUint32(28, true);
  if (dirLength !== pageCount * dirEntryBytes || dirLength + RUN_TRAILER_BYTES > size) {
    throw new CorruptObjectError(key, v, `${what} directory length is inconsistent`);
  }
  let directory: Uint8Array;
  if (dirLength + RUN_TRAILER_BYTES <= tail.body.byteLength) {
    const end = tail.body.byteLength - RUN_TRAILER_BYTES;
    directory = tail.body.subarray(end - dirLength, end);
  } else {
    const start = size - RUN_TRAILER_BYTES - dirLength;
    directory = (await store.get(key, { range: { start, end: start + dirLength } })).body;
  }
  const digest = toHex(createHash("sha256").update(directory).update(t.subarray(0, SEALED)).digest());
  if (digest !== toHex(t.subarray(SEALED))) {
    throw new CorruptObjectError(key, v, `${what} directory and trailer fail their SHA-256 check`);
  }
  if (expected.sha256 !== undefined && digest !== expected.sha256) {
    throw new CorruptObjectError(
      key,
      v,
      `${what} is not the run its pointer pins (sha256 ${digest}, expected ${expected.sha256})`,
    );
  }
  // Covered by the checksum, so only a writer bug can get here; still refuse rather than guess.
  if (dv.getUint16(12, true) !== kind || dv.getUint16(14, true) !== 0) {
    throw new CorruptObjectError(key, v, `${what} has kind ${dv.getUint16(12, true)}, expected ${kind}`);
  }
  return { size, versionId: v, pageCount, entryCount, directory, sha256: digest };
}
