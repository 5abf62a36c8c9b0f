import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CorruptObjectError } from "#core/errors.ts";
import { decodeShardList, readVarint, ShardListBuilder, writeVarint } from "#core/transfer/shard-list.ts";

describe("varint codec", () => {
  it("GIVEN any integer below 2^53 WHEN written and read THEN it round-trips and uses ceil(bits/7) bytes", () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (n) => {
        const buf = new Uint8Array(10);
        const end = writeVarint(buf, 0, n);
        const [v, next] = readVarint(buf, 0);
        expect(v).toBe(n);
        expect(next).toBe(end);
        expect(end).toBe(Math.max(1, Math.ceil(n.toString(2).length / 7)));
      }),
    );
  });

  it("fails on a truncated varint", () => {
    expect(() => readVarint(new Uint8Array([0x80, 0x80]), 0)).toThrow(RangeError);
  });
});

const sortedBlocks = fc
  .uniqueArray(fc.integer({ min: 0, max: 0xfffffffe }), { maxLength: 300 })
  .map((a) => a.sort((x, y) => x - y))
  .chain((blocks) =>
    fc.tuple(
      fc.constant(blocks),
      fc.array(fc.boolean(), { minLength: blocks.length, maxLength: blocks.length }),
    ),
  );

describe("shard list codec", () => {
  it("GIVEN ascending blocks with absent flags WHEN encoded and decoded THEN blocks, flags and range round-trip", () => {
    fc.assert(
      fc.property(sortedBlocks, ([blocks, absent]) => {
        const first = blocks[0] ?? 0;
        const b = new ShardListBuilder(first);
        blocks.forEach((x, i) => {
          b.add(x, absent[i]);
        });
        const end = (blocks.at(-1) ?? first) + 1;
        const list = decodeShardList(b.encode(end), "k");
        expect([...list.blocks]).toEqual(blocks);
        expect([...list.absent]).toEqual(absent.map((a) => (a ? 1 : 0)));
        expect(list.first).toBe(first);
        expect(list.end).toBe(end);
      }),
    );
  });

  it("GIVEN 30,000 contiguous blocks WHEN encoded THEN it costs one byte a block plus the header", () => {
    const b = new ShardListBuilder(1_000_000);
    for (let i = 0; i < 30_000; i++) b.add(1_000_000 + i);
    expect(b.encode(1_030_000).byteLength).toBe(60 + 30_000);
  });

  it("GIVEN the last u32 block WHEN encoded with end 2^32 THEN it decodes", () => {
    const b = new ShardListBuilder(0xffffffff);
    b.add(0xffffffff);
    expect(decodeShardList(b.encode(0x100000000), "k").end).toBe(0x100000000);
  });

  it("fails with CorruptObjectError when a payload byte is flipped", () => {
    const b = new ShardListBuilder(5);
    for (const x of [5, 9, 300, 70_000]) b.add(x);
    const bytes = b.encode(70_001);
    bytes[bytes.byteLength - 1]! ^= 0x01;
    expect(() => decodeShardList(bytes, "runs/r/plan/v/000000.blocks")).toThrow(CorruptObjectError);
  });

  it("fails when blocks are not ascending", () => {
    const b = new ShardListBuilder(10);
    b.add(10);
    expect(() => b.add(10)).toThrow(/ascending/);
  });
});
