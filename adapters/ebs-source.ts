/**
 * BlockSource over the EBS direct APIs (`@aws-sdk/client-ebs`). The client is passed in; build it
 * with `createEbsClient` so that the SDK does not retry (core's AIMD does), HTTP connections are
 * kept alive with enough sockets for the worker's concurrency, and GetSnapshotBlock takes the lean
 * signed GET (adapters/ebs-get-block.ts) over the same agents instead of the SDK's middleware stack.
 * Block buffers come from a pool and go back to it when the caller releases them.
 */
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import type { Readable } from "node:stream";
import {
  EBSClient,
  type EBSClientConfig,
  GetSnapshotBlockCommand,
  ListChangedBlocksCommand,
  ListSnapshotBlocksCommand,
} from "@aws-sdk/client-ebs";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import {
  type BlockData,
  type BlockSource,
  BlockSourceError,
  BlockSourceFatalError,
  BlockSourceThrottledError,
  BlockSourceTransientError,
  BlockTokenExpiredError,
  type GetBlockRequest,
  type ListBlocksPage,
  type ListBlocksRequest,
  type ListedBlock,
} from "../core/ports/block-source.ts";
import { BlockBufferPool } from "./block-buffer-pool.ts";
import { LeanBlockGetter, type LeanGetSettings } from "./ebs-get-block.ts";

export interface EbsClientOptions {
  /** @default the SDK's region resolution */
  readonly region?: string;
  /** e.g. the local emulator's http://127.0.0.1:port. @default AWS */
  readonly endpoint?: string;
  /** Open sockets per host; at least the worker's maximum concurrency. @default 128 */
  readonly maxSockets?: number;
  /** @default 5000 */
  readonly connectionTimeoutMs?: number;
  /** Per-request timeout (a 512 KiB block at ~1 MiB/s worst case). @default 30000 */
  readonly requestTimeoutMs?: number;
  readonly credentials?: EBSClientConfig["credentials"];
}

/**
 * An EBSClient tuned for bulk block reads: `maxAttempts: 1` (cgmirror's AIMD controller owns
 * retries and back-off; SDK retries would hide throttling from it and multiply requests), keep-alive
 * agents with `maxSockets` sockets, explicit timeouts.
 */
export function createEbsClient(options: EbsClientOptions = {}): EBSClient {
  const maxSockets = options.maxSockets ?? 128;
  const agentOptions = {
    keepAlive: true,
    maxSockets,
    maxFreeSockets: maxSockets,
    scheduling: "lifo" as const,
  };
  const settings: LeanGetSettings = {
    maxSockets,
    connectionTimeoutMs: options.connectionTimeoutMs ?? 5000,
    requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
    pools: new Set(),
  };
  const client = new EBSClient({
    ...(options.region ? { region: options.region } : {}),
    ...(options.endpoint ? { endpoint: options.endpoint } : {}),
    ...(options.credentials ? { credentials: options.credentials } : {}),
    maxAttempts: 1,
    requestHandler: new NodeHttpHandler({
      httpAgent: new HttpAgent(agentOptions),
      httpsAgent: new HttpsAgent(agentOptions),
      connectionTimeout: settings.connectionTimeoutMs,
      requestTimeout: settings.requestTimeoutMs,
      // Without it the handler only logs a warning when requestTimeout passes and waits on.
      throwOnRequestTimeout: true,
    }),
  });
  // The lean GET's connections (adapters/http1-get.ts) close with the client.
  const destroy = client.destroy.bind(client);
  client.destroy = () => {
    for (const pool of settings.pools) pool.close();
    settings.pools.clear();
    destroy();
  };
  leanSettings.set(client, settings);
  return client;
}

/** Connection limits, timeouts and pools of the clients `createEbsClient` built, for the lean GET. */
const leanSettings = new WeakMap<EBSClient, LeanGetSettings>();

/** EBS block size (524,288 bytes): the size of the pooled buffers. */
const BLOCK_BYTES = 524_288;

const THROTTLE_CODES = new Set([
  "ThrottlingException",
  "RequestThrottledException",
  "ConcurrentLimitExceededException",
  "TooManyRequestsException",
  "SlowDown",
]);
const NETWORK_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "ECONNABORTED",
  "ENOTFOUND",
  "ERR_STREAM_PREMATURE_CLOSE",
]);

interface SdkErrorLike {
  name?: string;
  code?: string;
  message?: string;
  Reason?: string;
  $fault?: string;
  $metadata?: { httpStatusCode?: number };
}

/** Maps an SDK / network error to the port's error classes (exported for tests). */
export function mapEbsError(operation: string, error: unknown): BlockSourceError {
  if (error instanceof BlockSourceError) return error;
  const e = (typeof error === "object" && error !== null ? error : {}) as SdkErrorLike;
  const code = e.name && e.name !== "Error" ? e.name : (e.code ?? "UnknownError");
  const message = e.message ?? String(error);
  const status = e.$metadata?.httpStatusCode;
  const options = { cause: error };
  if (THROTTLE_CODES.has(code) || status === 429) {
    return new BlockSourceThrottledError(operation, code, message, options);
  }
  if (code === "ValidationException" && e.Reason === "INVALID_BLOCK_TOKEN") {
    return new BlockTokenExpiredError(operation, code, message, options);
  }
  if (
    (status !== undefined && status >= 500) ||
    e.$fault === "server" ||
    code === "InternalServerException" ||
    code === "TimeoutError" ||
    code === "RequestTimeout" ||
    code === "AbortError" ||
    NETWORK_CODES.has(code) ||
    (e.code !== undefined && NETWORK_CODES.has(e.code))
  ) {
    return new BlockSourceTransientError(operation, code, message, options);
  }
  return new BlockSourceFatalError(operation, code, message, options);
}

/**
 * Reads a response stream into `out` (the announced length; the only copy from the socket's chunks,
 * no intermediate list + concat).
 */
async function readBody(stream: Readable, length: number, out: Buffer): Promise<Buffer> {
  let at = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    if (at + chunk.byteLength > length) {
      throw new BlockSourceTransientError(
        "GetSnapshotBlock",
        "LengthMismatch",
        `the body is longer than DataLength ${length}`,
      );
    }
    chunk.copy(out, at);
    at += chunk.byteLength;
  }
  if (at !== length) {
    throw new BlockSourceTransientError(
      "GetSnapshotBlock",
      "LengthMismatch",
      `received ${at} bytes of DataLength ${length}`,
    );
  }
  return out;
}

export interface EbsBlockSourceOptions {
  /**
   * GetSnapshotBlock through the lean signed GET (adapters/ebs-get-block.ts) rather than the SDK.
   * @default true when the client comes from `createEbsClient` (the lean path needs its agents)
   */
  readonly leanGet?: boolean;
  /** Free block buffers kept for reuse. @default 128 (64 MiB) */
  readonly maxFreeBuffers?: number;
}

/** BlockSource backed by an EBSClient (see createEbsClient). */
export class EbsBlockSource implements BlockSource {
  readonly #client: EBSClient;
  readonly #pool: BlockBufferPool;
  readonly #lean: LeanBlockGetter | undefined;

  constructor(client: EBSClient, options: EbsBlockSourceOptions = {}) {
    this.#client = client;
    this.#pool = new BlockBufferPool(BLOCK_BYTES, options.maxFreeBuffers ?? 128);
    const settings = leanSettings.get(client);
    if (options.leanGet === true && !settings) {
      throw new TypeError("EbsBlockSource leanGet needs a client built by createEbsClient");
    }
    this.#lean =
      settings && options.leanGet !== false ? new LeanBlockGetter(client, settings, this.#pool) : undefined;
  }

  /** The block buffer pool (stats, tests). */
  get pool(): BlockBufferPool {
    return this.#pool;
  }

  async listBlocks(request: ListBlocksRequest): Promise<ListBlocksPage> {
    const maxResults = request.maxResults ?? 10_000;
    if (request.baseSnapshotId) {
      const op = "ListChangedBlocks";
      try {
        const out = await this.#client.send(
          new ListChangedBlocksCommand({
            FirstSnapshotId: request.baseSnapshotId,
            SecondSnapshotId: request.snapshotId,
            MaxResults: maxResults,
            ...(request.nextToken ? { NextToken: request.nextToken } : {}),
            ...(request.startingBlockIndex !== undefined
              ? { StartingBlockIndex: request.startingBlockIndex }
              : {}),
          }),
        );
        const blocks: ListedBlock[] = (out.ChangedBlocks ?? []).map((b) => ({
          index: b.BlockIndex ?? -1,
          token: b.SecondBlockToken || undefined,
        }));
        return page(op, blocks, out);
      } catch (error) {
        throw mapEbsError(op, error);
      }
    }
    const op = "ListSnapshotBlocks";
    try {
      const out = await this.#client.send(
        new ListSnapshotBlocksCommand({
          SnapshotId: request.snapshotId,
          MaxResults: maxResults,
          ...(request.nextToken ? { NextToken: request.nextToken } : {}),
          ...(request.startingBlockIndex !== undefined
            ? { StartingBlockIndex: request.startingBlockIndex }
            : {}),
        }),
      );
      const blocks: ListedBlock[] = (out.Blocks ?? []).map((b) => ({
        index: b.BlockIndex ?? -1,
        token: b.BlockToken || undefined,
      }));
      return page(op, blocks, out);
    } catch (error) {
      throw mapEbsError(op, error);
    }
  }

  async getBlock(request: GetBlockRequest): Promise<BlockData> {
    const op = "GetSnapshotBlock";
    if (this.#lean) {
      try {
        return await this.#lean.get(request);
      } catch (error) {
        throw mapEbsError(op, error);
      }
    }
    try {
      const out = await this.#client.send(
        new GetSnapshotBlockCommand({
          SnapshotId: request.snapshotId,
          BlockIndex: request.blockIndex,
          BlockToken: request.blockToken,
        }),
      );
      const length = out.DataLength ?? -1;
      if (!out.BlockData || length < 0) {
        throw new BlockSourceTransientError(
          op,
          "EmptyResponse",
          "no BlockData or DataLength in the response",
        );
      }
      const pooled = length === this.#pool.size;
      const buffer = pooled ? this.#pool.take() : Buffer.allocUnsafe(length);
      let data: Buffer;
      try {
        data = await readBody(out.BlockData as Readable, length, buffer);
      } catch (error) {
        if (pooled) this.#pool.give(buffer);
        throw error;
      }
      return {
        data,
        checksum: out.Checksum ?? "",
        checksumAlgorithm: out.ChecksumAlgorithm ?? "",
        dataLength: length,
        ...(pooled ? { release: this.#pool.releaser(buffer) } : {}),
      };
    } catch (error) {
      throw mapEbsError(op, error);
    }
  }
}

function page(
  operation: string,
  blocks: ListedBlock[],
  out: {
    NextToken?: string | undefined;
    ExpiryTime?: Date | undefined;
    VolumeSize?: number | undefined;
    BlockSize?: number | undefined;
  },
): ListBlocksPage {
  for (let i = 0; i < blocks.length; i++) {
    const b = blocks[i]!;
    if (!Number.isSafeInteger(b.index) || b.index < 0 || (i > 0 && b.index <= blocks[i - 1]!.index)) {
      throw new BlockSourceFatalError(
        operation,
        "InvalidResponse",
        `block indices must be ascending non-negative integers; got ${b.index} at position ${i}`,
      );
    }
  }
  return {
    blocks,
    nextToken: out.NextToken || undefined,
    expiresAt: out.ExpiryTime,
    volumeSizeBytes: (out.VolumeSize ?? 0) * 1024 * 1024 * 1024,
    blockSize: out.BlockSize ?? 524_288,
  };
}
