/**
 * A token bucket: `ratePerSecond` tokens are added continuously up to `capacity`.
 * Pure: the caller passes the clock (milliseconds), so tests need no timers.
 */
export class TokenBucket {
  readonly ratePerSecond: number;
  readonly capacity: number;
  #tokens: number;
  #lastMs: number;

  constructor(ratePerSecond: number, capacity: number, nowMs: number) {
    if (!(ratePerSecond > 0) || !Number.isFinite(ratePerSecond)) {
      throw new TypeError(`ratePerSecond must be a finite number > 0, got ${ratePerSecond}`);
    }
    if (!(capacity >= 1) || !Number.isFinite(capacity)) {
      throw new TypeError(`capacity must be a finite number >= 1, got ${capacity}`);
    }
    this.ratePerSecond = ratePerSecond;
    this.capacity = capacity;
    this.#tokens = capacity;
    this.#lastMs = nowMs;
  }

  #refill(nowMs: number): void {
    if (nowMs > this.#lastMs) {
      this.#tokens = Math.min(
        this.capacity,
        this.#tokens + ((nowMs - this.#lastMs) * this.ratePerSecond) / 1000,
      );
      this.#lastMs = nowMs;
    }
  }

  /** Tokens available at `nowMs` (fractional). */
  available(nowMs: number): number {
    this.#refill(nowMs);
    return this.#tokens;
  }

  /** Takes one token if available; returns whether it did. */
  tryTake(nowMs: number): boolean {
    this.#refill(nowMs);
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return true;
    }
    return false;
  }

  /** Gives back a token taken by `tryTake` (e.g. when another bucket refused the same request). */
  refund(): void {
    this.#tokens = Math.min(this.capacity, this.#tokens + 1);
  }
}
