/** Errors of the repository format. Every one names the object (key and version) it is about. */

function where(key: string, versionId?: string): string {
  return versionId ? `${key} (version ${versionId})` : key;
}

/** An object is corrupt or truncated: a checksum, a magic number or a length does not hold. */
export class CorruptObjectError extends Error {
  override readonly name = "CorruptObjectError";
  readonly key: string;
  readonly versionId: string | undefined;
  constructor(key: string, versionId: string | undefined, detail: string, options?: ErrorOptions) {
    super(
      `object ${where(key, versionId)} is corrupt or truncated: ${detail}; ` +
        "run `verify` and restore from another generation or copy",
      options,
    );
    this.key = key;
    this.versionId = versionId;
  }
}

/** An object has a format major version this reader does not know. */
export class UnsupportedFormatError extends Error {
  override readonly name = "UnsupportedFormatError";
  readonly key: string;
  constructor(key: string, received: string, supported: string, options?: ErrorOptions) {
    super(
      `object ${key} has format ${received}; this cgmirror reads ${supported}. ` +
        "Upgrade cgmirror to read this repository",
      options,
    );
    this.key = key;
  }
}

/** A block's content does not match its recorded SHA-256. */
export class BlockIntegrityError extends Error {
  override readonly name = "BlockIntegrityError";
  readonly key: string;
  readonly blockIndex: number | undefined;
  constructor(key: string, blockIndex: number | undefined, detail: string, options?: ErrorOptions) {
    super(
      `block ${blockIndex ?? "?"} read from ${key} fails its SHA-256 check (${detail}); ` +
        "the segment is damaged, restore from another generation or copy",
      options,
    );
    this.key = key;
    this.blockIndex = blockIndex;
  }
}

/** The group lock is held by another live run. */
export class LockHeldError extends Error {
  override readonly name = "LockHeldError";
  readonly holderRunId: string;
  readonly expiresAt: string;
  constructor(key: string, holderRunId: string, expiresAt: string, options?: ErrorOptions) {
    super(
      `lock ${key} is held by run ${holderRunId} until ${expiresAt}; this run is skipped (schedule overlap)`,
      options,
    );
    this.holderRunId = holderRunId;
    this.expiresAt = expiresAt;
  }
}

/** This run no longer holds the group lock (it expired and another run took it over). */
export class LockLostError extends Error {
  override readonly name = "LockLostError";
  constructor(key: string, detail: string, options?: ErrorOptions) {
    super(`lock ${key} is no longer held by this run: ${detail}; the run must revert`, options);
  }
}

/** HEAD moved under this run (another commit won), or the generation number is not the next one. */
export class CommitConflictError extends Error {
  override readonly name = "CommitConflictError";
  constructor(detail: string, options?: ErrorOptions) {
    super(`commit conflict: ${detail}; the run must revert`, options);
  }
}

/** A caller passed an invalid value. */
export class InvalidArgumentError extends TypeError {
  override readonly name = "InvalidArgumentError";
}

/** Error names, the contract used by the workflow's Retry/Catch. */
export const FormatErrors = {
  CorruptObject: "CorruptObjectError",
  UnsupportedFormat: "UnsupportedFormatError",
  BlockIntegrity: "BlockIntegrityError",
  LockHeld: "LockHeldError",
  LockLost: "LockLostError",
  CommitConflict: "CommitConflictError",
  InvalidArgument: "InvalidArgumentError",
  ObjectNotFound: "ObjectNotFoundError",
  PreconditionFailed: "PreconditionFailedError",
} as const;
