/**
 * The lean GetSnapshotBlock: one SigV4-signed keep-alive GET per block, the body copied straight from
 * the connection's read buffer into a pooled 512 KiB buffer (adapters/http1-get.ts: no socket read
 * chunk is allocated per read, unlike node:http). It replaces the SDK's middleware stack on the one hot
 * call of a transfer (≈ 0.4 ms CPU per request through `@aws-sdk/client-ebs`: serializers, middleware,
 * a generic signer, stream wrappers, header parsing), and nothing else: credentials, region, endpoint,
 * clock offset, connection limit and timeouts come from the EBSClient that `createEbsClient` built
 * (its connections close with the client's `destroy()`), List calls stay on the SDK.
 *
 * Errors are shaped like the SDK's (name from `x-amzn-ErrorType`, `Reason` and `Message` from the JSON
 * body, `$fault`, `$metadata.httpStatusCode`, Node's network errors as they are, `TimeoutError` for the
 * connection and request timeouts) and go through the same `mapEbsError`, so the worker sees the same
 * port errors and retries them the same way. test/integration/ebs-get-block.test.ts runs both paths
 * against the EBS emulator side by side.
 */
import { createHash, createHmac, createSecretKey, type KeyObject } from "node:crypto";
import type { EBSClient } from "@aws-sdk/client-ebs";
import {
  type BlockData,
  BlockSourceTransientError,
  type GetBlockRequest,
} from "../core/ports/block-source.ts";
import type { BlockBufferPool } from "./block-buffer-pool.ts";
import { type BodySink, Http1Pool, type ResponseHead } from "./http1-get.ts";

const OPERATION = "GetSnapshotBlock";
const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SERVICE = "ebs";
/** Error bodies are a few hundred bytes of JSON; never buffer more than this. */
const MAX_ERROR_BODY = 64 * 1024;
/** The SDK re-derives its clock offset when the server's Date differs by this much (5 minutes). */
const CLOCK_SKEW_MS = 300_000;

export interface LeanGetSettings {
  /** Connections per endpoint at most (the SDK's agents have as many). */
  readonly maxSockets: number;
  readonly connectionTimeoutMs: number;
  readonly requestTimeoutMs: number;
  /** Connection pools opened for this client; `destroy()` of the client closes them. */
  readonly pools: Set<Http1Pool>;
}

/** RFC 3986 encoding as SigV4 wants it (encodeURIComponent leaves !'()* alone). */
export function escapeUri(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** SigV4's canonical URI for a non-S3 service: normalized, each segment encoded once more. */
function canonicalPath(path: string): string {
  const segments: string[] = [];
  for (const s of path.split("/")) {
    if (s.length === 0 || s === ".") continue;
    if (s === "..") segments.pop();
    else segments.push(s);
  }
  const normalized = `${path.startsWith("/") ? "/" : ""}${segments.join("/")}${segments.length > 0 && path.endsWith("/") ? "/" : ""}`;
  return escapeUri(normalized).replace(/%2F/g, "/");
}

export interface Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string | undefined;
}

export interface SignedGet {
  /** Path with its query string, as sent. */
  readonly path: string;
  readonly headers: Record<string, string>;
}

/**
 * Signs `GET path?query` (SigV4, payload = empty) with the same headers the SDK signs. The signing key
 * (four HMACs) is derived once per day, region and secret; a request costs one SHA-256 of the
 * canonical request and one HMAC.
 */
export class GetSigner {
  readonly #region: string;
  #keyFor = "";
  #key: KeyObject | undefined;

  constructor(region: string) {
    this.#region = region;
  }

  sign(
    host: string,
    path: string,
    query: Readonly<Record<string, string>>,
    credentials: Credentials,
    now: Date,
  ): SignedGet {
    const amzDate = now
      .toISOString()
      .replace(/[-:]/g, "")
      .replace(/\.\d{3}/, "");
    const day = amzDate.slice(0, 8);
    const scope = `${day}/${this.#region}/${SERVICE}/aws4_request`;
    const queryString = Object.keys(query)
      .map((k) => [escapeUri(k), escapeUri(query[k]!)] as const)
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .map(([k, v]) => `${k}=${v}`)
      .join("&");
    const headers: Record<string, string> = {
      host,
      "x-amz-content-sha256": EMPTY_SHA256,
      "x-amz-date": amzDate,
    };
    if (credentials.sessionToken) headers["x-amz-security-token"] = credentials.sessionToken;
    const names = Object.keys(headers).sort();
    const signedHeaders = names.join(";");
    let canonicalHeaders = "";
    for (const n of names) canonicalHeaders += `${n}:${headers[n]!.trim().replace(/\s+/g, " ")}\n`;
    const canonical = `GET\n${canonicalPath(path)}\n${queryString}\n${canonicalHeaders}\n${signedHeaders}\n${EMPTY_SHA256}`;
    const stringToSign = `AWS4-HMAC-SHA256\n${amzDate}\n${scope}\n${createHash("sha256").update(canonical).digest("hex")}`;
    const keyFor = `${day}\n${credentials.secretAccessKey}`;
    if (keyFor !== this.#keyFor) {
      const kDate = createHmac("sha256", `AWS4${credentials.secretAccessKey}`).update(day).digest();
      const kRegion = createHmac("sha256", kDate).update(this.#region).digest();
      const kService = createHmac("sha256", kRegion).update(SERVICE).digest();
      // A KeyObject: createHmac converts a Buffer key into one on every call otherwise.
      this.#key = createSecretKey(createHmac("sha256", kService).update("aws4_request").digest());
      this.#keyFor = keyFor;
    }
    const signature = createHmac("sha256", this.#key!).update(stringToSign).digest("hex");
    headers.authorization = `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`;
    return { path: queryString ? `${path}?${queryString}` : path, headers };
  }
}

/** The SDK's error-code clean-up (`x-amzn-ErrorType: Name:http://…` → `Name`, `ns#Name` → `Name`). */
function sanitizeErrorCode(raw: string): string {
  let v = raw;
  if (v.includes(",")) v = v.split(",")[0]!;
  if (v.includes(":")) v = v.split(":")[0]!;
  if (v.includes("#")) v = v.split("#")[1]!;
  return v;
}

/** An error shaped like the SDK's service exceptions (what `mapEbsError` reads). */
export interface ServiceErrorShape extends Error {
  Reason?: string;
  $fault: "client" | "server";
  $metadata: { httpStatusCode: number; requestId?: string };
}

export function serviceError(
  status: number,
  headers: Readonly<Record<string, string | string[] | undefined>>,
  body: Buffer,
): ServiceErrorShape {
  let parsed: Record<string, unknown> = {};
  try {
    const v = JSON.parse(body.toString("utf8")) as unknown;
    if (v && typeof v === "object") parsed = v as Record<string, unknown>;
  } catch {
    // not JSON (a proxy's HTML page): the status decides
  }
  const header = headers["x-amzn-errortype"];
  const rawCode =
    (typeof header === "string" ? header : undefined) ??
    (typeof parsed.code === "string" ? parsed.code : undefined) ??
    (typeof parsed.__type === "string" ? parsed.__type : undefined);
  const name = rawCode ? sanitizeErrorCode(rawCode) : "UnknownError";
  const message =
    typeof parsed.Message === "string"
      ? parsed.Message
      : typeof parsed.message === "string"
        ? parsed.message
        : name;
  const e = new Error(message) as ServiceErrorShape;
  e.name = name;
  if (typeof parsed.Reason === "string") e.Reason = parsed.Reason;
  e.$fault = status >= 500 ? "server" : "client";
  const requestId = headers["x-amzn-requestid"];
  e.$metadata = {
    httpStatusCode: status,
    ...(typeof requestId === "string" ? { requestId } : {}),
  };
  return e;
}

function timeoutError(message: string): Error {
  const e = new Error(message);
  e.name = "TimeoutError";
  return e;
}

function lengthError(message: string): BlockSourceTransientError {
  return new BlockSourceTransientError(OPERATION, "LengthMismatch", message);
}

interface Endpoint {
  readonly https: boolean;
  /** For connecting (no brackets around IPv6). */
  readonly hostname: string;
  readonly port: number | undefined;
  /** The Host header (and SigV4's host): host[:port], the port only when not the default. */
  readonly host: string;
  /** Base path without a trailing slash. */
  readonly basePath: string;
}

async function resolveEndpoint(client: EBSClient): Promise<Endpoint> {
  const cfg = client.config;
  let url: URL;
  if (cfg.endpoint) {
    const e = await cfg.endpoint();
    const host = e.hostname.includes(":") && !e.hostname.startsWith("[") ? `[${e.hostname}]` : e.hostname;
    url = new URL(`${e.protocol}//${host}${e.port ? `:${e.port}` : ""}${e.path ?? "/"}`);
  } else {
    const ep = cfg.endpointProvider({
      Region: await cfg.region(),
      UseFIPS: await cfg.useFipsEndpoint(),
      UseDualStack: await cfg.useDualstackEndpoint(),
    });
    url = new URL(ep.url.href);
  }
  return {
    https: url.protocol === "https:",
    hostname: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: url.port ? Number(url.port) : undefined,
    host: url.host,
    basePath: url.pathname.replace(/\/+$/, ""),
  };
}

/**
 * GetSnapshotBlock over one keep-alive connection pool, for `EbsBlockSource`. Throws the raw error
 * (SDK-shaped); the caller maps it with `mapEbsError`.
 */
export class LeanBlockGetter {
  readonly #client: EBSClient;
  readonly #settings: LeanGetSettings;
  readonly #pool: BlockBufferPool;
  #setup: Promise<{ endpoint: Endpoint; signer: GetSigner; pool: Http1Pool }> | undefined;

  constructor(client: EBSClient, settings: LeanGetSettings, pool: BlockBufferPool) {
    this.#client = client;
    this.#settings = settings;
    this.#pool = pool;
  }

  #ready(): Promise<{ endpoint: Endpoint; signer: GetSigner; pool: Http1Pool }> {
    this.#setup ??= (async () => {
      const endpoint = await resolveEndpoint(this.#client);
      const signer = new GetSigner(await this.#client.config.region());
      const s = this.#settings;
      const pool = new Http1Pool(
        {
          https: endpoint.https,
          hostname: endpoint.hostname,
          port: endpoint.port ?? (endpoint.https ? 443 : 80),
        },
        { maxSockets: s.maxSockets, connectionTimeoutMs: s.connectionTimeoutMs },
      );
      s.pools.add(pool);
      return { endpoint, signer, pool };
    })();
    this.#setup.catch(() => {
      this.#setup = undefined;
    });
    return this.#setup;
  }

  async get(r: GetBlockRequest): Promise<BlockData> {
    const { endpoint, signer, pool } = await this.#ready();
    const credentials = await this.#client.config.credentials();
    const cfg = this.#client.config as { systemClockOffset?: number };
    const now = new Date(Date.now() + (cfg.systemClockOffset ?? 0));
    const path = `${endpoint.basePath}/snapshots/${escapeUri(r.snapshotId)}/blocks/${r.blockIndex}`;
    const signed = signer.sign(endpoint.host, path, { blockToken: r.blockToken }, credentials, now);
    return this.#send(pool, signed);
  }

  #send(pool: Http1Pool, signed: SignedGet): Promise<BlockData> {
    const s = this.#settings;
    let buffer: Buffer | undefined;
    let result: BlockData | undefined;
    const onHead = (head: ResponseHead): BodySink => {
      this.#noteClock(head.headers.date);
      const status = head.status;
      if (status < 200 || status >= 300) {
        const chunks: Buffer[] = [];
        let size = 0;
        return {
          write: (view) => {
            // Error bodies are a few hundred bytes: copied (the view is the connection's read buffer).
            if (size < MAX_ERROR_BODY) chunks.push(Buffer.from(view));
            size += view.byteLength;
            return undefined;
          },
          end: () => serviceError(status, head.headers, Buffer.concat(chunks)),
        };
      }
      const lengthHeader = head.headers["x-amz-data-length"];
      const length = lengthHeader !== undefined && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : -1;
      if (length < 0) {
        throw new BlockSourceTransientError(
          OPERATION,
          "EmptyResponse",
          "no BlockData or DataLength in the response",
        );
      }
      const pooled = length === this.#pool.size;
      const out = pooled ? this.#pool.take() : Buffer.allocUnsafe(length);
      if (pooled) buffer = out;
      let at = 0;
      return {
        write: (view) => {
          if (at + view.byteLength > length)
            return lengthError(`the body is longer than DataLength ${length}`);
          // The one copy: from the connection's read buffer into the (pooled) block buffer.
          view.copy(out, at);
          at += view.byteLength;
          return undefined;
        },
        end: () => {
          if (at !== length) return lengthError(`received ${at} bytes of DataLength ${length}`);
          const checksum = head.headers["x-amz-checksum"];
          const algorithm = head.headers["x-amz-checksum-algorithm"];
          result = {
            data: out,
            checksum: checksum ?? "",
            checksumAlgorithm: algorithm ?? "",
            dataLength: length,
            ...(pooled ? { release: this.#pool.releaser(out) } : {}),
          };
          return undefined;
        },
      };
    };
    return pool
      .get(signed.path, signed.headers, onHead, {
        // The whole request, as the SDK's requestTimeout (with throwOnRequestTimeout) counts it.
        timeoutMs: s.requestTimeoutMs,
        timeoutError: () =>
          timeoutError(`a request has exceeded the configured ${s.requestTimeoutMs} ms requestTimeout`),
      })
      .then(
        () => result!,
        (error: unknown) => {
          // Any failure after the body's buffer was taken gives it back (a failed read keeps nothing).
          if (buffer) this.#pool.give(buffer);
          throw error;
        },
      );
  }

  /** Keeps the client's clock offset current from the server's Date, as the SDK's signer does. */
  #noteClock(date: string | undefined): void {
    if (!date) return;
    const server = Date.parse(date);
    if (Number.isNaN(server)) return;
    const cfg = this.#client.config as { systemClockOffset?: number };
    const offset = cfg.systemClockOffset ?? 0;
    if (Math.abs(Date.now() + offset - server) >= CLOCK_SKEW_MS) cfg.systemClockOffset = server - Date.now();
  }
}
