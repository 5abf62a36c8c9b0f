/**
 * What can go wrong in the repository: its format and integrity (every error names the object, key
 * and version, it is about), the lock and commit protocol, the repository's state, and bad arguments.
 * The other sub-domains' errors: see core/util/named-error.ts (the map) and docs/architecture.md.
 */

import { namedError, objectVersion as where } from "./util/named-error.ts";

// ── Format and integrity ──────────────────────────────────────────────────────────────────────────

/** An object is corrupt or truncated: a checksum, a magic number or a length does not hold. */
export class CorruptObjectError extends namedError("CorruptObjectError") {
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
export class UnsupportedFormatError extends namedError("UnsupportedFormatError") {
  readonly key: string;
  constructor(key: string, received: string, supported: string, options?: ErrorOptions) {
    const major = (s: string) => Number.parseInt(/(\d+)\.(?:\d+|x)$/.exec(s)?.[1] ?? "", 10);
    const older = major(received) < major(supported);
    super(
      `object ${key} has format ${received}; this cgmirror reads ${supported}. ` +
        (older
          ? "It was written by an older cgmirror (format 1, cgmirror 0.1): read it with cgmirror 0.1.x, or back up into a new prefix"
          : "Upgrade cgmirror to read this repository"),
      options,
    );
    this.key = key;
  }
}

/** A block's content does not match its recorded SHA-256. */
export class BlockIntegrityError extends namedError("BlockIntegrityError") {
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

// ── Lock, commit and the repository's state ───────────────────────────────────────────────────────

/** The group lock is held by another live run. */
export class LockHeldError extends namedError("LockHeldError") {
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
export class LockLostError extends namedError("LockLostError") {
  constructor(key: string, detail: string, options?: ErrorOptions) {
    super(`lock ${key} is no longer held by this run: ${detail}; the run must revert`, options);
  }
}

/** HEAD moved under this run (another commit won), or the generation number is not the next one. */
export class CommitConflictError extends namedError("CommitConflictError") {
  constructor(detail: string, options?: ErrorOptions) {
    super(`commit conflict: ${detail}; the run must revert`, options);
  }
}

/**
 * The repository is in a state no run may act on (HEAD missing, delete-marked, older than the newest
 * committed generation, or unreadable): the run stops before it changes anything. `cgmirror repair`
 * explains the state and, with confirmation, points HEAD at the newest generation that verifies.
 */
export class RepositoryStateError extends namedError("RepositoryStateError") {
  readonly key: string;
  constructor(key: string, detail: string, options?: ErrorOptions) {
    super(
      `repository ${key} needs repair: ${detail}. Nothing was changed. ` +
        "Run `cgmirror repair --group <group>` to see the committed generations and restore HEAD",
      options,
    );
    this.key = key;
  }
}

/** A generation that is not (or no longer) committed was asked for. */
export class GenerationNotFoundError extends namedError("GenerationNotFoundError") {
  readonly generation: number;
  readonly available: readonly number[];
  constructor(group: string, generation: number, available: readonly number[], options?: ErrorOptions) {
    super(
      `generation ${generation} is not a committed generation of group ${group}; ` +
        (available.length ? `it has ${formatGenerations(available)}` : "it has no committed generation yet"),
      options,
    );
    this.generation = generation;
    this.available = available;
  }
}

/** "1-5, 7, 9-12" */
export function formatGenerations(list: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < list.length; ) {
    let j = i;
    while (j + 1 < list.length && list[j + 1] === list[j]! + 1) j++;
    parts.push(j === i ? String(list[i]) : `${list[i]}-${list[j]}`);
    i = j + 1;
  }
  return `generation${list.length === 1 ? "" : "s"} ${parts.join(", ")}`;
}

/** A run id was used before: a run id names exactly one run (Step Functions execution names are unique). */
export class RunIdReusedError extends namedError("RunIdReusedError") {
  constructor(runId: string, detail: string, options?: ErrorOptions) {
    super(`run id ${runId} was already used (${detail}); start the run with a new run id`, options);
  }
}

/** A volume is smaller than in the committed generation (EBS volumes only grow). */
export class VolumeShrunkError extends namedError("VolumeShrunkError") {
  constructor(volumeId: string, before: number, now: number, options?: ErrorOptions) {
    super(
      `volume ${volumeId} is ${now} bytes but was ${before} bytes in the committed generation; ` +
        "EBS volumes only grow, so this is not the same volume: give it a new group or volume entry",
      options,
    );
  }
}

// ── Arguments ─────────────────────────────────────────────────────────────────────────────────────

/** A caller passed an invalid value. */
export class InvalidArgumentError extends namedError("InvalidArgumentError", TypeError) {}

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
  RepositoryState: "RepositoryStateError",
  GenerationNotFound: "GenerationNotFoundError",
  RunIdReused: "RunIdReusedError",
  VolumeShrunk: "VolumeShrunkError",
} as const;
