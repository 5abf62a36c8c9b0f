import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "../../adapters/memory-store.ts";
import { createRepo } from "../../core/format/layout.ts";
import { planKeys } from "../../core/transfer/shard-list.ts";
import { readRunProgress } from "../../core/transfer/worker.ts";

describe("readRunProgress", () => {
  it("GIVEN progress objects of two shards (one done) and another run's THEN it sums this run's", async () => {
    const repo = createRepo({ store: new MemoryObjectStore(), prefix: "groups/db", group: "db" });
    const put = (volumeId: string, shard: number, body: string) =>
      repo.store.put(planKeys.progress(repo, "run-1", volumeId, shard), new TextEncoder().encode(body));
    const p = (state: string, done: number, total: number) =>
      JSON.stringify({
        runId: "run-1",
        state,
        blocksDone: done,
        blocksTotal: total,
        bytesDone: done * 10,
        bytesTotal: total * 10,
      });
    await put("vol-a", 0, p("done", 100, 100));
    await put("vol-b", 0, p("running", 30, 80));
    await repo.store.put(
      planKeys.progress(repo, "run-2", "vol-a", 0),
      new TextEncoder().encode(p("running", 1, 9)),
    );
    const progress = await readRunProgress(repo, "run-1");
    expect(progress.shards).toHaveLength(2);
    expect({ ...progress, shards: undefined }).toEqual({
      shards: undefined,
      shardsDone: 1,
      blocksDone: 130,
      blocksTotal: 180,
      bytesDone: 1300,
      bytesTotal: 1800,
    });
  });
});
