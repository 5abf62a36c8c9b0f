/**
 * JSON metadata objects (docs/format.md §2.1): UTF-8 JSON with `format` and `version` first and a
 * byte-exact SHA-256 seal last.
 *
 *   {"format":"cgmirror.head","version":"2.0",…,"checksum":"sha256:<64 hex>"}\n
 *
 * The checksum is the SHA-256 of the same text without its `,"checksum":…` member, i.e. of
 * `JSON.stringify({format, version, ...body})`. A reader strips the member, re-hashes the exact bytes
 * and compares, so flipping any byte of the object is detected before a field is trusted. The same
 * hex digest is what a pointer to the object pins (`sha256` fields).
 */
import { z } from "zod";
import { CorruptObjectError, UnsupportedFormatError } from "../errors.ts";
import { sha256, toHex } from "./bytes.ts";

/** Major.minor of every JSON metadata object this code writes. Readers accept any 2.x. */
export const METADATA_VERSION = "2.0";
export const METADATA_MAJOR = 2;

export type MetadataFormat =
  | "cgmirror.head"
  | "cgmirror.commit"
  | "cgmirror.generation"
  | "cgmirror.volume-index"
  | "cgmirror.lock"
  | "cgmirror.shard-result"
  | "cgmirror.transfer-checkpoint"
  | "cgmirror.run-plan"
  | "cgmirror.plan-cursor"
  | "cgmirror.snapshot-set"
  | "cgmirror.run-record"
  | "cgmirror.relocation"
  | "cgmirror.read-lease";

const SEAL = /,"checksum":"sha256:([0-9a-f]{64})"\}\n$/;
/** `format` and `version`, read before the object's own schema (built once: zod compiles each schema). */
const FormatHeadSchema = z.object({ format: z.string(), version: z.string() });
const encoder = new TextEncoder();

/** A sealed metadata object: its bytes and the SHA-256 (hex) that pointers to it pin. */
export interface SealedMetadata {
  readonly bytes: Uint8Array;
  readonly sha256: string;
}

/** Serialises and seals a metadata object (`format` and `version` first, `checksum` last). */
export function sealMetadata<T extends object>(format: MetadataFormat, body: T): SealedMetadata {
  const text = JSON.stringify({ format, version: METADATA_VERSION, ...body });
  const digest = toHex(sha256(encoder.encode(text)));
  return {
    bytes: encoder.encode(`${text.slice(0, -1)},"checksum":"sha256:${digest}"}\n`),
    sha256: digest,
  };
}

/** `sealMetadata(...).bytes`. */
export function encodeMetadata<T extends object>(format: MetadataFormat, body: T): Uint8Array {
  return sealMetadata(format, body).bytes;
}

export interface OpenedMetadata<T> {
  readonly value: T;
  /** SHA-256 (hex) of the sealed text: what a pointer to this object pins. */
  readonly sha256: string;
}

function unsupportedOrCorrupt(
  text: string,
  format: MetadataFormat,
  key: string,
  versionId: string | undefined,
  detail: string,
): Error {
  // An object of another major (a 1.x repository, or a newer cgmirror) is refused as such, not as damage.
  try {
    const json = JSON.parse(text) as { format?: unknown; version?: unknown };
    if (typeof json.format === "string" && typeof json.version === "string" && json.format === format) {
      const major = Number.parseInt(json.version.split(".")[0] ?? "", 10);
      if (major !== METADATA_MAJOR) {
        return new UnsupportedFormatError(key, `${format} ${json.version}`, `${format} ${METADATA_MAJOR}.x`);
      }
    }
  } catch {
    // not JSON at all: damage
  }
  return new CorruptObjectError(key, versionId, detail);
}

/**
 * Opens a sealed metadata object: checks the seal (and, when given, that it is the object a pointer
 * pinned), refuses an unknown major `version`, validates the shape. Every failure names the object.
 * @param expectedSha256 the hex SHA-256 a pointer pins, or undefined for a mutable object (HEAD, lock)
 */
export function openMetadata<S extends z.ZodType>(
  bytes: Uint8Array,
  format: MetadataFormat,
  schema: S,
  key: string,
  versionId?: string,
  expectedSha256?: string,
): OpenedMetadata<z.infer<S>> {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (cause) {
    throw new CorruptObjectError(key, versionId, "it is not valid UTF-8", { cause });
  }
  const seal = SEAL.exec(text);
  if (!seal) throw unsupportedOrCorrupt(text, format, key, versionId, "it has no sha256 checksum seal");
  const sealed = `${text.slice(0, seal.index)}}`;
  const digest = toHex(sha256(encoder.encode(sealed)));
  if (digest !== seal[1]) {
    // Sealed but the seal fails: damage, whatever major the damaged text claims (a newer major's
    // object with this seal verifies, and is refused as unsupported below; format 1 had no seal).
    const claimed = /^\{"format":"[^"]*","version":"([^"]*)"/.exec(text)?.[1];
    const other =
      claimed !== undefined && Number.parseInt(claimed.split(".")[0] ?? "", 10) !== METADATA_MAJOR
        ? ` (its text claims version ${JSON.stringify(claimed)})`
        : "";
    throw new CorruptObjectError(key, versionId, `it fails its SHA-256 checksum${other}`);
  }
  if (expectedSha256 !== undefined && digest !== expectedSha256) {
    throw new CorruptObjectError(
      key,
      versionId,
      `it is not the object its pointer pins (sha256 ${digest}, expected ${expectedSha256})`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(sealed);
  } catch (cause) {
    throw new CorruptObjectError(key, versionId, "it is not valid JSON", { cause });
  }
  const head = FormatHeadSchema.safeParse(json);
  if (!head.success) throw new CorruptObjectError(key, versionId, "it has no format/version fields");
  if (head.data.format !== format) {
    throw new CorruptObjectError(key, versionId, `expected format ${format}, found ${head.data.format}`);
  }
  const major = Number.parseInt(head.data.version.split(".")[0] ?? "", 10);
  if (major !== METADATA_MAJOR) {
    throw new UnsupportedFormatError(key, `${format} ${head.data.version}`, `${format} ${METADATA_MAJOR}.x`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    throw new CorruptObjectError(key, versionId, `invalid ${format}: ${z.prettifyError(parsed.error)}`);
  }
  return { value: parsed.data, sha256: digest };
}

/** `openMetadata(...).value`. */
export function decodeMetadata<S extends z.ZodType>(
  bytes: Uint8Array,
  format: MetadataFormat,
  schema: S,
  key: string,
  versionId?: string,
  expectedSha256?: string,
): z.infer<S> {
  return openMetadata(bytes, format, schema, key, versionId, expectedSha256).value;
}

/** A hex SHA-256 as pointers carry it. */
export const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, { error: "expected a hex SHA-256" });
