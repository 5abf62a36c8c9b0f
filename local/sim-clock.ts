/**
 * The clock of a local run. It can run faster than real time (`scale` simulated milliseconds per real
 * millisecond), so a test can run a "15-minute" task in seconds, and it can jump (`advance`): a Wait
 * state of six hours moves it six hours on at once. Deadlines armed on it (`timer`) fire when simulated
 * time reaches them, also across jumps. Task handlers of the run get it as their `deps.clock`, so what a
 * handler measures (lock expiry, snapshot timeouts) is what the runner enforces.
 */
import type { Clock } from "#core/protocol/snapshot-group.ts";

/** The longest delay Node's setTimeout honours (a longer one fires at once). */
const MAX_TIMEOUT_MS = 2_147_483_647;

export interface SimulatedClockOptions {
  /**
   * Where time starts and how it passes at scale 1; the simulated clock adds the acceleration and the
   * jumps to it.
   * @default the real clock
   */
  readonly base?: Clock;
  /**
   * Simulated milliseconds per real millisecond (>= 1).
   * @default 1
   */
  readonly scale?: number;
}

export interface ClockTimer {
  /** Resolves when simulated time reaches the deadline. */
  readonly fired: Promise<void>;
  /** Disarms the timer (the promise then never settles). */
  cancel(): void;
}

export class SimulatedClock implements Clock {
  readonly scale: number;
  readonly #base: Clock;
  readonly #realStart = Date.now();
  #advancedMs = 0;
  readonly #rearm = new Set<() => void>();

  constructor(options: SimulatedClockOptions = {}) {
    const scale = options.scale ?? 1;
    if (!(Number.isFinite(scale) && scale >= 1)) {
      throw new TypeError(`expected a clock scale >= 1 (simulated ms per real ms), got ${scale}`);
    }
    this.scale = scale;
    this.#base = options.base ?? { now: () => Date.now() };
  }

  now(): number {
    return this.#base.now() + (Date.now() - this.#realStart) * (this.scale - 1) + this.#advancedMs;
  }

  /** Jumps `ms` simulated milliseconds ahead; armed timers whose deadline passed fire. */
  advance(ms: number): void {
    if (!(Number.isFinite(ms) && ms >= 0)) throw new TypeError(`expected ms >= 0 to advance, got ${ms}`);
    this.#advancedMs += ms;
    for (const rearm of [...this.#rearm]) rearm();
  }

  /** A timer that fires when `now()` reaches `deadlineMs`. */
  timer(deadlineMs: number): ClockTimer {
    let handle: ReturnType<typeof setTimeout> | undefined;
    let resolve!: () => void;
    const fired = new Promise<void>((r) => {
      resolve = r;
    });
    const rearm = () => {
      clearTimeout(handle);
      const realDelay = (deadlineMs - this.now()) / this.scale;
      if (realDelay <= 0) {
        this.#rearm.delete(rearm);
        resolve();
        return;
      }
      handle = setTimeout(rearm, Math.min(Math.ceil(realDelay), MAX_TIMEOUT_MS));
    };
    this.#rearm.add(rearm);
    rearm();
    return {
      fired,
      cancel: () => {
        clearTimeout(handle);
        this.#rearm.delete(rearm);
      },
    };
  }
}
