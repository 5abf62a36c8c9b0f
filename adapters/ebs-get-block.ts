/**
 * The lean GetSnapshotBlock: one SigV4-signed keep-alive GET per block, the body copied straight into
 * a pooled 512 KiB buffer. It replaces the SDK's middleware stack on the one hot call of a transfer
 * (≈ 0.4 ms CPU per request through `@aws-sdk/client-ebs`: serializers, middleware, a generic signer,
 * stream wrappers, header parsing), and nothing else: credentials, region, endpoint, clock offset and
 * HTTP agents come from the EBSClient that `createEbsClient` built, List calls stay on the SDK.
 *
 * Errors are shaped like the SDK's (name from `x-amzn-ErrorType`, `Reason` and `Message` from the JSON
 * body, `$fault`, `$metadata.httpStatusCode`, Node's network errors as they are, `TimeoutError` for the
 * connection and request timeouts) and go through the same `mapEbsError`, so the worker sees the same
 * port errors and retries them the same way. test/integration/ebs-get-block.test.ts runs both paths
 * against the EBS emulator side by side.
 */
import { createHash, createHmac, createSecretKey, type KeyObject } from "node:crypto";
import {
  type ClientRequest,
  type Agent as HttpAgent,
  request as httpRequest,
  type IncomingMessage,
} from "node:http";
import { type Agent as HttpsAgent, request as httpsRequest } from "node:https";
import type { EBSClient } from "@aws-sdk/client-ebs";
import {
  type BlockData,
  BlockSourceTransientError,
  type GetBlockRequest,
} from "../core/ports/block-source.ts";
import type { BlockBufferPool } from "./block-buffer-pool.ts";

const OPERATION = "GetSnapshotBlock";
const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SERVICE = "ebs";
/** Error bodies are a few hundred bytes of JSON; never buffer more than this. */
const MAX_ERROR_BODY = 64 * 1024;
/** The SDK re-derives its clock offset when the server's Date differs by this much (5 minutes). */
const CLOCK_SKEW_MS = 300_000;

export interface LeanGetSettings {
  readonly httpAgent: HttpAgent;
  readonly httpsAgent: HttpsAgent;
  readonly connectionTimeoutMs: number;
  readonly requestTimeoutMs: number;
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
  headers: IncomingMessage["headers"],
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

/** The connection closed before the response ended (Node's code for it; `mapEbsError` retries it). */
function prematureClose(): Error {
  return Object.assign(new Error("the connection closed before the response ended"), {
    code: "ERR_STREAM_PREMATURE_CLOSE",
  });
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
  #setup: Promise<{ endpoint: Endpoint; signer: GetSigner }> | undefined;

  constructor(client: EBSClient, settings: LeanGetSettings, pool: BlockBufferPool) {
    this.#client = client;
    this.#settings = settings;
    this.#pool = pool;
  }

  #ready(): Promise<{ endpoint: Endpoint; signer: GetSigner }> {
    this.#setup ??= (async () => ({
      endpoint: await resolveEndpoint(this.#client),
      signer: new GetSigner(await this.#client.config.region()),
    }))();
    this.#setup.catch(() => {
      this.#setup = undefined;
    });
    return this.#setup;
  }

  async get(r: GetBlockRequest): Promise<BlockData> {
    const { endpoint, signer } = await this.#ready();
    const credentials = await this.#client.config.credentials();
    const cfg = this.#client.config as { systemClockOffset?: number };
    const now = new Date(Date.now() + (cfg.systemClockOffset ?? 0));
    const path = `${endpoint.basePath}/snapshots/${escapeUri(r.snapshotId)}/blocks/${r.blockIndex}`;
    const signed = signer.sign(endpoint.host, path, { blockToken: r.blockToken }, credentials, now);
    return this.#send(endpoint, signed);
  }

  #send(endpoint: Endpoint, signed: SignedGet): Promise<BlockData> {
    const s = this.#settings;
    return new Promise<BlockData>((resolve, reject) => {
      let settled = false;
      let buffer: Buffer | undefined;
      let pooled = false;
      const fail = (error: unknown) => {
        if (settled) return;
        settled = true;
        if (buffer && pooled) this.#pool.give(buffer);
        reject(error);
      };
      const options = {
        method: "GET",
        hostname: endpoint.hostname,
        ...(endpoint.port !== undefined ? { port: endpoint.port } : {}),
        path: signed.path,
        headers: signed.headers,
        agent: endpoint.https ? s.httpsAgent : s.httpAgent,
      };
      const req: ClientRequest = (endpoint.https ? httpsRequest : httpRequest)(options, (res) => {
        this.#noteClock(res);
        const status = res.statusCode ?? 0;
        if (status < 200 || status >= 300) {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (c: Buffer) => {
            if (size < MAX_ERROR_BODY) chunks.push(c);
            size += c.byteLength;
          });
          res.on("end", () => fail(serviceError(status, res.headers, Buffer.concat(chunks))));
          res.on("error", fail);
          res.on("close", () => {
            if (!settled) fail(prematureClose());
          });
          return;
        }
        const lengthHeader = res.headers["x-amz-data-length"];
        const length =
          typeof lengthHeader === "string" && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : -1;
        if (length < 0) {
          res.resume();
          fail(
            new BlockSourceTransientError(
              OPERATION,
              "EmptyResponse",
              "no BlockData or DataLength in the response",
            ),
          );
          return;
        }
        pooled = length === this.#pool.size;
        const out = pooled ? this.#pool.take() : Buffer.allocUnsafe(length);
        buffer = out;
        let at = 0;
        res.on("data", (chunk: Buffer) => {
          if (settled) return;
          if (at + chunk.byteLength > length) {
            fail(lengthError(`the body is longer than DataLength ${length}`));
            res.destroy();
            return;
          }
          chunk.copy(out, at);
          at += chunk.byteLength;
        });
        res.on("end", () => {
          if (settled) return;
          if (at !== length) {
            fail(lengthError(`received ${at} bytes of DataLength ${length}`));
            return;
          }
          settled = true;
          const checksum = res.headers["x-amz-checksum"];
          const algorithm = res.headers["x-amz-checksum-algorithm"];
          resolve({
            data: out,
            checksum: typeof checksum === "string" ? checksum : "",
            checksumAlgorithm: typeof algorithm === "string" ? algorithm : "",
            dataLength: length,
            ...(pooled ? { release: this.#pool.releaser(out) } : {}),
          });
        });
        res.on("error", fail);
        res.on("close", () => {
          if (!settled) fail(prematureClose());
        });
      });
      req.on("error", fail);
      // The whole request, as the SDK's requestTimeout (with throwOnRequestTimeout) counts it.
      const deadline = setTimeout(() => {
        req.destroy(
          timeoutError(`a request has exceeded the configured ${s.requestTimeoutMs} ms requestTimeout`),
        );
      }, s.requestTimeoutMs);
      req.once("close", () => clearTimeout(deadline));
      req.on("socket", (socket) => {
        if (!socket.connecting) return;
        const timer = setTimeout(() => {
          req.destroy(
            timeoutError(
              `Socket timed out without establishing a connection within ${s.connectionTimeoutMs} ms`,
            ),
          );
        }, s.connectionTimeoutMs);
        socket.once("connect", () => clearTimeout(timer));
        socket.once("close", () => clearTimeout(timer));
      });
      req.end();
    });
  }

  /** Keeps the client's clock offset current from the server's Date, as the SDK's signer does. */
  #noteClock(res: IncomingMessage): void {
    const date = res.headers.date;
    if (!date) return;
    const server = Date.parse(date);
    if (Number.isNaN(server)) return;
    const cfg = this.#client.config as { systemClockOffset?: number };
    const offset = cfg.systemClockOffset ?? 0;
    if (Math.abs(Date.now() + offset - server) >= CLOCK_SKEW_MS) cfg.systemClockOffset = server - Date.now();
  }
}
