/**
 * Adaptive request pacing for the EBS direct APIs: additive increase, multiplicative decrease (AIMD)
 * of a request *rate*, with an in-flight window derived from that rate and the observed latency.
 *
 * Why a rate and not only a concurrency window: the EBS quotas are requests per second (per snapshot
 * and per account), enforced by token buckets. A rate controller converges just under the quota and
 * keeps the throttled fraction tiny; a window alone overshoots whenever latency drops.
 *
 * - `AimdState` is the pure controller (tested with fast-check).
 * - `AimdLimiter` paces callers with it: `acquire()` before a request, `release(outcome)` after.
 */
import { InvalidArgumentError } from "../errors.ts";

export type AimdOutcome = "ok" | "throttled" | "transient" | "failed";

export interface AimdOptions {
  /** Requests per second to start at. @default 50 */
  readonly initialRate?: number;
  /** @default 1 */
  readonly minRate?: number;
  /** @default 10000 */
  readonly maxRate?: number;
  /** Rate multiplier on a throttling answer. @default 0.8 */
  readonly throttleDecrease?: number;
  /** Rate multiplier on a 5xx / network error (milder: random errors are not congestion). @default 0.95 */
  readonly transientDecrease?: number;
  /**
   * After the first decrease, the rate grows by this fraction of the rate at which congestion last
   * happened, per second of clean requests. @default 0.03
   */
  readonly additiveFraction?: number;
  /** Before the first decrease (slow start) each success adds this many requests/s. @default 0.5 */
  readonly slowStartGain?: number;
  /**
   * Decreases are at most one per this many ms (answers to requests sent before a decrease do not
   * count twice). @default 300 in AimdState; 50 in AimdLimiter, which also ignores answers to
   * requests sent before the last decrease (known from the latency passed to `release`)
   */
  readonly holdMs?: number;
  /** After this long without congestion the additive growth starts to accelerate. @default 2000 */
  readonly probeAfterMs?: number;
  /** Extra multiple of the additive growth per second beyond probeAfterMs. @default 0.5 */
  readonly probeGain?: number;
  /** On throttling the rate drops to at most this fraction of the achieved success rate. @default 0.9 */
  readonly achievedFraction?: number;
  /** In-flight requests never exceed this. @default 64 */
  readonly maxConcurrency?: number;
  /** In-flight requests are always allowed up to this. @default 2 */
  readonly minConcurrency?: number;
  /** Requests that may be sent at once after an idle period (in ms of the current rate). @default 50 */
  readonly burstMs?: number;
  /** Clock in ms. @default performance.now */
  readonly now?: () => number;
}

function check(name: string, value: number, lo: number, hi: number): number {
  if (!Number.isFinite(value) || value < lo || value > hi) {
    throw new InvalidArgumentError(`expected ${name} in [${lo}, ${hi}], got ${value}`);
  }
  return value;
}

/** The pure AIMD controller over a request rate (requests/s). */
export class AimdState {
  readonly minRate: number;
  readonly maxRate: number;
  readonly throttleDecrease: number;
  readonly transientDecrease: number;
  readonly additiveFraction: number;
  readonly slowStartGain: number;
  readonly holdMs: number;
  readonly achievedFraction: number;
  readonly probeAfterMs: number;
  readonly probeGain: number;
  rate: number;
  slowStart = true;
  /** Rate at the last decrease (0 before any). */
  congestionRate = 0;
  lastDecreaseAt = Number.NEGATIVE_INFINITY;
  decreases = 0;

  constructor(options: AimdOptions = {}) {
    this.minRate = check("minRate", options.minRate ?? 1, 0.001, 1e6);
    this.maxRate = check("maxRate", options.maxRate ?? 10_000, this.minRate, 1e7);
    this.rate = check("initialRate", options.initialRate ?? 50, this.minRate, this.maxRate);
    this.throttleDecrease = check("throttleDecrease", options.throttleDecrease ?? 0.8, 0.05, 0.999);
    this.transientDecrease = check("transientDecrease", options.transientDecrease ?? 0.95, 0.05, 1);
    this.additiveFraction = check("additiveFraction", options.additiveFraction ?? 0.03, 0, 10);
    this.slowStartGain = check("slowStartGain", options.slowStartGain ?? 0.5, 0, 100);
    this.holdMs = check("holdMs", options.holdMs ?? 300, 0, 60_000);
    this.achievedFraction = check("achievedFraction", options.achievedFraction ?? 0.9, 0.1, 1);
    this.probeAfterMs = check("probeAfterMs", options.probeAfterMs ?? 2000, 0, 3_600_000);
    this.probeGain = check("probeGain", options.probeGain ?? 0.5, 0, 100);
  }

  /**
   * A request succeeded. `ceiling` caps growth (e.g. twice the achieved rate), so a rate that is not
   * the binding limit does not grow without bound.
   */
  onSuccess(ceiling = Number.POSITIVE_INFINITY, now?: number): void {
    const cap = Math.min(this.maxRate, Math.max(ceiling, this.minRate));
    if (this.rate >= cap) return;
    let inc: number;
    if (this.slowStart) {
      inc = this.slowStartGain;
    } else {
      // Per success, so that per second (rate successes) the rate grows by additiveFraction ×
      // congestionRate; after `probeAfterMs` without congestion the growth speeds up (capacity freed
      // by other workers that finished is claimed in seconds, not minutes).
      const clean = now === undefined ? 0 : Math.max(0, now - this.lastDecreaseAt - this.probeAfterMs);
      const boost = 1 + (clean / 1000) * this.probeGain;
      inc = (boost * this.additiveFraction * Math.max(this.congestionRate, this.minRate)) / this.rate;
    }
    this.rate = Math.min(cap, this.rate + inc);
  }

  /**
   * Congestion (throttled or transient). Returns true when the rate was decreased. `achieved`, the
   * rate of successful requests just measured, bounds the decrease on throttling: the new rate is at
   * most `achievedFraction` × achieved, so a rate that had run far above what the quota grants (a
   * burst allowance drained slowly) lands just under the quota in one step instead of several.
   */
  onCongestion(kind: "throttled" | "transient", now: number, achieved?: number): boolean {
    if (now - this.lastDecreaseAt < this.holdMs) return false;
    const factor = kind === "throttled" ? this.throttleDecrease : this.transientDecrease;
    if (factor >= 1) return false;
    this.congestionRate = this.rate;
    let next = this.rate * factor;
    if (kind === "throttled" && achieved !== undefined && Number.isFinite(achieved) && achieved > 0) {
      next = Math.min(next, achieved * this.achievedFraction);
      this.congestionRate = Math.min(this.rate, achieved);
    }
    this.rate = Math.max(this.minRate, next);
    this.lastDecreaseAt = now;
    this.slowStart = false;
    this.decreases++;
    return true;
  }
}

export interface AimdStats {
  rate: number;
  window: number;
  inFlight: number;
  maxInFlight: number;
  ok: number;
  throttled: number;
  transient: number;
  failed: number;
  decreases: number;
}

/**
 * Paces requests: `await acquire()` (waits for an in-flight slot and the rate), send, then
 * `release(outcome, latencyMs)`. FIFO among waiters.
 */
export class AimdLimiter {
  readonly state: AimdState;
  readonly maxConcurrency: number;
  readonly minConcurrency: number;
  readonly #burstMs: number;
  readonly #now: () => number;
  readonly #waiters: (() => void)[] = [];
  #inFlight = 0;
  #nextAt = Number.NEGATIVE_INFINITY;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #latencyMs = 50;
  /** Completion times of the last second (ring), to cap growth at twice the achieved rate. */
  #completions: number[] = [];
  #firstOkAt: number | undefined;
  /** Time of the last decrease, and the successes answered since (the rate the quota grants now). */
  #decreasedAt: number | undefined;
  #okSinceDecrease = 0;
  readonly stats: AimdStats;

  constructor(options: AimdOptions = {}) {
    // Answers to requests sent before a decrease are recognized by their send time (release's
    // latency), so the hold between decreases only needs to cover releases without a latency.
    this.state = new AimdState({ ...options, holdMs: options.holdMs ?? 50 });
    this.maxConcurrency = check("maxConcurrency", options.maxConcurrency ?? 64, 1, 100_000);
    this.minConcurrency = check("minConcurrency", options.minConcurrency ?? 2, 1, this.maxConcurrency);
    this.#burstMs = check("burstMs", options.burstMs ?? 50, 0, 10_000);
    this.#now = options.now ?? (() => performance.now());
    this.stats = {
      rate: this.state.rate,
      window: this.window,
      inFlight: 0,
      maxInFlight: 0,
      ok: 0,
      throttled: 0,
      transient: 0,
      failed: 0,
      decreases: 0,
    };
  }

  /** In-flight window: enough for the rate at the observed latency, with head-room. */
  get window(): number {
    const need = Math.ceil((this.state.rate * this.#latencyMs * 1.5) / 1000) + 2;
    return Math.max(this.minConcurrency, Math.min(this.maxConcurrency, need));
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  acquire(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#waiters.push(resolve);
      this.#pump();
    });
  }

  release(outcome: AimdOutcome, latencyMs?: number): void {
    this.#inFlight--;
    const now = this.#now();
    if (latencyMs !== undefined && Number.isFinite(latencyMs) && latencyMs >= 0) {
      this.#latencyMs = this.#latencyMs * 0.9 + latencyMs * 0.1;
    }
    if (outcome === "ok") {
      this.stats.ok++;
      this.#firstOkAt ??= now;
      this.#okSinceDecrease++;
      const c = this.#completions;
      c.push(now);
      while (c.length > 0 && c[0]! < now - 1000) c.shift();
      // Early on the window is short: do not cap growth until a full second has been observed.
      const ceiling = c.length < 8 ? Number.POSITIVE_INFINITY : Math.max(2 * c.length, 8);
      this.state.onSuccess(ceiling, now);
    } else if (outcome === "throttled" || outcome === "transient") {
      this.stats[outcome]++;
      // An answer to a request sent before the last decrease says nothing about the new rate.
      const sentBeforeDecrease =
        latencyMs !== undefined && this.#decreasedAt !== undefined && now - latencyMs < this.#decreasedAt;
      if (!sentBeforeDecrease && this.state.onCongestion(outcome, now, this.#achieved(now))) {
        this.stats.decreases++;
        this.#decreasedAt = now;
        this.#okSinceDecrease = 0;
        // Do not keep sending at the old pace: restart pacing from now.
        this.#nextAt = Math.max(this.#nextAt, now + 1000 / this.state.rate);
      }
    } else {
      this.stats.failed++;
    }
    this.stats.rate = this.state.rate;
    this.stats.window = this.window;
    this.stats.inFlight = this.#inFlight;
    this.#pump();
  }

  /**
   * Successful requests per second over the last second (or since the first success, if sooner), not
   * counting what came before a decrease within that second: those answers can still hold a burst
   * allowance the quota no longer grants (at the start). Without it several workers that start above
   * a low quota stay above it for several decreases, throttled on most requests.
   */
  #achieved(now: number): number | undefined {
    const c = this.#completions;
    while (c.length > 0 && c[0]! < now - 1000) c.shift();
    if (this.#firstOkAt === undefined || c.length < 4) return undefined;
    const span = Math.min(1000, Math.max(100, now - this.#firstOkAt));
    const lastSecond = (c.length * 1000) / span;
    const since = this.#decreasedAt === undefined ? 0 : now - this.#decreasedAt;
    if (since < 100 || since > 1000) return lastSecond;
    return Math.min(lastSecond, (this.#okSinceDecrease * 1000) / since);
  }

  #pump(): void {
    while (this.#waiters.length > 0 && this.#inFlight < this.window) {
      const now = this.#now();
      const at = Math.max(this.#nextAt, now - this.#burstMs);
      if (at > now) {
        if (this.#timer === undefined) {
          this.#timer = setTimeout(
            () => {
              this.#timer = undefined;
              this.#pump();
            },
            Math.max(1, Math.ceil(at - now)),
          );
        }
        return;
      }
      this.#nextAt = at + 1000 / this.state.rate;
      this.#inFlight++;
      if (this.#inFlight > this.stats.maxInFlight) this.stats.maxInFlight = this.#inFlight;
      this.stats.inFlight = this.#inFlight;
      this.#waiters.shift()!();
    }
  }

  /** Stops the pacing timer (waiters stay pending). */
  close(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/** Exponential back-off with full jitter: a random delay in [0, min(cap, base × 2^attempt)). */
export function backoffMs(
  attempt: number,
  baseMs = 100,
  capMs = 5000,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}
