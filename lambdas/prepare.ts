/**
 * Prepare (one Map item; DESIGN.md section 4, step 6; Establish-revertible): write the volume's new
 * index root as a new object version, from the runs its transfer shards produced.
 */

import { readCommittedManifest } from "#core/format/generation.ts";
import { prepareVolume } from "#core/format/volume-index.ts";
import { assertFenced } from "#core/protocol/commit.ts";
import { readShardSummary } from "#core/transfer/worker.ts";
import { PrepareFailedError } from "#workflows/errors.ts";
import { awsDeps } from "./aws-deps.ts";
import { PrepareInput, type PrepareInputT, PrepareOutput, type PrepareOutputT } from "./contracts.ts";
import { defineTask, groupConfig, type TaskDeps } from "./runtime.ts";
import { leaseOf, readRunPlan, repoOf } from "./shared.ts";

export async function prepareTask(input: PrepareInputT, deps: TaskDeps): Promise<PrepareOutputT> {
  const config = groupConfig(input.config);
  const repo = repoOf(config, deps);
  await assertFenced(repo, leaseOf(input.runId, input.fencing));
  const plan = await readRunPlan(repo, input.planKey);
  const volume = plan.volumes.find((v) => v.volumeId === input.volumeId);
  if (!volume || volume.snapshotId !== input.snapshotId) {
    throw new PrepareFailedError(
      `the run plan ${input.planKey} has no entry for ${input.volumeId} / ${input.snapshotId}`,
    );
  }
  const changes = [];
  const stats = { changedBlocks: 0, storedBlocks: 0, zeroBlocks: 0, dedupedBlocks: 0, storedBytes: 0 };
  for (let shard = 0; shard < volume.shards; shard++) {
    const summary = await readShardSummary(repo, input.runId, input.volumeId, shard);
    if (!summary) {
      throw new PrepareFailedError(
        `shard ${shard} of ${input.volumeId} was not transferred by run ${input.runId}`,
      );
    }
    changes.push(summary.run);
    stats.changedBlocks += summary.stats.blocks;
    stats.storedBlocks += summary.stats.storedBlocks;
    stats.zeroBlocks += summary.stats.zeroBlocks;
    stats.dedupedBlocks += summary.stats.dedupedBlocks;
    stats.storedBytes += summary.stats.storedBytes;
  }
  const committed = await readCommittedManifest(repo);
  const previous = committed?.volumes.find((v) => v.volumeId === input.volumeId);
  const prepared = await prepareVolume(repo, {
    volumeId: input.volumeId,
    runId: input.runId,
    fencing: input.fencing,
    generation: input.generation,
    sizeBytes: volume.volumeSizeBytes,
    changes,
    previous: previous?.index ?? null,
  });
  return {
    ok: true,
    volumeId: input.volumeId,
    index: { versionId: prepared.versionId ?? null, sha256: prepared.sha256 },
    sizeBytes: volume.volumeSizeBytes,
    reused: prepared.reused,
    stats,
  };
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("Prepare", PrepareInput, PrepareOutput, prepareTask, deps);
export const handler = makeHandler(awsDeps);
