import { parentPort } from "node:worker_threads";
import { SyntheticBlocks, type SyntheticParams } from "./synthetic.ts";

/** Worker side of SyntheticPool: generates one block per message and transfers it back. */
const cache = new Map<string, SyntheticBlocks>();

parentPort?.on("message", (m: { id: number; params: SyntheticParams; index: number }) => {
  try {
    const key = JSON.stringify(m.params);
    let blocks = cache.get(key);
    if (blocks === undefined) {
      blocks = new SyntheticBlocks(m.params);
      if (cache.size > 64) cache.clear();
      cache.set(key, blocks);
    }
    const target = Buffer.from(new ArrayBuffer(524288));
    const { data, checksum } = blocks.content(m.index, target);
    const ab =
      data === target
        ? (target.buffer as ArrayBuffer)
        : data.buffer.slice(data.byteOffset, data.byteOffset + data.length);
    parentPort?.postMessage({ id: m.id, checksum, data: ab }, [ab as ArrayBuffer]);
  } catch (e) {
    parentPort?.postMessage({ id: m.id, error: (e as Error).message });
  }
});
