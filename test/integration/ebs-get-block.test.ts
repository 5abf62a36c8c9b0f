/**
 * The lean GetSnapshotBlock (adapters/ebs-get-block.ts) against the SDK path, side by side on the EBS
 * emulator: same data and headers on success, and the same port error (kind and code) for every
 * fault the worker handles — throttling per snapshot and per account, concurrency limit, 5xx, invalid
 * and expired tokens, access denied, unknown snapshot, connection refused, request timeout.
 */
import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import { ListSnapshotBlocksCommand } from "@aws-sdk/client-ebs";
import { type EbsEmulator, startEbsEmulator } from "@cgmirror/ebs-emulator";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createEbsClient, EbsBlockSource } from "#adapters/ebs-source.ts";
import { BlockSourceError, type GetBlockRequest } from "#core/ports/block-source.ts";
import { freePort } from "#local/s3-server/server.ts";

let emu: EbsEmulator;
let snapshotId: string;
let tokens: { index: number; token: string }[];

const clients: ReturnType<typeof createEbsClient>[] = [];
function client(endpoint = emu.endpoint, accessKeyId = "AKIDLEAN", requestTimeoutMs?: number) {
  const c = createEbsClient({
    endpoint,
    region: "us-east-1",
    maxSockets: 64,
    credentials: { accessKeyId, secretAccessKey: "x" },
    ...(requestTimeoutMs ? { requestTimeoutMs } : {}),
  });
  clients.push(c);
  return c;
}

/** Both paths over the same kind of client. */
function sources(endpoint?: string, accessKeyId?: string, requestTimeoutMs?: number) {
  return {
    lean: new EbsBlockSource(client(endpoint, accessKeyId, requestTimeoutMs), { leanGet: true }),
    sdk: new EbsBlockSource(client(endpoint, accessKeyId, requestTimeoutMs), { leanGet: false }),
  };
}

type Outcome =
  | { ok: true; sha: string; checksum: string; algorithm: string; length: number }
  | {
      ok: false;
      kind: string;
      code: string;
    };

async function outcome(source: EbsBlockSource, r: GetBlockRequest): Promise<Outcome> {
  try {
    const got = await source.getBlock(r);
    const sha = createHash("sha256").update(got.data).digest("base64");
    got.release?.();
    return {
      ok: true,
      sha,
      checksum: got.checksum,
      algorithm: got.checksumAlgorithm,
      length: got.dataLength,
    };
  } catch (error) {
    if (!(error instanceof BlockSourceError)) throw error;
    return { ok: false, kind: error.kind, code: error.code };
  }
}

const req = (i = 0): GetBlockRequest => ({
  snapshotId,
  blockIndex: tokens[i]!.index,
  blockToken: tokens[i]!.token,
});

beforeAll(async () => {
  // The quota buckets never refill (a frozen quota clock): how many requests a quota admits does not
  // depend on how fast a loaded machine sends them.
  emu = await startEbsEmulator({ quotaClock: () => 0 });
  const snap = await emu.createSyntheticSnapshot({ volumeSizeGiB: 1, seed: "lean", writtenFraction: 0.1 });
  snapshotId = snap.snapshotId;
  const c = client();
  const page = await c.send(new ListSnapshotBlocksCommand({ SnapshotId: snapshotId, MaxResults: 100 }));
  tokens = (page.Blocks ?? []).map((b) => ({ index: b.BlockIndex!, token: b.BlockToken! }));
});

afterEach(() => {
  emu.resetFaults();
});

afterAll(async () => {
  for (const c of clients) c.destroy();
  await emu?.close();
});

describe("lean GetSnapshotBlock vs the SDK", () => {
  it("GIVEN a listed block THEN both read the same bytes, checksum, algorithm and length, in a pooled buffer", async () => {
    const { lean, sdk } = sources();
    for (let i = 0; i < 5; i++) {
      const a = await outcome(lean, req(i));
      expect(a).toEqual(await outcome(sdk, req(i)));
      expect(a).toMatchObject({ ok: true, algorithm: "SHA256", length: 524288 });
      if (a.ok) expect(a.sha).toBe(a.checksum);
    }
    // Released buffers are reused: five reads, one allocation.
    expect(lean.pool.allocated).toBe(1);
  });

  it("GIVEN 64 reads at once whose buffers are recycled as soon as each is hashed THEN every block's bytes match its checksum", async () => {
    const { lean } = sources();
    const n = Math.min(64, tokens.length);
    const all = await Promise.all(Array.from({ length: n }, (_, i) => outcome(lean, req(i))));
    for (const [i, o] of all.entries()) {
      expect(o, `block ${i}`).toMatchObject({ ok: true, length: 524288 });
      if (o.ok) expect(o.sha, `block ${i}`).toBe(o.checksum);
    }
    // Again on the recycled buffers and the kept-alive connections: still every byte right.
    const again = await Promise.all(Array.from({ length: n }, (_, i) => outcome(lean, req(n - 1 - i))));
    for (const o of again) if (o.ok) expect(o.sha).toBe(o.checksum);
    expect(again.every((o) => o.ok)).toBe(true);
    expect(lean.pool.allocated).toBeLessThanOrEqual(n);
  });

  it("GIVEN 60 reads at once under a 20/s per-snapshot quota THEN both get RequestThrottledException as throttled", async () => {
    for (const path of ["lean", "sdk"] as const) {
      emu.setFaults({ dataPlaneRpsPerSnapshot: 20 });
      const s = sources()[path];
      const all = await Promise.all(Array.from({ length: 60 }, (_, i) => outcome(s, req(i % tokens.length))));
      const failed = all.filter((o) => !o.ok);
      expect(failed.length, path).toBeGreaterThan(0);
      for (const f of failed)
        expect(f, path).toEqual({ ok: false, kind: "throttled", code: "RequestThrottledException" });
    }
  });

  const faults: [string, () => void, Outcome][] = [
    [
      "an account quota",
      () => emu.setFaults({ dataPlaneRpsPerAccount: 1, burstSeconds: 1 }),
      { ok: false, kind: "throttled", code: "ThrottlingException" },
    ],
    [
      "injected 5xx",
      () => emu.setFaults({ errorRate: 1, errorOperations: ["GetSnapshotBlock"] }),
      { ok: false, kind: "transient", code: "InternalServerException" },
    ],
    [
      "a denied access key",
      () => emu.setFaults({ denyAccessKeyIds: ["AKIDLEAN"] }),
      { ok: false, kind: "fatal", code: "AccessDeniedException" },
    ],
  ];
  for (const [what, set, want] of faults) {
    it(`GIVEN ${what} THEN both map it to ${want.ok ? "success" : `${want.kind} ${want.code}`}`, async () => {
      set();
      const { lean, sdk } = sources();
      // The account quota lets the first request through; the next ones fail.
      await Promise.all([outcome(lean, req(0)), outcome(sdk, req(0))]);
      expect(await outcome(lean, req(1))).toEqual(want);
      expect(await outcome(sdk, req(1))).toEqual(want);
    });
  }

  it("GIVEN a concurrency limit THEN both map ConcurrentLimitExceededException to throttled", async () => {
    emu.setFaults({ maxConcurrentRequests: 2, latencyMs: 50 });
    for (const path of ["lean", "sdk"] as const) {
      const s = sources()[path];
      const all = await Promise.all(Array.from({ length: 8 }, (_, i) => outcome(s, req(i))));
      expect(
        all.filter((o) => !o.ok),
        path,
      ).toContainEqual({
        ok: false,
        kind: "throttled",
        code: "ConcurrentLimitExceededException",
      });
    }
  });

  it("GIVEN a garbage token, another block's token or an expired token THEN both map to token-expired", async () => {
    const { lean, sdk } = sources();
    const bad: GetBlockRequest[] = [
      { ...req(0), blockToken: "garbage+/=" },
      { ...req(0), blockToken: tokens[1]!.token },
    ];
    for (const r of bad) {
      const want = { ok: false, kind: "token-expired", code: "ValidationException" };
      expect(await outcome(lean, r)).toEqual(want);
      expect(await outcome(sdk, r)).toEqual(want);
    }
    emu.setFaults({ tokenTtlMs: 1 });
    const c = client();
    const page = await c.send(new ListSnapshotBlocksCommand({ SnapshotId: snapshotId, MaxResults: 100 }));
    await new Promise((r) => setTimeout(r, 5));
    const expired = {
      snapshotId,
      blockIndex: page.Blocks![0]!.BlockIndex!,
      blockToken: page.Blocks![0]!.BlockToken!,
    };
    expect(await outcome(lean, expired)).toEqual({
      ok: false,
      kind: "token-expired",
      code: "ValidationException",
    });
    expect(await outcome(sdk, expired)).toEqual({
      ok: false,
      kind: "token-expired",
      code: "ValidationException",
    });
  });

  it("GIVEN an unknown snapshot or a malformed id THEN both map the same fatal error", async () => {
    const { lean, sdk } = sources();
    for (const id of ["snap-0123456789abcdef0", "snap-bad id"]) {
      const r = { ...req(0), snapshotId: id };
      const a = await outcome(lean, r);
      expect(a).toMatchObject({ ok: false, kind: "fatal" });
      expect(a).toEqual(await outcome(sdk, r));
    }
  });

  it("GIVEN nothing listening THEN both map the refused connection to transient", async () => {
    const { lean, sdk } = sources(`http://127.0.0.1:${await freePort()}`);
    const a = await outcome(lean, req(0));
    expect(a).toEqual({ ok: false, kind: "transient", code: "ECONNREFUSED" });
    expect(await outcome(sdk, req(0))).toEqual(a);
  });

  it("GIVEN an answer slower than the request timeout THEN both map it to transient TimeoutError", async () => {
    emu.setFaults({ latencyMs: 400 });
    const { lean, sdk } = sources(undefined, undefined, 100);
    const a = await outcome(lean, req(0));
    expect(a).toEqual({ ok: false, kind: "transient", code: "TimeoutError" });
    expect(await outcome(sdk, req(0))).toEqual(a);
  });

  it("GIVEN a body shorter than DataLength or a connection cut mid-body THEN both map it to transient", async () => {
    let mode: "short" | "cut" = "short";
    const server: Server = createServer((_req, res) => {
      res.writeHead(200, {
        "content-type": "application/octet-stream",
        "x-amz-data-length": "524288",
        "x-amz-checksum": "x",
        "x-amz-checksum-algorithm": "SHA256",
        ...(mode === "short" ? { "content-length": "10" } : { "content-length": "524288" }),
      });
      if (mode === "short") res.end(Buffer.alloc(10));
      else {
        res.write(Buffer.alloc(65536));
        setTimeout(() => res.socket?.destroy(), 10);
      }
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const port = (server.address() as { port: number }).port;
      const { lean, sdk } = sources(`http://127.0.0.1:${port}`);
      const short = await outcome(lean, req(0));
      expect(short).toEqual({ ok: false, kind: "transient", code: "LengthMismatch" });
      expect(await outcome(sdk, req(0))).toEqual(short);
      mode = "cut";
      expect(await outcome(lean, req(0))).toMatchObject({ ok: false, kind: "transient" });
      expect(await outcome(sdk, req(0))).toMatchObject({ ok: false, kind: "transient" });
      expect(lean.pool.free).toBe(1); // the buffer of the failed reads went back to the pool
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
