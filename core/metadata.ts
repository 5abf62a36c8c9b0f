import { z } from "zod";
import { CorruptObjectError, UnsupportedFormatError } from "./errors.ts";

/** Major.minor of every JSON metadata object this code writes. Readers accept any 1.x. */
export const METADATA_VERSION = "1.0";
const SUPPORTED_MAJOR = 1;

export type MetadataFormat =
  | "cgmirror.head"
  | "cgmirror.generation"
  | "cgmirror.volume-index"
  | "cgmirror.lock";

/** Serialises a metadata object (UTF-8 JSON, `format` and `version` first). */
export function encodeMetadata<T extends object>(format: MetadataFormat, body: T): Uint8Array {
  return new TextEncoder().encode(
    `${JSON.stringify({ format, version: METADATA_VERSION, ...body }, null, 1)}\n`,
  );
}

/**
 * Parses a metadata object: checks `format`, refuses an unknown major `version`, validates the shape.
 * Every failure names the object key (and version id).
 */
export function decodeMetadata<S extends z.ZodType>(
  bytes: Uint8Array,
  format: MetadataFormat,
  schema: S,
  key: string,
  versionId?: string,
): z.infer<S> {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (cause) {
    throw new CorruptObjectError(key, versionId, "it is not valid UTF-8 JSON", { cause });
  }
  const head = z.object({ format: z.string(), version: z.string() }).safeParse(json);
  if (!head.success) throw new CorruptObjectError(key, versionId, "it has no format/version fields");
  if (head.data.format !== format) {
    throw new CorruptObjectError(key, versionId, `expected format ${format}, found ${head.data.format}`);
  }
  const major = Number.parseInt(head.data.version.split(".")[0] ?? "", 10);
  if (major !== SUPPORTED_MAJOR) {
    throw new UnsupportedFormatError(key, `${format} ${head.data.version}`, `${format} ${SUPPORTED_MAJOR}.x`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    throw new CorruptObjectError(key, versionId, `invalid ${format}: ${z.prettifyError(parsed.error)}`);
  }
  return parsed.data;
}
