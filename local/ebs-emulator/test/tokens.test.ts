import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeBlockToken, decodePageToken, encodeBlockToken, encodePageToken } from "../tokens.ts";

const key = { k1: 0x12345678, k2: 0x9abcdef0 };
const snapshotId = fc.stringMatching(/^[0-9a-f]{17}$/).map((h) => `snap-${h}`);
const PATTERN = /^[A-Za-z0-9+/=]+$/;

describe("block token codec", () => {
  it("GIVEN any snapshot/index/expiry WHEN encoded and decoded THEN the fields round-trip", () => {
    fc.assert(
      fc.property(
        snapshotId,
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: 0, max: 2 ** 47 }),
        (id, index, exp) => {
          const token = encodeBlockToken(key, { snapshotId: id, blockIndex: index, expiresAtMs: exp });
          expect(token).toMatch(PATTERN);
          expect(token.length).toBeLessThanOrEqual(256);
          expect(decodeBlockToken(key, token)).toEqual({
            snapshotId: id,
            blockIndex: index,
            expiresAtMs: exp,
          });
        },
      ),
    );
  });

  it("fails to decode a token with any single byte changed", () => {
    fc.assert(
      fc.property(
        snapshotId,
        fc.integer({ min: 0, max: 27 }),
        fc.integer({ min: 1, max: 255 }),
        (id, at, x) => {
          const token = encodeBlockToken(key, { snapshotId: id, blockIndex: 7, expiresAtMs: 1e12 });
          const buf = Buffer.from(token, "base64");
          buf[at] = (buf[at] as number) ^ x;
          expect(decodeBlockToken(key, buf.toString("base64"))).toBeUndefined();
        },
      ),
    );
  });

  it("fails to decode a token made with another key, or garbage", () => {
    const token = encodeBlockToken(key, {
      snapshotId: "snap-0123456789abcdef0",
      blockIndex: 1,
      expiresAtMs: 1,
    });
    expect(decodeBlockToken({ k1: 1, k2: 2 }, token)).toBeUndefined();
    expect(decodeBlockToken(key, "not a token!")).toBeUndefined();
    expect(decodeBlockToken(key, "")).toBeUndefined();
    expect(decodeBlockToken(key, "QUJD")).toBeUndefined();
  });
});

describe("page token codec", () => {
  it("GIVEN any listing position WHEN encoded and decoded THEN the fields round-trip", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("list" as const, "changed" as const),
        snapshotId,
        fc.option(snapshotId, { nil: undefined }),
        fc.integer({ min: 0, max: 0xffffffff }),
        (kind, second, first, nextIndex) => {
          const token = encodePageToken(key, {
            kind,
            secondSnapshotId: second,
            firstSnapshotId: first,
            nextIndex,
          });
          expect(token).toMatch(PATTERN);
          expect(decodePageToken(key, token)).toEqual({
            kind,
            secondSnapshotId: second,
            firstSnapshotId: first,
            nextIndex,
          });
        },
      ),
    );
  });

  it("fails to decode a block token as a page token and vice versa", () => {
    const block = encodeBlockToken(key, {
      snapshotId: "snap-0123456789abcdef0",
      blockIndex: 1,
      expiresAtMs: 1,
    });
    const page = encodePageToken(key, {
      kind: "list",
      secondSnapshotId: "snap-0123456789abcdef0",
      nextIndex: 1,
    });
    expect(decodePageToken(key, block)).toBeUndefined();
    expect(decodeBlockToken(key, page)).toBeUndefined();
  });
});
