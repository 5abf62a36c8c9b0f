import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { EbsApiError, validation } from "./errors.ts";
import {
  DEFAULT_FAULTS,
  EBS_OPERATIONS,
  EbsFaultConfigError,
  type EbsFaults,
  type EbsOperation,
  faultsFromEnv,
  mergeFaults,
} from "./faults.ts";
import {
  aggregateChecksums,
  BLOCK_SIZE,
  EbsStore,
  MAX_VOLUME_SIZE_GIB,
  type OwnBlocks,
  type SnapshotDescription,
  type SnapshotRecord,
  type StartSnapshotInput,
  type SyntheticSnapshotOptions,
  scanUnion,
  sha256Base64,
  type Tag,
} from "./store.ts";
import { SyntheticPool } from "./synthetic-pool.ts";
import { TokenBucket } from "./token-bucket.ts";
import {
  decodeBlockToken,
  decodePageToken,
  encodeBlockToken,
  encodePageToken,
  type PageKind,
} from "./tokens.ts";

export interface EbsEmulatorOptions {
  /** Interface to listen on. @default "127.0.0.1" */
  readonly host?: string | undefined;
  /** Port; 0 picks a free one. @default 0 */
  readonly port?: number | undefined;
  /** Directory to persist snapshots and blocks in; in memory when absent. @default undefined */
  readonly dataDir?: string | undefined;
  /** Account id reported as OwnerId (a persisted dataDir keeps its own). @default "123456789012" */
  readonly ownerId?: string | undefined;
  /** Initial fault/quota knobs (merged over the defaults, after the environment when `useEnv`). */
  readonly faults?: Partial<EbsFaults> | undefined;
  /**
   * Knobs merged over the built-in defaults BEFORE the environment and `faults`, e.g.
   * `AWS_DEFAULT_QUOTAS` (what the local stack starts with: the local run is throttled where AWS
   * would be, unless CGM_EBS_* variables say otherwise). @default none
   */
  readonly defaults?: Partial<EbsFaults> | undefined;
  /** Also read the CGM_EBS_* fault variables from process.env. @default false */
  readonly useEnv?: boolean | undefined;
  /** A List page scans at most this many block indices, then returns (maybe short or empty) with a NextToken. @default 1048576 */
  readonly listScanWindowBlocks?: number | undefined;
  /** MaxResults when the request gives none (the reference names no default). @default 10000 */
  readonly defaultMaxResults?: number | undefined;
  /**
   * Worker threads generating synthetic block content (about 1 ms CPU per block: copy + SHA-256).
   * 0 generates on the event loop. Use 1..(cores-1) for benchmarks above ~500 synthetic reads/s. @default 0
   */
  readonly syntheticWorkers?: number | undefined;
  /** Wall clock in ms (tests move it to expire tokens and snapshot Timeouts). @default Date.now */
  readonly now?: (() => number) | undefined;
  /** Monotonic clock in ms for the request quotas (tests freeze it). @default performance.now */
  readonly quotaClock?: (() => number) | undefined;
  /**
   * Who may use which KMS key: key ARN -> access key ids allowed to use it through EBS (what the key
   * policy and the caller's IAM policy together allow in AWS). Any request on a snapshot encrypted with
   * a key by a caller not listed for it is answered `AccessDeniedException`. @default {} (no grants)
   */
  readonly kmsGrants?: KmsGrants | undefined;
}

/** KMS key ARN -> access key ids allowed to use the key via EBS. */
export type KmsGrants = Readonly<Record<string, readonly string[]>>;

function checkKmsGrants(grants: unknown): KmsGrants {
  if (typeof grants !== "object" || grants === null || Array.isArray(grants)) {
    throw new EbsFaultConfigError(
      `kmsGrants must be an object {keyArn: [accessKeyId, ...]}, got ${JSON.stringify(grants)}`,
    );
  }
  for (const [key, ids] of Object.entries(grants)) {
    if (!/^arn:aws[a-z-]*:kms:/.test(key)) {
      throw new EbsFaultConfigError(`kmsGrants keys must be KMS key ARNs, got ${JSON.stringify(key)}`);
    }
    if (!Array.isArray(ids) || ids.some((i) => typeof i !== "string" || i === "")) {
      throw new EbsFaultConfigError(
        `kmsGrants[${JSON.stringify(key)}] must be a list of access key ids, got ${JSON.stringify(ids)}`,
      );
    }
  }
  return structuredClone(grants as KmsGrants);
}

export interface EbsStats {
  /** API requests received, by operation (admin calls not counted). */
  readonly requests: Record<EbsOperation, number>;
  /** API requests answered with success, by operation. */
  readonly succeeded: Record<EbsOperation, number>;
  /** Requests refused by a quota (all scopes). */
  readonly throttled: number;
  readonly throttledBy: { snapshot: number; account: number; list: number; control: number };
  /** Errors injected by errorRate / failAfterRequests. */
  readonly errorsInjected: number;
  /** Every error answered, by AWS error name. */
  readonly errors: Record<string, number>;
  /** Block payload bytes received by PutSnapshotBlock / sent by GetSnapshotBlock. */
  readonly blockBytesIn: number;
  readonly blockBytesOut: number;
  /** Added latency (the latency knobs), summed over all requests, in ms. */
  readonly injectedLatencyMs: number;
  readonly inFlight: number;
  readonly maxInFlight: number;
}

export interface EbsEmulator {
  /** http://127.0.0.1:<port> — give it to EBSClient as `endpoint`. */
  readonly endpoint: string;
  readonly port: number;
  readonly dataDir: string | undefined;
  close(): Promise<void>;
  /** Merges knobs over the current ones (validated); returns the result. Resets quota buckets and the failAfter counter. */
  setFaults(faults: Partial<EbsFaults>): EbsFaults;
  /** Back to the defaults (no faults, no quotas). */
  resetFaults(): EbsFaults;
  faults(): EbsFaults;
  stats(): EbsStats;
  resetStats(): void;
  createSyntheticSnapshot(opts: SyntheticSnapshotOptions): Promise<SnapshotDescription>;
  describeSnapshot(snapshotId: string): SnapshotDescription | undefined;
  listSnapshots(): SnapshotDescription[];
  /** Deletes like EC2 DeleteSnapshot: children keep their inherited blocks. */
  deleteSnapshot(snapshotId: string): Promise<void>;
  /** Replaces the KMS grants (validated; throws EbsFaultConfigError); returns them. */
  setKmsGrants(grants: KmsGrants): KmsGrants;
  kmsGrants(): KmsGrants;
}

const SNAPSHOT_ID_RE = /^snap-[0-9a-f]{1,59}$/;
const INT_RE = /^\d{1,16}$/;
const ADMIN_PREFIX = "/_cgm/";

function zeroCounts(): Record<EbsOperation, number> {
  return Object.fromEntries(EBS_OPERATIONS.map((o) => [o, 0])) as Record<EbsOperation, number>;
}

class Stats {
  requests = zeroCounts();
  succeeded = zeroCounts();
  throttled = 0;
  throttledBy = { snapshot: 0, account: 0, list: 0, control: 0 };
  errorsInjected = 0;
  errors: Record<string, number> = {};
  blockBytesIn = 0;
  blockBytesOut = 0;
  injectedLatencyMs = 0;
  inFlight = 0;
  maxInFlight = 0;

  snapshot(): EbsStats {
    return {
      requests: { ...this.requests },
      succeeded: { ...this.succeeded },
      throttled: this.throttled,
      throttledBy: { ...this.throttledBy },
      errorsInjected: this.errorsInjected,
      errors: { ...this.errors },
      blockBytesIn: this.blockBytesIn,
      blockBytesOut: this.blockBytesOut,
      injectedLatencyMs: this.injectedLatencyMs,
      inFlight: this.inFlight,
      maxInFlight: this.maxInFlight,
    };
  }
}

interface Route {
  readonly op: EbsOperation;
  readonly snapshotId: string;
  readonly blockIndex?: string | undefined;
}

function route(method: string, segments: string[]): Route | undefined {
  // segments of "/snapshots/..." without the leading empty string
  if (segments[0] !== "snapshots") return undefined;
  const [, a, b, c] = segments;
  const n = segments.length;
  if (n === 1 && method === "POST") return { op: "StartSnapshot", snapshotId: "" };
  if (n === 3 && a === "completion" && b !== undefined && method === "POST") {
    return { op: "CompleteSnapshot", snapshotId: b };
  }
  if (a === undefined) return undefined;
  if (n === 3 && b === "blocks" && method === "GET") return { op: "ListSnapshotBlocks", snapshotId: a };
  if (n === 3 && b === "changedblocks" && method === "GET") return { op: "ListChangedBlocks", snapshotId: a };
  if (n === 4 && b === "blocks" && c !== undefined) {
    if (method === "GET") return { op: "GetSnapshotBlock", snapshotId: a, blockIndex: c };
    if (method === "PUT") return { op: "PutSnapshotBlock", snapshotId: a, blockIndex: c };
  }
  return undefined;
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function checkSnapshotId(id: string, what: string): string {
  if (!SNAPSHOT_ID_RE.test(id)) {
    throw validation("INVALID_SNAPSHOT_ID", `${what} must look like snap-<hex>, got "${id.slice(0, 80)}"`);
  }
  return id;
}

function parseIntParam(raw: string | undefined, what: string, min: number, max: number): number | undefined {
  if (raw === undefined) return undefined;
  if (!INT_RE.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw validation(
      "INVALID_PARAMETER_VALUE",
      `${what} must be an integer in [${min}, ${max}], got "${raw.slice(0, 40)}"`,
    );
  }
  return Number(raw);
}

function requireStatus(rec: SnapshotRecord, want: "completed", action: string): void {
  if (rec.status !== want) {
    throw validation(
      rec.status === "error" ? "WRITE_REQUEST_TIMEOUT" : "INVALID_PARAMETER_VALUE",
      `snapshot ${rec.id} is ${rec.status}; ${action} needs a completed snapshot`,
    );
  }
}

async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  // always drain: leaving the loop early would destroy the socket before the error is answered
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size <= limit) chunks.push(chunk);
  }
  if (size > limit) throw validation("INVALID_PARAMETER_VALUE", `request body is larger than ${limit} bytes`);
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    throw validation("INVALID_PARAMETER_VALUE", `request body is not valid JSON: ${text.slice(0, 60)}`);
  }
}

/** Reads exactly one block; the body always drains so the connection stays usable. */
async function readBlock(req: IncomingMessage): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(BLOCK_SIZE);
  let n = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    if (n + chunk.length <= BLOCK_SIZE) chunk.copy(buf, n);
    n += chunk.length;
  }
  if (n !== BLOCK_SIZE) {
    throw validation(
      "INVALID_BLOCK",
      `block data is ${n} bytes; every block must be exactly ${BLOCK_SIZE} bytes`,
    );
  }
  return buf;
}

function parseStartSnapshot(body: unknown): StartSnapshotInput {
  const bad = (reason: string, msg: string): never => {
    throw validation(reason, msg);
  };
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return bad("INVALID_PARAMETER_VALUE", "StartSnapshot body must be a JSON object");
  }
  const b = body as Record<string, unknown>;
  const vs = b.VolumeSize;
  if (typeof vs !== "number" || !Number.isInteger(vs) || vs < 1 || vs > MAX_VOLUME_SIZE_GIB) {
    bad(
      "INVALID_VOLUME_SIZE",
      `VolumeSize must be an integer number of GiB in [1, ${MAX_VOLUME_SIZE_GIB}], got ${JSON.stringify(vs)}`,
    );
  }
  const str = (name: string, max: number): string | undefined => {
    const v = b[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string" || v.length > max) {
      bad(
        "INVALID_PARAMETER_VALUE",
        `${name} must be a string of at most ${max} characters, got ${JSON.stringify(v).slice(0, 80)}`,
      );
    }
    return v as string;
  };
  const parent = str("ParentSnapshotId", 64);
  if (parent !== undefined) checkSnapshotId(parent, "ParentSnapshotId");
  const description = str("Description", 255);
  const clientToken = str("ClientToken", 64);
  const kmsKeyArn = str("KmsKeyArn", 2048);
  const enc = b.Encrypted;
  if (enc !== undefined && enc !== null && typeof enc !== "boolean") {
    bad("INVALID_PARAMETER_VALUE", `Encrypted must be a boolean, got ${JSON.stringify(enc)}`);
  }
  if (parent !== undefined && enc !== undefined && enc !== null) {
    bad("INVALID_PARAMETER_VALUE", "ParentSnapshotId and Encrypted cannot be given together");
  }
  if (kmsKeyArn !== undefined && enc !== true) {
    bad("INVALID_PARAMETER_VALUE", "KmsKeyArn needs Encrypted: true");
  }
  const timeout = b.Timeout;
  if (timeout !== undefined && timeout !== null) {
    if (typeof timeout !== "number" || !Number.isInteger(timeout) || timeout < 10 || timeout > 4320) {
      bad(
        "INVALID_PARAMETER_VALUE",
        `Timeout must be an integer number of minutes in [10, 4320], got ${JSON.stringify(timeout)}`,
      );
    }
  }
  let tags: Tag[] | undefined;
  if (b.Tags !== undefined && b.Tags !== null) {
    if (!Array.isArray(b.Tags) || b.Tags.length > 50) {
      bad("INVALID_TAG", "Tags must be a list of at most 50 {Key, Value} objects");
    }
    tags = (b.Tags as unknown[]).map((t) => {
      const tag = t as Record<string, unknown> | null;
      if (typeof tag !== "object" || tag === null)
        return bad("INVALID_TAG", `a tag must be an object, got ${JSON.stringify(t)}`);
      const { Key, Value } = tag;
      if (typeof Key !== "string" || Key.length < 1 || Key.length > 128) {
        bad("INVALID_TAG", `a tag Key must be a string of 1..128 characters, got ${JSON.stringify(Key)}`);
      }
      if (Value !== undefined && (typeof Value !== "string" || Value.length > 256)) {
        bad(
          "INVALID_TAG",
          `a tag Value must be a string of at most 256 characters, got ${JSON.stringify(Value)}`,
        );
      }
      return { Key: Key as string, Value: Value as string | undefined };
    });
  }
  return {
    VolumeSize: vs as number,
    ParentSnapshotId: parent,
    Tags: tags,
    Description: description,
    ClientToken: clientToken,
    Encrypted: (enc as boolean | null | undefined) ?? undefined,
    KmsKeyArn: kmsKeyArn,
    Timeout: (timeout as number | null | undefined) ?? undefined,
  };
}

function accessKeyOf(req: IncomingMessage): string | undefined {
  const auth = header(req, "authorization");
  const m = auth === undefined ? null : /Credential=([^/,\s]+)\//.exec(auth);
  return m?.[1];
}

/** Starts the EBS direct API emulator; resolves once it listens. */
export async function startEbsEmulator(opts: EbsEmulatorOptions = {}): Promise<EbsEmulator> {
  const host = opts.host ?? "127.0.0.1";
  const window = opts.listScanWindowBlocks ?? 1_048_576;
  if (!Number.isInteger(window) || window < 1) {
    throw new TypeError(`listScanWindowBlocks must be an integer >= 1, got ${window}`);
  }
  const defaultMaxResults = opts.defaultMaxResults ?? 10000;
  let faults = DEFAULT_FAULTS;
  if (opts.defaults !== undefined) faults = mergeFaults(faults, opts.defaults);
  if (opts.useEnv === true) faults = mergeFaults(faults, faultsFromEnv());
  if (opts.faults !== undefined) faults = mergeFaults(faults, opts.faults);

  const clock = opts.now ?? Date.now;
  const quotaNow = opts.quotaClock ?? (() => performance.now());
  const workers = opts.syntheticWorkers ?? 0;
  if (!Number.isInteger(workers) || workers < 0 || workers > 64) {
    throw new TypeError(`syntheticWorkers must be an integer in [0, 64], got ${workers}`);
  }
  const store = await EbsStore.open({
    ownerId: opts.ownerId ?? "123456789012",
    dataDir: opts.dataDir,
    now: clock,
  });
  const pool = workers > 0 ? new SyntheticPool(workers) : undefined;
  const freeBlocks: Buffer[] = [];
  let stats = new Stats();
  let kmsGrants: KmsGrants = checkKmsGrants(opts.kmsGrants ?? {});

  /**
   * As in AWS, reading (or writing) a snapshot encrypted with a customer-managed key needs the right to
   * use that key through EBS; a caller without it gets AccessDeniedException (Reason
   * DEPENDENCY_ACCESS_DENIED: the dependency, KMS, refused).
   */
  const requireKeyAccess = (
    req: IncomingMessage,
    op: EbsOperation,
    keyArn: string | undefined,
    what: string,
  ) => {
    if (keyArn === undefined) return;
    const caller = accessKeyOf(req);
    if (caller !== undefined && (kmsGrants[keyArn] ?? []).includes(caller)) return;
    throw new EbsApiError(
      "AccessDeniedException",
      `${op} on ${what} needs kms:Decrypt on ${keyArn} through EBS; access key ${caller ?? "(unsigned)"} is not allowed to use that key`,
      "DEPENDENCY_ACCESS_DENIED",
    );
  };

  // quotas
  // AWS's quotas are per operation: GetSnapshotBlock and PutSnapshotBlock each have their own
  // per-snapshot and per-account rate (README.md, "Fault and quota knobs").
  let snapshotBuckets = new Map<string, TokenBucket>();
  let accountData = new Map<EbsOperation, TokenBucket>();
  let accountList: TokenBucket | undefined;
  let accountControl: TokenBucket | undefined;
  let requestsSinceFaults = 0;
  const bucket = (rate: number): TokenBucket | undefined =>
    rate > 0 ? new TokenBucket(rate, Math.max(1, rate * faults.burstSeconds), quotaNow()) : undefined;
  const resetQuotas = (): void => {
    snapshotBuckets = new Map();
    accountData = new Map();
    accountList = bucket(faults.listRpsPerAccount);
    accountControl = bucket(faults.controlRpsPerAccount);
    requestsSinceFaults = 0;
  };
  resetQuotas();

  const throttle = (op: EbsOperation, snapshotId: string): void => {
    const now = quotaNow();
    const accountError = (scope: "account" | "list" | "control"): EbsApiError => {
      stats.throttled++;
      stats.throttledBy[scope]++;
      return new EbsApiError(
        faults.accountThrottleError,
        `rate exceeded: the account's ${scope === "account" ? op : scope === "list" ? "List*" : "StartSnapshot/CompleteSnapshot"} quota is ${scope === "account" ? faults.dataPlaneRpsPerAccount : scope === "list" ? faults.listRpsPerAccount : faults.controlRpsPerAccount} requests/s; retry with backoff`,
        "ACCOUNT_THROTTLED",
      );
    };
    if (op === "GetSnapshotBlock" || op === "PutSnapshotBlock") {
      let snap: TokenBucket | undefined;
      if (faults.dataPlaneRpsPerSnapshot > 0) {
        const key = `${op}:${snapshotId}`;
        snap = snapshotBuckets.get(key);
        if (snap === undefined) {
          snap = bucket(faults.dataPlaneRpsPerSnapshot) as TokenBucket;
          snapshotBuckets.set(key, snap);
        }
        if (!snap.tryTake(now)) {
          stats.throttled++;
          stats.throttledBy.snapshot++;
          throw new EbsApiError(
            "RequestThrottledException",
            `rate exceeded: snapshot ${snapshotId} allows ${faults.dataPlaneRpsPerSnapshot} ${op} requests/s; retry with backoff`,
            "RESOURCE_LEVEL_THROTTLE",
          );
        }
      }
      let account = accountData.get(op);
      if (account === undefined && faults.dataPlaneRpsPerAccount > 0) {
        account = bucket(faults.dataPlaneRpsPerAccount) as TokenBucket;
        accountData.set(op, account);
      }
      if (account !== undefined && !account.tryTake(now)) {
        snap?.refund();
        throw accountError("account");
      }
    } else if (op === "ListChangedBlocks" || op === "ListSnapshotBlocks") {
      if (accountList !== undefined && !accountList.tryTake(now)) throw accountError("list");
    } else if (accountControl !== undefined && !accountControl.tryTake(now)) {
      throw accountError("control");
    }
  };

  const sendError = (res: ServerResponse, err: EbsApiError): void => {
    stats.errors[err.errorName] = (stats.errors[err.errorName] ?? 0) + 1;
    const body = JSON.stringify(
      err.reason === undefined ? { Message: err.message } : { Message: err.message, Reason: err.reason },
    );
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(err.status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      "x-amzn-ErrorType": err.errorName,
      "x-amzn-RequestId": randomUUID(),
    });
    res.end(body);
  };

  const sendJson = (res: ServerResponse, status: number, body: string): void => {
    res.writeHead(status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      "x-amzn-RequestId": randomUUID(),
    });
    res.end(body);
  };

  const blockIndexOf = (rec: SnapshotRecord, raw: string | undefined): number => {
    const index = parseIntParam(raw, "BlockIndex", 0, 0xffffffff) as number;
    if (index >= rec.volumeBlocks) {
      throw validation(
        "INVALID_PARAMETER_VALUE",
        `BlockIndex ${index} is outside the ${rec.volumeSizeGiB} GiB volume (indices 0..${rec.volumeBlocks - 1})`,
      );
    }
    return index;
  };

  const startSnapshotResponse = (rec: SnapshotRecord): string =>
    JSON.stringify({
      Description: rec.description,
      SnapshotId: rec.id,
      OwnerId: rec.ownerId,
      Status: rec.status,
      StartTime: rec.startTimeMs / 1000,
      VolumeSize: rec.volumeSizeGiB,
      BlockSize: BLOCK_SIZE,
      Tags: rec.tags,
      ParentSnapshotId: rec.parent?.id,
      KmsKeyArn: rec.kmsKeyArn,
      SseType: rec.kmsKeyArn !== undefined ? "sse-kms" : rec.encrypted ? "sse-ebs" : "none",
    });

  const listPage = (
    kind: PageKind,
    second: SnapshotRecord,
    first: SnapshotRecord | undefined,
    members: OwnBlocks[],
    query: URLSearchParams,
    res: ServerResponse,
  ): void => {
    const maxResults =
      parseIntParam(query.get("maxResults") ?? undefined, "MaxResults", 100, 10000) ?? defaultMaxResults;
    const startingIndex = parseIntParam(
      query.get("startingBlockIndex") ?? undefined,
      "StartingBlockIndex",
      0,
      0xffffffff,
    );
    // an unencoded "+" arrives as a space; tokens never contain spaces
    const pageToken = query.get("pageToken")?.replaceAll(" ", "+") ?? undefined;
    const volumeBlocks = Math.max(second.volumeBlocks, first?.volumeBlocks ?? 0);
    let start = startingIndex ?? 0;
    if (pageToken !== undefined) {
      const t = decodePageToken(store.tokenKey, pageToken);
      if (
        t === undefined ||
        t.kind !== kind ||
        t.secondSnapshotId !== second.id ||
        t.firstSnapshotId !== first?.id ||
        t.nextIndex > volumeBlocks
      ) {
        throw validation(
          "INVALID_PAGE_TOKEN",
          `NextToken "${pageToken.slice(0, 64)}" does not belong to this listing`,
        );
      }
      start = t.nextIndex;
    }
    const indices: number[] = [];
    let next = volumeBlocks;
    if (start < volumeBlocks) {
      const end = Math.min(volumeBlocks, start + window);
      next = scanUnion(members, start, end, maxResults, indices);
    }
    const now = clock();
    const expiresAtMs = now + faults.tokenTtlMs;
    const key = store.tokenKey;
    const parts: string[] = new Array(indices.length);
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k] as number;
      if (kind === "list") {
        const tok = encodeBlockToken(key, { snapshotId: second.id, blockIndex: i, expiresAtMs });
        parts[k] = `{"BlockIndex":${i},"BlockToken":"${tok}"}`;
      } else {
        let s = `{"BlockIndex":${i}`;
        if (first !== undefined && store.owner(first, i) !== undefined) {
          s += `,"FirstBlockToken":"${encodeBlockToken(key, { snapshotId: first.id, blockIndex: i, expiresAtMs })}"`;
        }
        if (store.owner(second, i) !== undefined) {
          s += `,"SecondBlockToken":"${encodeBlockToken(key, { snapshotId: second.id, blockIndex: i, expiresAtMs })}"`;
        }
        parts[k] = `${s}}`;
      }
    }
    const nextToken =
      next < volumeBlocks
        ? encodePageToken(key, {
            kind,
            secondSnapshotId: second.id,
            firstSnapshotId: first?.id,
            nextIndex: next,
          })
        : undefined;
    const listName = kind === "list" ? "Blocks" : "ChangedBlocks";
    sendJson(
      res,
      200,
      `{"${listName}":[${parts.join(",")}],"ExpiryTime":${expiresAtMs / 1000},"VolumeSize":${second.volumeSizeGiB},"BlockSize":${BLOCK_SIZE}${nextToken === undefined ? "" : `,"NextToken":"${nextToken}"`}}`,
    );
  };

  const api = async (
    r: Route,
    req: IncomingMessage,
    query: URLSearchParams,
    res: ServerResponse,
  ): Promise<void> => {
    switch (r.op) {
      case "StartSnapshot": {
        const input = parseStartSnapshot(await readJson(req, 256 * 1024));
        const parentKey =
          input.ParentSnapshotId !== undefined && store.snapshots.has(input.ParentSnapshotId)
            ? store.get(input.ParentSnapshotId).kmsKeyArn
            : undefined;
        requireKeyAccess(req, r.op, input.KmsKeyArn ?? parentKey, "a new snapshot");
        if (
          faults.maxPendingSnapshots > 0 &&
          !(input.ClientToken !== undefined && store.hasClientToken(input.ClientToken)) &&
          store.pendingCount() >= faults.maxPendingSnapshots
        ) {
          throw new EbsApiError(
            "ServiceQuotaExceededException",
            `the account already has ${faults.maxPendingSnapshots} pending snapshots (maxPendingSnapshots); complete some first`,
            "DEPENDENCY_SERVICE_QUOTA_EXCEEDED",
          );
        }
        const { rec } = await store.startSnapshot(input);
        sendJson(res, 201, startSnapshotResponse(rec));
        return;
      }
      case "PutSnapshotBlock": {
        const rec = store.get(checkSnapshotId(r.snapshotId, "SnapshotId"));
        requireKeyAccess(req, r.op, rec.kmsKeyArn, rec.id);
        const index = blockIndexOf(rec, r.blockIndex);
        if (rec.status !== "pending") {
          throw validation(
            rec.status === "error" ? "WRITE_REQUEST_TIMEOUT" : "INVALID_PARAMETER_VALUE",
            rec.status === "error"
              ? `snapshot ${rec.id} timed out (no activity for ${rec.timeoutMinutes} min) and accepts no writes`
              : `snapshot ${rec.id} is ${rec.status}; blocks can only be written to a pending snapshot`,
          );
        }
        const dataLength = header(req, "x-amz-data-length");
        if (dataLength !== String(BLOCK_SIZE)) {
          throw validation(
            "INVALID_PARAMETER_VALUE",
            `x-amz-Data-Length must be ${BLOCK_SIZE}, got ${JSON.stringify(dataLength)}`,
          );
        }
        const algorithm = header(req, "x-amz-checksum-algorithm");
        if (algorithm !== "SHA256") {
          throw validation(
            "INVALID_PARAMETER_VALUE",
            `x-amz-Checksum-Algorithm must be SHA256, got ${JSON.stringify(algorithm)}`,
          );
        }
        const checksum = header(req, "x-amz-checksum");
        if (checksum === undefined || Buffer.from(checksum, "base64").length !== 32) {
          throw validation(
            "INVALID_PARAMETER_VALUE",
            `x-amz-Checksum must be a base64 SHA-256 digest, got ${JSON.stringify(checksum)}`,
          );
        }
        const progress = header(req, "x-amz-progress");
        if (progress !== undefined) parseIntParam(progress, "x-amz-Progress", 0, 100);
        const data = await readBlock(req);
        stats.blockBytesIn += data.length;
        const actual = sha256Base64(data);
        if (actual !== checksum) {
          throw validation(
            "INVALID_BLOCK",
            `x-amz-Checksum ${checksum} does not match the SHA-256 of the data (${actual})`,
          );
        }
        if (rec.status !== "pending")
          throw validation("INVALID_PARAMETER_VALUE", `snapshot ${rec.id} is ${rec.status}`);
        await store.putBlock(rec, index, data, actual);
        res.writeHead(201, {
          "x-amz-Checksum": actual,
          "x-amz-Checksum-Algorithm": "SHA256",
          "x-amzn-RequestId": randomUUID(),
          "content-length": 0,
        });
        res.end();
        return;
      }
      case "CompleteSnapshot": {
        const rec = store.get(checkSnapshotId(r.snapshotId, "SnapshotId"));
        requireKeyAccess(req, r.op, rec.kmsKeyArn, rec.id);
        const count = parseIntParam(
          header(req, "x-amz-changedblockscount"),
          "x-amz-ChangedBlocksCount",
          0,
          0xffffffff,
        );
        if (count === undefined)
          throw validation("INVALID_PARAMETER_VALUE", "x-amz-ChangedBlocksCount is required");
        const written = rec.own.kind === "stored" ? rec.own.map.size : 0;
        if (rec.status === "error") {
          throw validation("WRITE_REQUEST_TIMEOUT", `snapshot ${rec.id} timed out before it was completed`);
        }
        if (count !== written) {
          throw validation(
            "INVALID_PARAMETER_VALUE",
            `ChangedBlocksCount ${count} does not match the ${written} distinct blocks written to ${rec.id}`,
          );
        }
        const checksum = header(req, "x-amz-checksum");
        if (checksum !== undefined && rec.own.kind === "stored") {
          const algorithm = header(req, "x-amz-checksum-algorithm");
          const method = header(req, "x-amz-checksum-aggregation-method");
          if (algorithm !== "SHA256" || (method !== undefined && method !== "LINEAR")) {
            throw validation(
              "INVALID_PARAMETER_VALUE",
              `an aggregated checksum needs x-amz-Checksum-Algorithm SHA256 and aggregation LINEAR, got ${algorithm}/${method}`,
            );
          }
          const own = rec.own;
          const sorted = [...own.map.keys()].sort((x, y) => x - y).map((i) => own.map.get(i) as string);
          const agg = aggregateChecksums(sorted);
          if (checksum !== agg.ofDigests && checksum !== agg.ofStrings) {
            throw validation(
              "INVALID_PARAMETER_VALUE",
              `aggregated x-amz-Checksum ${checksum} does not match the blocks written (${agg.ofDigests})`,
            );
          }
        }
        if (rec.status === "pending") await store.complete(rec);
        sendJson(res, 202, JSON.stringify({ Status: rec.status }));
        return;
      }
      case "GetSnapshotBlock": {
        const rec = store.get(checkSnapshotId(r.snapshotId, "SnapshotId"));
        requireKeyAccess(req, r.op, rec.kmsKeyArn, rec.id);
        requireStatus(rec, "completed", "GetSnapshotBlock");
        const index = blockIndexOf(rec, r.blockIndex);
        const token = query.get("blockToken")?.replaceAll(" ", "+") ?? null;
        if (token === null || token === "") throw validation("INVALID_BLOCK_TOKEN", "blockToken is required");
        const t = decodeBlockToken(store.tokenKey, token);
        if (t === undefined)
          throw validation(
            "INVALID_BLOCK_TOKEN",
            `BlockToken "${token.slice(0, 64)}" is not a valid block token`,
          );
        if (t.snapshotId !== rec.id || t.blockIndex !== index) {
          throw validation(
            "INVALID_BLOCK_TOKEN",
            `BlockToken is for ${t.snapshotId} block ${t.blockIndex}, not ${rec.id} block ${index}`,
          );
        }
        if (t.expiresAtMs <= clock()) {
          throw validation(
            "INVALID_BLOCK_TOKEN",
            `BlockToken expired at ${new Date(t.expiresAtMs).toISOString()}; list the blocks again for fresh tokens`,
          );
        }
        const owner = store.owner(rec, index);
        if (owner === undefined)
          throw validation("INVALID_BLOCK_TOKEN", `block ${index} of ${rec.id} does not exist`);
        let buf: Buffer;
        let checksum: string;
        let recycle: Buffer | undefined;
        if (pool !== undefined && owner.own.kind === "synthetic" && !owner.own.isZero(index)) {
          ({ data: buf, checksum } = await pool.content(owner.own.params, index));
        } else if (owner.own.kind === "synthetic" && !owner.own.isZero(index)) {
          // reuse block buffers once the socket has taken them: saves page faults on a hot path
          recycle = freeBlocks.pop() ?? Buffer.allocUnsafeSlow(BLOCK_SIZE);
          ({ data: buf, checksum } = owner.own.content(index, recycle));
        } else {
          const r = store.read(owner, index);
          buf = r.data instanceof Promise ? await r.data : r.data;
          checksum = r.checksum;
        }
        stats.blockBytesOut += buf.length;
        res.writeHead(200, {
          "content-type": "application/octet-stream",
          "content-length": buf.length,
          "x-amz-Data-Length": buf.length,
          "x-amz-Checksum": checksum,
          "x-amz-Checksum-Algorithm": "SHA256",
          "x-amzn-RequestId": randomUUID(),
        });
        if (recycle !== undefined) {
          const b = recycle;
          res.once("finish", () => {
            if (freeBlocks.length < 64) freeBlocks.push(b);
          });
        }
        res.end(buf);
        return;
      }
      case "ListSnapshotBlocks": {
        const rec = store.get(checkSnapshotId(r.snapshotId, "SnapshotId"));
        requireKeyAccess(req, r.op, rec.kmsKeyArn, rec.id);
        requireStatus(rec, "completed", "ListSnapshotBlocks");
        listPage("list", rec, undefined, store.chain(rec), query, res);
        return;
      }
      case "ListChangedBlocks": {
        const second = store.get(checkSnapshotId(r.snapshotId, "SecondSnapshotId"));
        const firstId = query.get("firstSnapshotId");
        const first = firstId === null ? undefined : store.get(checkSnapshotId(firstId, "FirstSnapshotId"));
        requireKeyAccess(req, r.op, second.kmsKeyArn, second.id);
        if (first !== undefined) requireKeyAccess(req, r.op, first.kmsKeyArn, first.id);
        requireStatus(second, "completed", "ListChangedBlocks");
        if (first !== undefined) requireStatus(first, "completed", "ListChangedBlocks");
        let members: OwnBlocks[];
        if (first === undefined) members = store.chain(second);
        else {
          const path = store.changedPath(first, second);
          if (path === undefined) {
            throw validation(
              "UNRELATED_SNAPSHOTS",
              `snapshots ${first.id} and ${second.id} are not of the same lineage (no common ancestor)`,
            );
          }
          members = path;
        }
        listPage("changed", second, first, members, query, res);
        return;
      }
    }
  };

  const admin = async (
    method: string,
    path: string,
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<void> => {
    const reply = (status: number, value: unknown): void => {
      const body = JSON.stringify(value ?? null);
      res.writeHead(status, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
      });
      res.end(body);
    };
    try {
      const parts = path
        .slice(ADMIN_PREFIX.length)
        .split("/")
        .filter((p) => p !== "");
      const [a, b] = parts;
      if (a === "health" && method === "GET") return reply(200, { ok: true });
      if (a === "stats" && parts.length === 1 && method === "GET") return reply(200, emulator.stats());
      if (a === "stats" && b === "reset" && method === "POST") {
        emulator.resetStats();
        return reply(200, emulator.stats());
      }
      if (a === "faults" && parts.length === 1 && method === "GET") return reply(200, emulator.faults());
      if (a === "faults" && parts.length === 1 && method === "POST") {
        return reply(200, emulator.setFaults((await readJson(req, 64 * 1024)) as Partial<EbsFaults>));
      }
      if (a === "faults" && b === "reset" && method === "POST") return reply(200, emulator.resetFaults());
      if (a === "kms-grants" && parts.length === 1 && method === "GET")
        return reply(200, emulator.kmsGrants());
      if (a === "kms-grants" && parts.length === 1 && method === "POST") {
        return reply(200, emulator.setKmsGrants((await readJson(req, 64 * 1024)) as KmsGrants));
      }
      if (a === "synthetic-snapshots" && parts.length === 1 && method === "POST") {
        return reply(
          201,
          await emulator.createSyntheticSnapshot(
            (await readJson(req, 64 * 1024)) as SyntheticSnapshotOptions,
          ),
        );
      }
      if (a === "snapshots" && parts.length === 1 && method === "GET")
        return reply(200, emulator.listSnapshots());
      if (a === "snapshots" && b !== undefined && parts.length === 2) {
        if (method === "GET") {
          const d = emulator.describeSnapshot(b);
          return d === undefined ? reply(404, { error: `snapshot ${b} does not exist` }) : reply(200, d);
        }
        if (method === "DELETE") {
          await emulator.deleteSnapshot(b);
          return reply(200, { deleted: b });
        }
      }
      return reply(404, {
        error: `no admin route ${method} ${path}; see README.md of @cgmirror/ebs-emulator`,
      });
    } catch (e) {
      const status = e instanceof EbsApiError ? e.status : e instanceof EbsFaultConfigError ? 400 : 500;
      return reply(status, { error: (e as Error).message });
    }
  };

  const onRequest = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? "GET";
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const rawPath = q < 0 ? url : url.slice(0, q);
    const query = new URLSearchParams(q < 0 ? "" : url.slice(q + 1));
    if (rawPath.startsWith(ADMIN_PREFIX)) {
      await admin(method, rawPath, req, res);
      return;
    }
    let segments: string[];
    try {
      segments = rawPath.split("/").slice(1).map(decodeURIComponent);
    } catch {
      segments = [];
    }
    const r = route(method, segments);
    if (r === undefined) {
      sendError(
        res,
        validation(
          "INVALID_PARAMETER_VALUE",
          `no EBS direct API operation matches ${method} ${rawPath.slice(0, 120)}`,
        ),
      );
      return;
    }
    stats.requests[r.op]++;
    stats.inFlight++;
    if (stats.inFlight > stats.maxInFlight) stats.maxInFlight = stats.inFlight;
    try {
      const f = faults;
      if (f.latencyMs > 0 || f.latencyJitterMs > 0) {
        const delay = f.latencyMs + Math.random() * f.latencyJitterMs;
        stats.injectedLatencyMs += delay;
        await sleep(delay);
      }
      if (f.maxConcurrentRequests > 0 && stats.inFlight > f.maxConcurrentRequests) {
        throw new EbsApiError(
          "ConcurrentLimitExceededException",
          `more than ${f.maxConcurrentRequests} concurrent requests (maxConcurrentRequests); use fewer connections`,
        );
      }
      const key = f.denyAccessKeyIds.length > 0 ? accessKeyOf(req) : undefined;
      if (key !== undefined && f.denyAccessKeyIds.includes(key)) {
        throw new EbsApiError(
          "AccessDeniedException",
          `access key ${key} is not allowed (denyAccessKeyIds)`,
          "UNAUTHORIZED_ACCOUNT",
        );
      }
      requestsSinceFaults++;
      if (f.failAfterRequests > 0 && requestsSinceFaults > f.failAfterRequests) {
        stats.errorsInjected++;
        throw new EbsApiError(
          "InternalServerException",
          `injected failure: request ${requestsSinceFaults} > failAfterRequests ${f.failAfterRequests}`,
        );
      }
      if (
        f.errorRate > 0 &&
        (f.errorOperations.length === 0 || f.errorOperations.includes(r.op)) &&
        Math.random() < f.errorRate
      ) {
        stats.errorsInjected++;
        throw new EbsApiError("InternalServerException", `injected failure (errorRate ${f.errorRate})`);
      }
      throttle(r.op, r.snapshotId);
      await api(r, req, query, res);
      stats.succeeded[r.op]++;
    } catch (e) {
      if (e instanceof EbsApiError) sendError(res, e);
      else {
        sendError(
          res,
          new EbsApiError("InternalServerException", `emulator bug: ${(e as Error).message}`, undefined, {
            cause: e,
          }),
        );
      }
    } finally {
      stats.inFlight--;
    }
  };

  const server: Server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    onRequest(req, res).catch((e: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, {
          "x-amzn-ErrorType": "InternalServerException",
          "content-type": "application/json",
        });
        res.end(JSON.stringify({ Message: `emulator bug: ${(e as Error).message}` }));
      } else res.destroy();
    });
  });
  server.on("clientError", (_err, socket) => {
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
    else socket.destroy();
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.port ?? 0, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    await pool?.close();
    await store.close();
    throw e;
  }
  const port = (server.address() as AddressInfo).port;

  let closed = false;
  const emulator: EbsEmulator = {
    endpoint: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    port,
    dataDir: opts.dataDir,
    async close() {
      if (closed) return;
      closed = true;
      await new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
      await pool?.close();
      await store.close();
    },
    setFaults(patch) {
      faults = mergeFaults(faults, patch);
      resetQuotas();
      return faults;
    },
    resetFaults() {
      faults = DEFAULT_FAULTS;
      resetQuotas();
      return faults;
    },
    faults: () => faults,
    stats: () => stats.snapshot(),
    resetStats() {
      const inFlight = stats.inFlight;
      stats = new Stats();
      stats.inFlight = inFlight;
    },
    async createSyntheticSnapshot(o) {
      return store.describe(await store.createSynthetic(o ?? {}));
    },
    describeSnapshot(id) {
      try {
        return store.describe(store.get(id));
      } catch {
        return undefined;
      }
    },
    listSnapshots: () => [...store.snapshots.values()].map((s) => store.describe(s)),
    deleteSnapshot: (id) => store.deleteSnapshot(id),
    setKmsGrants(grants) {
      kmsGrants = checkKmsGrants(grants);
      return kmsGrants;
    },
    kmsGrants: () => kmsGrants,
  };
  return emulator;
}
