/**
 * SnapshotWriter (core/ports/snapshot-writer.ts) over the EBS direct APIs (`@aws-sdk/client-ebs`:
 * StartSnapshot, PutSnapshotBlock, CompleteSnapshot) and a snapshot catalog for what the EBS direct
 * APIs do not do — describe, find by tags, delete: EC2 in AWS (`ec2SnapshotCatalog`), the emulator's
 * admin API locally (local/snapshot-catalog.ts). Clients are passed in; build the EBS client with
 * `createEbsClient` (no SDK retries: core's AIMD limiter paces and retries PutSnapshotBlock).
 *
 * PutSnapshotBlock carries the block's SHA-256 (`x-amz-Checksum`, which EBS verifies). The writer
 * signs with that digest as SigV4's payload hash (`x-amz-content-sha256`) instead of letting the
 * signer hash every 512 KiB body a second time (≈ 0.8 CPU-s per GiB on the event loop, measured in
 * bench:restore; see `useChecksumAsPayloadHash`).
 */
import {
  CompleteSnapshotCommand,
  type EBSClient,
  PutSnapshotBlockCommand,
  StartSnapshotCommand,
} from "@aws-sdk/client-ebs";
import {
  DeleteSnapshotCommand,
  DescribeSnapshotsCommand,
  type EC2Client,
  paginateDescribeSnapshots,
  type Snapshot,
} from "@aws-sdk/client-ec2";
import type {
  PutBlockRequest,
  SnapshotWriter,
  StartSnapshotRequest,
  WrittenSnapshot,
} from "../core/ports/snapshot-writer.ts";
import { mapEbsError } from "./ebs-source.ts";

/** Describe, find and delete snapshots: what the EBS direct APIs leave to EC2. */
export interface SnapshotCatalog {
  describe(snapshotId: string): Promise<WrittenSnapshot | undefined>;
  find(tags: Readonly<Record<string, string>>): Promise<WrittenSnapshot[]>;
  delete(snapshotId: string): Promise<void>;
}

export interface EbsSnapshotWriterProps {
  /** A configured EBS client (see createEbsClient), created once by the caller. */
  readonly client: EBSClient;
  readonly catalog: SnapshotCatalog;
  /** Attempts of StartSnapshot / CompleteSnapshot on throttling and 5xx. @default 8 */
  readonly controlAttempts?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class EbsSnapshotWriter implements SnapshotWriter {
  readonly #client: EBSClient;
  readonly #catalog: SnapshotCatalog;
  readonly #attempts: number;

  constructor(props: EbsSnapshotWriterProps) {
    this.#client = useChecksumAsPayloadHash(props.client);
    this.#catalog = props.catalog;
    this.#attempts = props.controlAttempts ?? 8;
  }

  /** Control-plane calls (StartSnapshot, CompleteSnapshot): retried here with back-off. */
  async #control<T>(op: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (error) {
        const mapped = mapEbsError(op, error);
        if ((mapped.kind !== "throttled" && mapped.kind !== "transient") || attempt >= this.#attempts)
          throw mapped;
        await sleep(Math.min(5000, 100 * 2 ** attempt) * Math.random());
      }
    }
  }

  async startSnapshot(request: StartSnapshotRequest): Promise<{ snapshotId: string; status: string }> {
    const out = await this.#control("StartSnapshot", () =>
      this.#client.send(
        new StartSnapshotCommand({
          VolumeSize: request.volumeSizeGiB,
          ...(request.parentSnapshotId ? { ParentSnapshotId: request.parentSnapshotId } : {}),
          Description: request.description.slice(0, 255),
          Tags: Object.entries(request.tags).map(([Key, Value]) => ({ Key, Value })),
          ClientToken: request.clientToken,
          Timeout: request.timeoutMinutes ?? 60,
          ...(request.kmsKeyArn ? { Encrypted: true, KmsKeyArn: request.kmsKeyArn } : {}),
        }),
      ),
    );
    if (!out.SnapshotId)
      throw mapEbsError("StartSnapshot", new Error("StartSnapshot returned no SnapshotId"));
    return { snapshotId: out.SnapshotId, status: out.Status ?? "pending" };
  }

  async putBlock(request: PutBlockRequest): Promise<void> {
    try {
      await this.#client.send(
        new PutSnapshotBlockCommand({
          SnapshotId: request.snapshotId,
          BlockIndex: request.blockIndex,
          BlockData: Buffer.from(request.data.buffer, request.data.byteOffset, request.data.byteLength),
          DataLength: request.data.byteLength,
          Checksum: request.checksum,
          ChecksumAlgorithm: "SHA256",
        }),
      );
    } catch (error) {
      throw mapEbsError("PutSnapshotBlock", error);
    }
  }

  async completeSnapshot(snapshotId: string, changedBlocks: number): Promise<{ status: string }> {
    const out = await this.#control("CompleteSnapshot", () =>
      this.#client.send(
        new CompleteSnapshotCommand({ SnapshotId: snapshotId, ChangedBlocksCount: changedBlocks }),
      ),
    );
    return { status: out.Status ?? "pending" };
  }

  deleteSnapshot(snapshotId: string): Promise<void> {
    return this.#catalog.delete(snapshotId);
  }

  describeSnapshot(snapshotId: string): Promise<WrittenSnapshot | undefined> {
    return this.#catalog.describe(snapshotId);
  }

  findSnapshots(tags: Readonly<Record<string, string>>): Promise<WrittenSnapshot[]> {
    return this.#catalog.find(tags);
  }
}

const PAYLOAD_HASH = "cgmirrorChecksumAsPayloadHash";

/**
 * EBS client middleware: a PutSnapshotBlock whose `Checksum` is the body's SHA-256 is signed with that
 * digest (hex) as `x-amz-content-sha256`, so SigV4's signer uses it instead of hashing the body again.
 * The request is the one the SDK sends without it: the SDK's signer sets `x-amz-content-sha256` to
 * hex(SHA-256(body)) and signs it, and the checksum is that digest. A checksum that is not the body's
 * SHA-256 fails the put as before: EBS checks the body against `x-amz-Checksum` ("the block data is
 * not signed as part of the Signature Version 4 signing process", docs.aws.amazon.com/ebs/latest/
 * userguide/ebsapis-using-checksums.html). Only PutSnapshotBlock: CompleteSnapshot's `Checksum` is an
 * aggregate of the blocks', not a hash of its (empty) body. Idempotent per client.
 */
export function useChecksumAsPayloadHash(client: EBSClient): EBSClient {
  if (client.middlewareStack.identify().some((m) => m.startsWith(PAYLOAD_HASH))) return client;
  client.middlewareStack.add(
    (next) => async (args) => {
      const input = args.input as { BlockData?: unknown; Checksum?: unknown; ChecksumAlgorithm?: unknown };
      const request = args.request as { headers?: Record<string, string> } | undefined;
      if (
        request?.headers &&
        input.BlockData !== undefined &&
        input.ChecksumAlgorithm === "SHA256" &&
        typeof input.Checksum === "string" &&
        !Object.keys(request.headers).some((h) => h.toLowerCase() === "x-amz-content-sha256")
      ) {
        const hex = Buffer.from(input.Checksum, "base64").toString("hex");
        if (hex.length === 64) request.headers["x-amz-content-sha256"] = hex;
      }
      return next(args);
    },
    { step: "build", name: PAYLOAD_HASH, priority: "low" },
  );
  return client;
}

function fromEc2(s: Snapshot): WrittenSnapshot | undefined {
  if (!s.SnapshotId) return undefined;
  return {
    snapshotId: s.SnapshotId,
    status: s.State ?? "pending",
    volumeSizeGiB: s.VolumeSize,
    tags: Object.fromEntries((s.Tags ?? []).flatMap((t) => (t.Key ? [[t.Key, t.Value ?? ""]] : []))),
  };
}

function isNotFound(error: unknown): boolean {
  const name = (error as { name?: string })?.name ?? "";
  return name === "InvalidSnapshot.NotFound" || name === "InvalidSnapshotID.NotFound";
}

/** The catalog on EC2 (DescribeSnapshots of the account's own snapshots, DeleteSnapshot). */
export function ec2SnapshotCatalog(client: EC2Client): SnapshotCatalog {
  return {
    async describe(snapshotId) {
      const out = await client.send(
        new DescribeSnapshotsCommand({
          OwnerIds: ["self"],
          Filters: [{ Name: "snapshot-id", Values: [snapshotId] }],
        }),
      );
      return out.Snapshots?.[0] ? fromEc2(out.Snapshots[0]) : undefined;
    },
    async find(tags) {
      const out: WrittenSnapshot[] = [];
      const Filters = Object.entries(tags).map(([k, v]) => ({ Name: `tag:${k}`, Values: [v] }));
      for await (const page of paginateDescribeSnapshots(
        { client },
        { OwnerIds: ["self"], Filters, MaxResults: 1000 },
      )) {
        for (const s of page.Snapshots ?? []) {
          const w = fromEc2(s);
          if (w) out.push(w);
        }
      }
      return out;
    },
    async delete(snapshotId) {
      try {
        await client.send(new DeleteSnapshotCommand({ SnapshotId: snapshotId }));
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
    },
  };
}
