import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AimdLimiter, AimdState, backoffMs } from "#core/transfer/aimd.ts";

type Ev = { kind: "ok" | "throttled" | "transient"; dt: number };
const events = fc.array(
  fc.record({
    kind: fc.constantFrom<Ev["kind"]>("ok", "throttled", "transient"),
    dt: fc.integer({ min: 0, max: 2000 }),
  }),
  { maxLength: 400 },
);

describe("AimdState", () => {
  it("GIVEN any sequence of outcomes THEN the rate stays within [minRate, maxRate]", () => {
    fc.assert(
      fc.property(events, (evs) => {
        const s = new AimdState({ minRate: 5, maxRate: 300, initialRate: 50 });
        let t = 0;
        for (const e of evs) {
          t += e.dt;
          if (e.kind === "ok") s.onSuccess();
          else s.onCongestion(e.kind, t);
          expect(s.rate).toBeGreaterThanOrEqual(5);
          expect(s.rate).toBeLessThanOrEqual(300);
        }
      }),
    );
  });

  it("GIVEN a throttle outside the hold window THEN the rate drops by the throttle factor (or to minRate)", () => {
    fc.assert(
      fc.property(fc.double({ min: 2, max: 5000, noNaN: true }), (rate) => {
        const s = new AimdState({ minRate: 1, maxRate: 10_000, initialRate: rate, throttleDecrease: 0.8 });
        expect(s.onCongestion("throttled", 1000)).toBe(true);
        expect(s.rate).toBeCloseTo(Math.max(1, rate * 0.8), 6);
      }),
    );
  });

  it("GIVEN a burst of throttles within holdMs THEN the rate is decreased only once", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 499 }), { minLength: 1, maxLength: 50 }), (offsets) => {
        const s = new AimdState({ initialRate: 400, holdMs: 500 });
        s.onCongestion("throttled", 10_000);
        for (const off of offsets) s.onCongestion("throttled", 10_000 + off);
        expect(s.decreases).toBe(1);
        expect(s.rate).toBeCloseTo(320, 6);
      }),
    );
  });

  it("GIVEN only successes THEN the rate never decreases and never passes the ceiling", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 10, max: 1000 }), (n, ceiling) => {
        const s = new AimdState({ initialRate: 10, maxRate: 5000 });
        let prev = s.rate;
        for (let i = 0; i < n; i++) {
          s.onSuccess(ceiling);
          expect(s.rate).toBeGreaterThanOrEqual(prev);
          expect(s.rate).toBeLessThanOrEqual(Math.max(ceiling, 10));
          prev = s.rate;
        }
      }),
    );
  });

  it("GIVEN congestion happened at rate R THEN R successes add additiveFraction × R", () => {
    const s = new AimdState({ initialRate: 200, throttleDecrease: 0.5, additiveFraction: 0.05 });
    s.onCongestion("throttled", 0);
    expect(s.rate).toBe(100);
    for (let i = 0; i < 100; i++) s.onSuccess();
    // each success adds 0.05 × 200 / rate; 100 successes at ~100 rps ≈ +10
    expect(s.rate).toBeGreaterThan(109);
    expect(s.rate).toBeLessThan(110.1);
  });

  it("fails on a decrease factor outside (0, 1)", () => {
    expect(() => new AimdState({ throttleDecrease: 1.5 })).toThrow(/throttleDecrease/);
  });
});

describe("AimdLimiter", () => {
  it("GIVEN many callers WHEN they acquire and release THEN in-flight never exceeds maxConcurrency", async () => {
    const limiter = new AimdLimiter({ initialRate: 5000, maxRate: 10_000, maxConcurrency: 4 });
    let inFlight = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        await limiter.acquire();
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise((r) => setImmediate(r));
        inFlight--;
        limiter.release(i % 17 === 0 ? "throttled" : "ok", 1);
      }),
    );
    limiter.close();
    expect(peak).toBeLessThanOrEqual(4);
    expect(limiter.stats.ok + limiter.stats.throttled).toBe(200);
    expect(limiter.stats.decreases).toBeGreaterThan(0);
  });

  it("GIVEN a burst allowance then a quota far below the rate THEN the second decrease lands at the success rate since the first", () => {
    let t = 0;
    const limiter = new AimdLimiter({ initialRate: 100, maxConcurrency: 64, holdMs: 300, now: () => t });
    const answer = (outcome: "ok" | "throttled") => {
      void limiter.acquire();
      limiter.release(outcome, 20);
    };
    // 150 ms of burst: 15 successes at 100/s, then the first throttle.
    for (; t < 150; t += 10) answer("ok");
    answer("throttled");
    expect(limiter.state.rate).toBeGreaterThan(50); // the first decrease only × 0.8
    // The quota grants 10/s: over the next 300 ms 3 successes, 21 throttles.
    for (let i = 0; i < 24; i++) {
      t += 12.5;
      answer(i % 8 === 0 ? "ok" : "throttled");
    }
    // The last second's successes (18 in 450 ms ≈ 40/s) would give 36/s; since the decrease: 10/s → 9/s.
    expect(limiter.state.rate).toBeGreaterThan(6);
    expect(limiter.state.rate).toBeLessThan(12);
    limiter.close();
  });

  it("GIVEN throttles for requests sent before a decrease THEN only a throttle for a later request decreases again", () => {
    let t = 1000;
    const limiter = new AimdLimiter({ initialRate: 500, maxConcurrency: 64, now: () => t });
    const throttle = (latencyMs: number) => {
      void limiter.acquire();
      limiter.release("throttled", latencyMs);
    };
    throttle(20);
    expect(limiter.stats.decreases).toBe(1);
    // 200 ms later, answers to requests sent 250 ms ago (before the decrease): ignored.
    t += 200;
    throttle(250);
    throttle(210);
    expect(limiter.stats.decreases).toBe(1);
    // A request sent after the decrease (latency 20 ms) is throttled: the rate goes down again.
    throttle(20);
    expect(limiter.stats.decreases).toBe(2);
    expect(limiter.stats.throttled).toBe(4);
    limiter.close();
  });

  it("GIVEN a throttle THEN the window shrinks with the rate", () => {
    let t = 0;
    const limiter = new AimdLimiter({ initialRate: 1000, maxConcurrency: 64, now: () => t });
    const before = limiter.window;
    void limiter.acquire();
    t = 1000;
    limiter.release("throttled", 50);
    expect(limiter.state.rate).toBe(800);
    expect(limiter.window).toBeLessThanOrEqual(before);
    limiter.close();
  });
});

describe("backoffMs", () => {
  it("GIVEN any attempt THEN the delay is within [0, min(cap, base × 2^attempt))", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 60 }),
        fc.double({ min: 0, max: 0.9999, noNaN: true }),
        (a, r) => {
          const d = backoffMs(a, 100, 5000, () => r);
          expect(d).toBeGreaterThanOrEqual(0);
          expect(d).toBeLessThan(Math.min(5000, 100 * 2 ** a));
        },
      ),
    );
  });
});
