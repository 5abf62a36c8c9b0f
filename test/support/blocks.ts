/** Test helpers for repository tests: deterministic block contents and an in-memory volume model. */
import { readFile } from "node:fs/promises";
import { BLOCK_SIZE } from "#core/format/bytes.ts";

/** Kinds of block content: zero, compressible text-like, incompressible noise. */
export type BlockKind = "zero" | "text" | "noise";

export interface BlockSpec {
  readonly kind: BlockKind;
  readonly seed: number;
}

/** Deterministic 512 KiB block for a spec. */
export function makeBlock(spec: BlockSpec): Uint8Array {
  const out = new Uint8Array(BLOCK_SIZE);
  if (spec.kind === "zero") return out;
  let x = (spec.seed * 2654435761) >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  if (spec.kind === "noise") {
    const words = new Uint32Array(out.buffer);
    for (let i = 0; i < words.length; i++) words[i] = next();
    return out;
  }
  const line = new TextEncoder().encode(
    `row ${spec.seed} value=${next()} name=cgmirror-test-${next() % 97};\n`,
  );
  for (let at = 0; at < BLOCK_SIZE; at += line.byteLength)
    out.set(line.subarray(0, Math.min(line.byteLength, BLOCK_SIZE - at)), at);
  return out;
}

/** The expected image of a volume: block → content (absent = zero). */
export class VolumeModel {
  readonly blocks = new Map<number, Uint8Array>();
  readonly sizeBytes: number;
  constructor(blockCount: number) {
    this.sizeBytes = blockCount * BLOCK_SIZE;
  }
  write(block: number, data: Uint8Array | null): void {
    if (data === null) this.blocks.delete(block);
    else this.blocks.set(block, data);
  }
  clone(): VolumeModel {
    const c = new VolumeModel(this.sizeBytes / BLOCK_SIZE);
    for (const [k, v] of this.blocks) c.blocks.set(k, v);
    return c;
  }
}

/** Throws with the first differing block unless the file equals the model byte for byte. */
export async function expectImage(path: string, model: VolumeModel): Promise<void> {
  const file = await readFile(path);
  if (file.byteLength !== model.sizeBytes) {
    throw new Error(`${path}: ${file.byteLength} bytes, expected ${model.sizeBytes}`);
  }
  const zero = Buffer.alloc(BLOCK_SIZE);
  for (let b = 0; b < model.sizeBytes / BLOCK_SIZE; b++) {
    const want = model.blocks.get(b) ?? zero;
    const got = file.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE);
    if (!got.equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength))) {
      throw new Error(`${path}: block ${b} differs from the expected image`);
    }
  }
}
