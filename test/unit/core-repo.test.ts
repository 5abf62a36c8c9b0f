import { describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { createRepo } from "#core/format/layout.ts";
import {
  checkCorruption,
  checkRandomHistories,
  checkRevert,
  twoGenerations,
} from "../support/repo-scenarios.ts";

const memoryRepo = async () =>
  createRepo({ store: new MemoryObjectStore(), prefix: "groups/g1", group: "g1" });

describe("repository (in-memory store)", () => {
  it("GIVEN random writes to three volumes over 5+ generations WHEN each is committed THEN every generation restores byte for byte", async () => {
    await checkRandomHistories(memoryRepo, 8);
  });

  it("GIVEN a run prepared on some volumes WHEN reverted THEN the previous generation is current and exact and nothing of the run is reachable", async () => {
    await checkRevert(await memoryRepo());
  });

  for (const kind of ["flip-segment-byte", "missing-segment", "truncated-index-page"] as const) {
    it(`fails loudly on restore and reports in verify when ${kind}`, async () => {
      await checkCorruption(await memoryRepo(), kind);
    });
  }

  it("GIVEN a tiny in-memory ref budget WHEN verified in passes THEN it checks the same segments and blocks", async () => {
    const { verifyGeneration } = await import("#core/restore/verify.ts");
    const repo = await memoryRepo();
    await twoGenerations(repo);
    const one = await verifyGeneration(repo, { readData: 1 });
    const many = await verifyGeneration(repo, { readData: 1, maxRefsInMemory: 3 });
    expect(one.ok && many.ok).toBe(true);
    expect(many).toMatchObject({
      segments: one.segments,
      blocksReHashed: one.blocksReHashed,
      indexEntries: one.indexEntries,
    });
    expect(one.blocksReHashed).toBeGreaterThan(10);
  });

  it("GIVEN an empty repository WHEN verified THEN it reports no generation", async () => {
    const { verifyGeneration } = await import("#core/restore/verify.ts");
    const report = await verifyGeneration(await memoryRepo());
    expect(report.generation).toBeUndefined();
  });
});
