/**
 * The snapshot writer port: the write side of the EBS direct APIs (StartSnapshot, PutSnapshotBlock,
 * CompleteSnapshot) that restore into EBS needs, plus deleting and finding snapshots (EC2 in AWS, the
 * emulator's admin API locally). `adapters/ebs-writer.ts` implements it with the AWS SDK.
 *
 * Errors are the block source's classes (core/ports/block-source.ts): throttled and transient ones
 * are retried by core's AIMD limiter, anything else is fatal.
 */

export interface StartSnapshotRequest {
  /** GiB, 1..65536 (a child may not be smaller than its parent). */
  readonly volumeSizeGiB: number;
  /** Blocks not written to the new snapshot are the parent's. */
  readonly parentSnapshotId?: string | undefined;
  readonly description: string;
  readonly tags: Readonly<Record<string, string>>;
  /** Idempotency: the same token and parameters give the same snapshot again. */
  readonly clientToken: string;
  /** Minutes without a write after which a pending snapshot fails (10..4320). @default 60 */
  readonly timeoutMinutes?: number;
  /** Encrypt with this KMS key (not with a parent: a child inherits its parent's key). */
  readonly kmsKeyArn?: string | undefined;
}

export interface PutBlockRequest {
  readonly snapshotId: string;
  readonly blockIndex: number;
  /** Exactly 524,288 bytes. */
  readonly data: Uint8Array;
  /**
   * Base64 SHA-256 of `data` (x-amz-Checksum). The writer must refuse (fatal error) data whose SHA-256
   * is not this, and write nothing: EBS does, and restore into snapshots relies on it as each block's
   * check.
   */
  readonly checksum: string;
}

export interface WrittenSnapshot {
  readonly snapshotId: string;
  readonly status: string;
  readonly volumeSizeGiB?: number | undefined;
  readonly parentSnapshotId?: string | undefined;
  readonly tags?: Readonly<Record<string, string>>;
}

export interface SnapshotWriter {
  startSnapshot(request: StartSnapshotRequest): Promise<{ snapshotId: string; status: string }>;
  putBlock(request: PutBlockRequest): Promise<void>;
  /** Completes after `changedBlocks` distinct blocks were written. */
  completeSnapshot(snapshotId: string, changedBlocks: number): Promise<{ status: string }>;
  /** Deletes a snapshot; one that does not exist is not an error. */
  deleteSnapshot(snapshotId: string): Promise<void>;
  /** The snapshot, or undefined when it does not exist. */
  describeSnapshot(snapshotId: string): Promise<WrittenSnapshot | undefined>;
  /** Snapshots that carry every one of these tags. */
  findSnapshots(tags: Readonly<Record<string, string>>): Promise<WrittenSnapshot[]>;
}
