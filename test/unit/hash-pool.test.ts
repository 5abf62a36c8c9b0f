/**
 * Sha256Pool (core/util/hash-pool.ts): the digests its worker threads send back are the SHA-256 of
 * exactly the bytes given, whether a borrowed buffer was moved to a thread and back or the bytes were
 * copied to it; a pool whose threads are gone still answers (on the calling thread), except for a
 * buffer that went down with a thread, which is reported lost; borrowed buffers come back to the pool
 * only when given back, once.
 */
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { InvalidArgumentError } from "#core/errors.ts";
import { HashThreadLostError, Sha256Pool, sharedSha256Pool } from "#core/util/hash-pool.ts";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const hex = (d: Uint8Array) => Buffer.from(d).toString("hex");

const pools: Sha256Pool[] = [];
function pool(threads: number): Sha256Pool {
  const p = new Sha256Pool(threads);
  pools.push(p);
  return p;
}
afterAll(async () => {
  for (const p of pools) await p.close();
});

describe("Sha256Pool", () => {
  it("GIVEN views of borrowed buffers and of ordinary ones, any sizes, many calls at once WHEN hashed THEN every digest is the SHA-256 of its view", async () => {
    const p = pool(2);
    expect(p.threads).toBe(2);
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            sizes: fc.array(fc.integer({ min: 0, max: 70_000 }), { minLength: 0, maxLength: 6 }),
            borrowed: fc.boolean(),
          }),
          { minLength: 1, maxLength: 8 },
        ),
        async (calls) => {
          const jobs = calls.map(({ sizes, borrowed }) => {
            const total = sizes.reduce((a, b) => a + b, 0);
            const backing = borrowed ? p.borrow(total) : new Uint8Array(total);
            backing.set(randomBytes(total));
            const views: Uint8Array[] = [];
            let at = 0;
            for (const n of sizes) {
              views.push(backing.subarray(at, at + n));
              at += n;
            }
            const expected = views.map(sha);
            return { views, expected, backing, borrowed, got: p.digestEach(views) };
          });
          for (const j of jobs) {
            expect(j.got).toHaveLength(j.views.length);
            expect((await Promise.all(j.got)).map(hex)).toEqual(j.expected);
            if (j.borrowed) p.giveBack(j.backing);
          }
        },
      ),
      { numRuns: 40 },
    );
  });

  it("GIVEN borrowed buffers WHEN their spans are hashed on threads they are moved to THEN each comes back with the same bytes and every span's digest, and is unreadable meanwhile", async () => {
    const p = pool(2);
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(fc.integer({ min: 0, max: 40_000 }), { minLength: 1, maxLength: 6 }), {
          minLength: 1,
          maxLength: 6,
        }),
        fc.integer({ min: 0, max: 100 }),
        async (calls, lead) => {
          const jobs = calls.map((sizes) => {
            const total = sizes.reduce((a, b) => a + b, 0);
            const backing = p.borrow(lead + total);
            const view = backing.subarray(lead); // not at the buffer's start
            view.set(randomBytes(total));
            const spans: Array<[number, number]> = [];
            let at = 0;
            for (const n of sizes) {
              spans.push([at, n]);
              at += n;
            }
            const copy = Buffer.from(view);
            const expected = spans.map(([o, n]) => sha(copy.subarray(o, o + n)));
            const got = p.digestMoved(view, spans);
            expect(view.byteLength).toBe(0); // moved: nothing here reads it until it is back
            return { copy, expected, got };
          });
          for (const j of jobs) {
            const back = await j.got;
            expect(back.digests.map(hex)).toEqual(j.expected);
            expect(Buffer.from(back.view).equals(j.copy)).toBe(true);
            expect(p.lent(back.view)).toBe(true);
            p.giveBack(back.view);
          }
        },
      ),
      { numRuns: 30 },
    );
  });

  it("GIVEN bytes not from borrow WHEN digestMoved THEN they are hashed here and stay where they are", async () => {
    const p = pool(1);
    const bytes = randomBytes(5000);
    const back = await p.digestMoved(bytes, [
      [0, 10],
      [10, 4990],
    ]);
    expect(back.view).toBe(bytes);
    expect(bytes.byteLength).toBe(5000);
    expect(back.digests.map(hex)).toEqual([sha(bytes.subarray(0, 10)), sha(bytes.subarray(10))]);
  });

  it("GIVEN a pool of no thread (one vCPU) WHEN buffers are borrowed and hashed THEN the digests are made here, the bytes stay put, and given-back buffers are lent again", async () => {
    const p = pool(0);
    expect(p.threads).toBe(0);
    const view = p.borrow(3 * 1000);
    view.set(randomBytes(view.byteLength));
    const copy = Buffer.from(view);
    const back = await p.digestMoved(view, [
      [0, 1000],
      [1000, 2000],
    ]);
    expect(back.view).toBe(view);
    expect(Buffer.from(back.view).equals(copy)).toBe(true);
    expect(back.digests.map(hex)).toEqual([sha(copy.subarray(0, 1000)), sha(copy.subarray(1000))]);
    expect((await p.digest([copy.subarray(5, 9)])).map(hex)).toEqual([sha(copy.subarray(5, 9))]);
    p.giveBack(view);
    const again = p.borrow(100);
    expect(again.buffer).toBe(view.buffer);
    expect(p.buffersMade).toBe(1);
  });

  it("GIVEN a buffer moved to a thread WHEN the pool is closed before it comes back THEN the call fails with HashThreadLostError", async () => {
    const p = pool(1);
    const view = p.borrow(8 * 512 * 1024);
    view.set(randomBytes(view.byteLength));
    const moved = p.digestMoved(
      view,
      Array.from({ length: 8 }, (_, k) => [k * 512 * 1024, 512 * 1024] as [number, number]),
    );
    await p.close();
    await expect(moved).rejects.toBeInstanceOf(HashThreadLostError);
  });

  it("GIVEN views of different buffers in one call WHEN hashed THEN each digest is still its own view's", async () => {
    const p = pool(1);
    const a = randomBytes(1000);
    const b = p.borrow(3000);
    b.set(randomBytes(3000));
    const views = [a.subarray(10, 500), b.subarray(0, 3000), a.subarray(0, 0)];
    expect((await p.digest(views)).map(hex)).toEqual(views.map(sha));
  });

  it("GIVEN calls under way WHEN the pool is closed THEN they and every later call still resolve to the right digests, hashed on the calling thread", async () => {
    const p = pool(1);
    const blocks = Array.from({ length: 24 }, () => randomBytes(512 * 1024));
    const pending = blocks.map((b) => p.digestEach([b, b.subarray(7)]));
    await p.close();
    expect(p.threads).toBe(0);
    for (const [k, b] of blocks.entries()) {
      expect((await Promise.all(pending[k]!)).map(hex)).toEqual([sha(b), sha(b.subarray(7))]);
    }
    const later = randomBytes(1234);
    expect((await p.digest([later])).map(hex)).toEqual([sha(later)]);
  });

  it("GIVEN a borrowed buffer WHEN it is given back (twice) THEN the next borrow that fits reuses it, only once; a foreign buffer is never taken", () => {
    const p = pool(1);
    expect(p.buffersMade).toBe(0);
    const first = p.borrow(1000);
    const second = p.borrow(1000);
    expect(second.buffer).not.toBe(first.buffer);
    expect(first.byteLength).toBe(1000);
    p.giveBack(first);
    p.giveBack(first); // a second give-back must not hand the buffer out twice
    p.giveBack(new Uint8Array(new ArrayBuffer(1 << 24))); // not the pool's: ignored
    expect(p.lent(first)).toBe(false);
    const again = p.borrow(2000);
    expect(again.buffer).toBe(first.buffer);
    expect(again.byteLength).toBe(2000);
    const fresh = p.borrow(1000);
    expect(fresh.buffer).not.toBe(first.buffer);
    expect(fresh.buffer.byteLength).toBe(8 * 1024 * 1024); // the smallest buffer the pool makes
    expect(p.buffersMade).toBe(3);
  });
});

describe("sharedSha256Pool", () => {
  it("GIVEN CGM_HASH_THREADS that is not a count WHEN the pool is first asked for THEN it fails saying what is wrong; 0 means no threads", () => {
    const before = process.env.CGM_HASH_THREADS;
    try {
      process.env.CGM_HASH_THREADS = "two";
      expect(() => sharedSha256Pool()).toThrow(InvalidArgumentError);
      expect(() => sharedSha256Pool()).toThrow(
        'CGM_HASH_THREADS must be a whole number of threads, 0 or more (0: hash on the calling thread); it is "two"',
      );
      process.env.CGM_HASH_THREADS = "0";
      expect(sharedSha256Pool().threads).toBe(0);
    } finally {
      if (before === undefined) delete process.env.CGM_HASH_THREADS;
      else process.env.CGM_HASH_THREADS = before;
    }
  });

  for (const use of ["never hashed", "hashed once"] as const) {
    it(`GIVEN a process whose pool's threads are ${use} (buffers only borrowed) WHEN its work is done THEN the idle threads do not keep it alive`, async () => {
      // A restore into snapshots borrows buffers but hashes nothing: its CLI process must still exit.
      const poolModule = new URL("../../core/util/hash-pool.ts", import.meta.url).href;
      const script = [
        `const { Sha256Pool } = await import(${JSON.stringify(poolModule)});`,
        "const p = new Sha256Pool(2);",
        "const b = p.borrow(1024);",
        use === "hashed once" ? "await p.digestMoved(b, [[0, 1024]]);" : "",
        "p.giveBack(b);",
        'process.stdout.write("done");',
      ].join("\n");
      // A file, not `-e` with --input-type=module: the threads would inherit that flag.
      const dir = await mkdtemp(join(tmpdir(), "cgm-hash-pool-"));
      const file = join(dir, "idle.mjs");
      await writeFile(file, script);
      const r = await new Promise<{ code: number | null; signal: string | null; stdout: string }>(
        (resolve) => {
          const child = execFile(
            process.execPath,
            [file],
            { timeout: 60_000, killSignal: "SIGKILL" },
            (_error, stdout) => resolve({ code: child.exitCode, signal: child.signalCode, stdout }),
          );
        },
      );
      await rm(dir, { recursive: true, force: true });
      expect(r.stdout).toBe("done");
      expect(r.signal, "the process had to be killed: something kept it alive").toBeNull();
      expect(r.code).toBe(0);
    });
  }
});
