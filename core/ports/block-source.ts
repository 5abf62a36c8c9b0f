/**
 * The block source port: the read side of the EBS direct APIs that the planner and the transfer
 * worker need. `adapters/ebs-source.ts` implements it with the AWS SDK v3 EBS client; tests may fake it.
 *
 * Errors are mapped to the classes below so that core decides retry / back-off / refresh without
 * knowing the SDK: throttling (back off, retry), transient (5xx, network: back off, retry), an
 * expired or invalid block token (re-list the range for fresh tokens), anything else is fatal.
 */

/** One entry of a listing page: a block of the (second) snapshot and its read token. */
export interface ListedBlock {
  readonly index: number;
  /**
   * Token for GetSnapshotBlock on the listed snapshot. Absent for a changed block that the new
   * snapshot does not hold (ListChangedBlocks without SecondBlockToken): it reads as zeros.
   */
  readonly token: string | undefined;
}

export interface ListBlocksRequest {
  /** The snapshot whose blocks are read (ListChangedBlocks SecondSnapshotId). */
  readonly snapshotId: string;
  /** The previous snapshot; when given ListChangedBlocks is used, else ListSnapshotBlocks. */
  readonly baseSnapshotId?: string | undefined;
  /** First block index of the listing (ignored when `nextToken` is given by some services). */
  readonly startingBlockIndex?: number | undefined;
  readonly nextToken?: string | undefined;
  /** 100..10000. @default 10000 */
  readonly maxResults?: number | undefined;
}

export interface ListBlocksPage {
  /** Ascending by index; may be empty even when `nextToken` is set. */
  readonly blocks: readonly ListedBlock[];
  readonly nextToken: string | undefined;
  /** When the tokens of this page expire (absent when the service does not say). */
  readonly expiresAt: Date | undefined;
  /** Size of the (second) snapshot's volume in bytes. */
  readonly volumeSizeBytes: number;
  readonly blockSize: number;
}

export interface GetBlockRequest {
  readonly snapshotId: string;
  readonly blockIndex: number;
  readonly blockToken: string;
}

export interface BlockData {
  /** The block's bytes (a view the caller owns; not copied again). */
  readonly data: Uint8Array;
  /** Base64 checksum as returned by the service. */
  readonly checksum: string;
  /** "SHA256" for EBS. */
  readonly checksumAlgorithm: string;
  /** DataLength the service announced. */
  readonly dataLength: number;
  /**
   * Gives `data` back to the source for reuse (it is a pooled buffer). Call it once, after the last
   * use of `data`, and never touch `data` again. Absent when the source does not pool buffers.
   */
  readonly release?: () => void;
}

export interface BlockSource {
  listBlocks(request: ListBlocksRequest): Promise<ListBlocksPage>;
  getBlock(request: GetBlockRequest): Promise<BlockData>;
}

/** How a block source error is handled. */
export type BlockSourceErrorKind = "throttled" | "transient" | "token-expired" | "fatal";

/** Base class of the mapped errors; `code` is the service's error name (e.g. ThrottlingException). */
export class BlockSourceError extends Error {
  override readonly name: string = "BlockSourceError";
  readonly kind: BlockSourceErrorKind = "fatal";
  readonly code: string;
  readonly operation: string;
  constructor(operation: string, code: string, message: string, options?: ErrorOptions) {
    super(`${operation} failed with ${code}: ${message}`, options);
    this.operation = operation;
    this.code = code;
  }
}

/** ThrottlingException / RequestThrottledException (or an HTTP 429/503 SlowDown). Back off and retry. */
export class BlockSourceThrottledError extends BlockSourceError {
  override readonly name = "BlockSourceThrottledError";
  override readonly kind = "throttled";
}

/** A 5xx, a reset connection or a timeout. Back off and retry. */
export class BlockSourceTransientError extends BlockSourceError {
  override readonly name = "BlockSourceTransientError";
  override readonly kind = "transient";
}

/** ValidationException INVALID_BLOCK_TOKEN: the token expired; list the range again for fresh tokens. */
export class BlockTokenExpiredError extends BlockSourceError {
  override readonly name = "BlockTokenExpiredError";
  override readonly kind = "token-expired";
}

/** Any other error (access denied, snapshot not found, validation). Not retried. */
export class BlockSourceFatalError extends BlockSourceError {
  override readonly name = "BlockSourceFatalError";
}

export function isBlockSourceError(error: unknown): error is BlockSourceError {
  return error instanceof BlockSourceError;
}
