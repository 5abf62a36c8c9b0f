import { hashBytes } from "./hash.ts";

/**
 * Codecs for the opaque tokens the emulator hands out. Both are standard base64 (the API reference's
 * pattern is ^[A-Za-z0-9+/=]+$) of a small binary record closed by a 64-bit keyed MAC, so a token
 * cannot be forged or moved to another snapshot / index / listing by accident.
 *
 * BlockToken (28 bytes): v=1 | snapshot id (9 bytes, 17 hex digits) | index u32 | expiry ms u48 | mac 8
 * NextToken  (32 bytes): v=2 | kind u8 | second id 9 | first id 9 (zero if none) | next index u32 | mac 8
 */

export interface TokenKey {
  readonly k1: number;
  readonly k2: number;
}

const SNAPSHOT_ID_RE = /^snap-[0-9a-f]{17}$/;

export function isCodecSnapshotId(id: string): boolean {
  return SNAPSHOT_ID_RE.test(id);
}

function writeSnapshotId(buf: Buffer, offset: number, id: string): void {
  if (!SNAPSHOT_ID_RE.test(id)) throw new TypeError(`expected a snapshot id like snap-<17 hex>, got "${id}"`);
  buf.write(`0${id.slice(5)}`, offset, 9, "hex");
}

function readSnapshotId(buf: Buffer, offset: number): string {
  return `snap-${buf.toString("hex", offset, offset + 9).slice(1)}`;
}

function seal(key: TokenKey, buf: Buffer, macAt: number): void {
  buf.writeUInt32BE(hashBytes(key.k1, buf, 0, macAt), macAt);
  buf.writeUInt32BE(hashBytes(key.k2, buf, 0, macAt), macAt + 4);
}

function verify(key: TokenKey, buf: Buffer, macAt: number): boolean {
  return (
    buf.readUInt32BE(macAt) === hashBytes(key.k1, buf, 0, macAt) &&
    buf.readUInt32BE(macAt + 4) === hashBytes(key.k2, buf, 0, macAt)
  );
}

function decodeBase64(token: string, length: number): Buffer | undefined {
  if (token.length > 256 || !/^[A-Za-z0-9+/]+={0,2}$/.test(token)) return undefined;
  const buf = Buffer.from(token, "base64");
  return buf.length === length ? buf : undefined;
}

export interface BlockTokenFields {
  readonly snapshotId: string;
  readonly blockIndex: number;
  readonly expiresAtMs: number;
}

const BLOCK_TOKEN_BYTES = 28;

export function encodeBlockToken(key: TokenKey, fields: BlockTokenFields): string {
  const buf = Buffer.allocUnsafe(BLOCK_TOKEN_BYTES);
  buf[0] = 1;
  writeSnapshotId(buf, 1, fields.snapshotId);
  buf.writeUInt32BE(fields.blockIndex, 10);
  buf.writeUIntBE(Math.floor(fields.expiresAtMs), 14, 6);
  seal(key, buf, 20);
  return buf.toString("base64");
}

/** Decodes and authenticates a block token; `undefined` when it is malformed or forged. */
export function decodeBlockToken(key: TokenKey, token: string): BlockTokenFields | undefined {
  const buf = decodeBase64(token, BLOCK_TOKEN_BYTES);
  if (buf === undefined || buf[0] !== 1 || !verify(key, buf, 20)) return undefined;
  return {
    snapshotId: readSnapshotId(buf, 1),
    blockIndex: buf.readUInt32BE(10),
    expiresAtMs: buf.readUIntBE(14, 6),
  };
}

export type PageKind = "list" | "changed";

export interface PageTokenFields {
  readonly kind: PageKind;
  readonly secondSnapshotId: string;
  /** For "changed" listings with a first snapshot; absent otherwise. */
  readonly firstSnapshotId?: string | undefined;
  readonly nextIndex: number;
}

const PAGE_TOKEN_BYTES = 32;

export function encodePageToken(key: TokenKey, fields: PageTokenFields): string {
  const buf = Buffer.alloc(PAGE_TOKEN_BYTES);
  buf[0] = 2;
  buf[1] = fields.kind === "list" ? 1 : 2;
  writeSnapshotId(buf, 2, fields.secondSnapshotId);
  if (fields.firstSnapshotId !== undefined) writeSnapshotId(buf, 11, fields.firstSnapshotId);
  buf.writeUInt32BE(fields.nextIndex, 20);
  seal(key, buf, 24);
  return buf.toString("base64");
}

/** Decodes and authenticates a page token; `undefined` when it is malformed or forged. */
export function decodePageToken(key: TokenKey, token: string): PageTokenFields | undefined {
  const buf = decodeBase64(token, PAGE_TOKEN_BYTES);
  if (buf === undefined || buf[0] !== 2 || (buf[1] !== 1 && buf[1] !== 2) || !verify(key, buf, 24)) {
    return undefined;
  }
  const hasFirst = buf.subarray(11, 20).some((b) => b !== 0);
  return {
    kind: buf[1] === 1 ? "list" : "changed",
    secondSnapshotId: readSnapshotId(buf, 2),
    firstSnapshotId: hasFirst ? readSnapshotId(buf, 11) : undefined,
    nextIndex: buf.readUInt32BE(20),
  };
}
