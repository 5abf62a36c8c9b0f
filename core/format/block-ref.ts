import { ZERO_BLOCK_SHA256 } from "./bytes.ts";
import { Codec, type CodecId } from "./codec.ts";

/**
 * Where a block's bytes live. `segment` is the 32-hex-character id of the segment object (see
 * `keys.segment`), `offset`/`length` the stored bytes inside it, `codec` how they are encoded and
 * `sha256` the hash of the raw 512 KiB block. An all-zero (or trimmed) block has codec `zero`,
 * `segment` null, offset and length 0.
 */
export interface BlockRef {
  readonly segment: string | null;
  readonly offset: number;
  readonly length: number;
  readonly codec: CodecId;
  readonly sha256: Uint8Array;
}

export const ZERO_REF: BlockRef = Object.freeze({
  segment: null,
  offset: 0,
  length: 0,
  codec: Codec.zero,
  sha256: ZERO_BLOCK_SHA256,
});

/** One entry of a volume index: block number → ref. */
export interface IndexEntry {
  readonly block: number;
  readonly ref: BlockRef;
}
