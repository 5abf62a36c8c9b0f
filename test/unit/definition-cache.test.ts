/**
 * The local runner's definition cache is keyed by `definitionShape(config)` (the run timeout), not by
 * the whole config, so every group shares one synth. That is only right while nothing else in a
 * config changes the synthesized definition: these tests synthesize CgmirrorStack for configs that
 * differ everywhere else and compare.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parseGroupConfig } from "#core/config/group-config.ts";
import {
  cachedDefinitionByKey,
  definitionCacheKey,
  definitionShape,
  restoreDefinitionCacheKey,
} from "#local/definition-cache.ts";
import { synthesize } from "#local/runner.ts";

const example = parseGroupConfig(
  JSON.parse(readFileSync(new URL("../../infra/examples/group.json", import.meta.url), "utf8")),
);
// Unlike the example in every field but the run timeout.
const other = parseGroupConfig({
  group: "billing",
  volumes: [{ id: "vol-0aaaaaaaaaaaaaaaa" }],
  target: {
    bucket: "another-bucket-210987654321",
    prefix: "x/billing",
  },
  schedule: { expression: "cron(0 2 * * ? *)", timezone: "Europe/Berlin" },
  freeze: { enabled: false },
  prepare: { policy: "failFast" },
  snapshots: { keep: 5, completionTimeoutMinutes: 60 },
  transfer: { shardBlocks: 5000, maxConcurrency: 7 },
  alarms: { rpoMinutes: 2000 },
  runTimeoutMinutes: example.runTimeoutMinutes,
});

describe("the local definition cache", () => {
  it("GIVEN two configs alike only in their run timeout THEN they synthesize the same definition, under one cache key", async () => {
    expect(definitionShape(other)).toEqual(definitionShape(example));
    expect(definitionCacheKey(other)).toBe(definitionCacheKey(example));
    const [a, b] = [await synthesize(example), await synthesize(other)];
    expect(b).toEqual(a);
  });

  it("GIVEN another run timeout THEN another key, and a definition that times out at it", async () => {
    const longer = { ...example, runTimeoutMinutes: example.runTimeoutMinutes + 60 };
    expect(definitionCacheKey(longer)).not.toBe(definitionCacheKey(example));
    expect((await synthesize(longer)).TimeoutSeconds).toBe(longer.runTimeoutMinutes * 60);
  });

  it("GIVEN the restore workflow THEN its own key, and the local runner's (cached) definition is the one synthesized now", async () => {
    expect(restoreDefinitionCacheKey()).not.toBe(definitionCacheKey(example));
    const { restoreWorkflowDefinition } = await import("#local/restore-runner.ts");
    const { restoreDefinition } = await import("#workflows/definition.ts");
    const first = await cachedDefinitionByKey(restoreDefinitionCacheKey(), restoreDefinition);
    const again = await cachedDefinitionByKey(restoreDefinitionCacheKey(), () => {
      throw new Error("a cached definition must not be synthesized again");
    });
    expect(again).toEqual({ definition: first.definition, cached: true });
    expect(await restoreWorkflowDefinition()).toEqual(await restoreDefinition());
  });
});
