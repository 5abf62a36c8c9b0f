/** Fault and quota knobs of the EBS emulator; all changeable at runtime with `setFaults`. */

export const EBS_OPERATIONS = [
  "StartSnapshot",
  "PutSnapshotBlock",
  "CompleteSnapshot",
  "GetSnapshotBlock",
  "ListSnapshotBlocks",
  "ListChangedBlocks",
] as const;

export type EbsOperation = (typeof EBS_OPERATIONS)[number];

export interface EbsFaults {
  /** Added latency per API request, in ms. @default 0 */
  readonly latencyMs: number;
  /** Extra uniform random latency in [0, latencyJitterMs) per request. @default 0 */
  readonly latencyJitterMs: number;
  /**
   * GetSnapshotBlock requests per second per snapshot, and PutSnapshotBlock requests per second per
   * snapshot (two separate quotas, as in AWS: 1000 each, fixed); 0 = unlimited. @default 0
   */
  readonly dataPlaneRpsPerSnapshot: number;
  /**
   * GetSnapshotBlock requests per second for the whole account (all snapshots together), and
   * PutSnapshotBlock likewise (separate quotas; AWS: 1000 each by default, adjustable); 0 = unlimited.
   * @default 0
   */
  readonly dataPlaneRpsPerAccount: number;
  /** ListSnapshotBlocks + ListChangedBlocks requests per second for the account (AWS: 50); 0 = unlimited. @default 0 */
  readonly listRpsPerAccount: number;
  /** StartSnapshot + CompleteSnapshot requests per second for the account; 0 = unlimited. @default 0 */
  readonly controlRpsPerAccount: number;
  /** Bucket capacity in seconds of rate (burst allowance). @default 1 */
  readonly burstSeconds: number;
  /** Error name for account-level throttling (AWS's error-retries table says ThrottlingException). */
  readonly accountThrottleError: "ThrottlingException" | "RequestThrottledException";
  /** Probability in [0, 1] that a request fails with InternalServerException. @default 0 */
  readonly errorRate: number;
  /** Operations `errorRate` applies to; empty = all. @default [] */
  readonly errorOperations: readonly EbsOperation[];
  /** After this many API requests (counted from the last `setFaults` that set it) every request fails with InternalServerException; 0 = never. @default 0 */
  readonly failAfterRequests: number;
  /** Lifetime of block tokens handed out by the List calls, in ms. @default 604800000 (7 days) */
  readonly tokenTtlMs: number;
  /** Concurrent in-flight API requests above which ConcurrentLimitExceededException is answered; 0 = unlimited. @default 0 */
  readonly maxConcurrentRequests: number;
  /** Pending snapshots above which StartSnapshot answers ServiceQuotaExceededException; 0 = unlimited. @default 0 */
  readonly maxPendingSnapshots: number;
  /** Access key ids (from the SigV4 Authorization header) answered with AccessDeniedException. @default [] */
  readonly denyAccessKeyIds: readonly string[];
}

export const DEFAULT_FAULTS: EbsFaults = Object.freeze({
  latencyMs: 0,
  latencyJitterMs: 0,
  dataPlaneRpsPerSnapshot: 0,
  dataPlaneRpsPerAccount: 0,
  listRpsPerAccount: 0,
  controlRpsPerAccount: 0,
  burstSeconds: 1,
  accountThrottleError: "ThrottlingException",
  errorRate: 0,
  errorOperations: [],
  failAfterRequests: 0,
  tokenTtlMs: 7 * 24 * 3600 * 1000,
  maxConcurrentRequests: 0,
  maxPendingSnapshots: 0,
  denyAccessKeyIds: [],
});

/** AWS's default EBS direct API quotas (DESIGN.md §6), for benchmarks: `setFaults(AWS_DEFAULT_QUOTAS)`. */
export const AWS_DEFAULT_QUOTAS: Partial<EbsFaults> = Object.freeze({
  dataPlaneRpsPerSnapshot: 1000,
  dataPlaneRpsPerAccount: 1000,
  listRpsPerAccount: 50,
});

export class EbsFaultConfigError extends Error {
  override readonly name = "EbsFaultConfigError";
}

const NUMBER_KEYS = [
  "latencyMs",
  "latencyJitterMs",
  "dataPlaneRpsPerSnapshot",
  "dataPlaneRpsPerAccount",
  "listRpsPerAccount",
  "controlRpsPerAccount",
  "burstSeconds",
  "errorRate",
  "failAfterRequests",
  "tokenTtlMs",
  "maxConcurrentRequests",
  "maxPendingSnapshots",
] as const;

/** Merges `patch` into `base`, checking every value; throws EbsFaultConfigError naming the bad key. */
export function mergeFaults(base: EbsFaults, patch: Partial<EbsFaults>): EbsFaults {
  if (typeof patch !== "object" || patch === null) {
    throw new EbsFaultConfigError(`faults must be an object, got ${JSON.stringify(patch)}`);
  }
  const known = new Set<string>(Object.keys(DEFAULT_FAULTS));
  for (const key of Object.keys(patch)) {
    if (!known.has(key)) {
      throw new EbsFaultConfigError(`unknown fault knob "${key}"; known: ${[...known].join(", ")}`);
    }
  }
  const out = { ...base, ...patch };
  for (const key of NUMBER_KEYS) {
    const v = out[key];
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      throw new EbsFaultConfigError(
        `fault knob ${key} must be a finite number >= 0, got ${JSON.stringify(v)}`,
      );
    }
  }
  if (out.errorRate > 1) throw new EbsFaultConfigError(`errorRate must be in [0, 1], got ${out.errorRate}`);
  if (out.burstSeconds <= 0)
    throw new EbsFaultConfigError(`burstSeconds must be > 0, got ${out.burstSeconds}`);
  if (
    out.accountThrottleError !== "ThrottlingException" &&
    out.accountThrottleError !== "RequestThrottledException"
  ) {
    throw new EbsFaultConfigError(
      `accountThrottleError must be ThrottlingException or RequestThrottledException, got ${JSON.stringify(out.accountThrottleError)}`,
    );
  }
  if (!Array.isArray(out.errorOperations) || out.errorOperations.some((o) => !EBS_OPERATIONS.includes(o))) {
    throw new EbsFaultConfigError(
      `errorOperations must list operations among ${EBS_OPERATIONS.join(", ")}, got ${JSON.stringify(out.errorOperations)}`,
    );
  }
  if (!Array.isArray(out.denyAccessKeyIds) || out.denyAccessKeyIds.some((k) => typeof k !== "string")) {
    throw new EbsFaultConfigError(
      `denyAccessKeyIds must be a list of strings, got ${JSON.stringify(out.denyAccessKeyIds)}`,
    );
  }
  return Object.freeze(out);
}

/** Environment variable for each knob (prefix CGM_EBS_). */
export const FAULT_ENV: Readonly<Record<keyof EbsFaults, string>> = Object.freeze({
  latencyMs: "CGM_EBS_LATENCY_MS",
  latencyJitterMs: "CGM_EBS_LATENCY_JITTER_MS",
  dataPlaneRpsPerSnapshot: "CGM_EBS_DATA_RPS_PER_SNAPSHOT",
  dataPlaneRpsPerAccount: "CGM_EBS_DATA_RPS_PER_ACCOUNT",
  listRpsPerAccount: "CGM_EBS_LIST_RPS_PER_ACCOUNT",
  controlRpsPerAccount: "CGM_EBS_CONTROL_RPS_PER_ACCOUNT",
  burstSeconds: "CGM_EBS_BURST_SECONDS",
  accountThrottleError: "CGM_EBS_ACCOUNT_THROTTLE_ERROR",
  errorRate: "CGM_EBS_ERROR_RATE",
  errorOperations: "CGM_EBS_ERROR_OPERATIONS",
  failAfterRequests: "CGM_EBS_FAIL_AFTER_REQUESTS",
  tokenTtlMs: "CGM_EBS_TOKEN_TTL_MS",
  maxConcurrentRequests: "CGM_EBS_MAX_CONCURRENT_REQUESTS",
  maxPendingSnapshots: "CGM_EBS_MAX_PENDING_SNAPSHOTS",
  denyAccessKeyIds: "CGM_EBS_DENY_ACCESS_KEY_IDS",
});

/** Reads the knobs set in `env` (unset variables are left out). Throws EbsFaultConfigError on a bad value. */
export function faultsFromEnv(env: NodeJS.ProcessEnv = process.env): Partial<EbsFaults> {
  const out: Record<string, unknown> = {};
  for (const [key, name] of Object.entries(FAULT_ENV)) {
    const raw = env[name];
    if (raw === undefined || raw === "") continue;
    if (key === "errorOperations" || key === "denyAccessKeyIds") {
      out[key] = raw
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s !== "");
    } else if (key === "accountThrottleError") {
      out[key] = raw;
    } else {
      const n = Number(raw);
      if (!Number.isFinite(n)) throw new EbsFaultConfigError(`${name} must be a number, got "${raw}"`);
      out[key] = n;
    }
  }
  const parsed = out as Partial<EbsFaults>;
  mergeFaults(DEFAULT_FAULTS, parsed);
  return parsed;
}
