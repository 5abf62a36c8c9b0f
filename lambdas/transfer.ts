/**
 * Transfer (one Map item; DESIGN.md section 4, step 5): copy one shard's blocks into segments.
 * Re-running a shard is safe (the core worker returns a finished shard's summary). An invocation that
 * nears its deadline checkpoints and answers `done: false`; the Map iteration invokes it again with
 * that checkpoint until the shard is done (docs/transfer.md, "Resumption").
 */

import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { GroupDedup } from "#core/format/dedup-index.ts";
import { retiredSegmentsVersion } from "#core/format/gc-state.ts";
import { readHead } from "#core/format/generation.ts";
import { createRepo, type Repo } from "#core/format/layout.ts";
import { RunGuard } from "#core/protocol/run-guard.ts";
import { readShardIndex } from "#core/transfer/planner.ts";
import { transferShardStep } from "#core/transfer/worker.ts";
import { TransferFailedError } from "#workflows/errors.ts";
import { awsDeps } from "./aws-deps.ts";
import { TransferInput, type TransferInputT, TransferOutput, type TransferOutputT } from "./contracts.ts";
import { RUN_METRICS } from "./metric-names.ts";
import { defineTask, remainingTime, type TaskDeps } from "./runtime.ts";

// Group-wide dedup index of the COMMITTED generation, kept per container and keyed by the committed
// manifest's SHA-256 (HEAD cannot move while this run holds the group; a container that serves
// another repository or generation opens it again). It is read-only: what one attempt uploads is known
// only to that attempt's session, so a retry never dedups against a failed attempt.
// The cache is also keyed by the store object: it reads through the store it was opened with, which
// must be this invocation's (one per container in AWS; tests run many stores in one process).
let dedupCache: { key: string; store: Repo["store"]; dedup: Promise<GroupDedup> } | undefined;

async function dedupFor(repo: Repo, bucket: string): Promise<GroupDedup> {
  const [head, retired] = await Promise.all([readHead(repo), retiredSegmentsVersion(repo)]);
  // Also keyed by the retired-segment set: prune may retire segments while HEAD stays (§10.2).
  const key = `${bucket}/${repo.prefix}/${head?.head.commit?.manifest.sha256 ?? "none"}/${retired}`;
  if (dedupCache?.key !== key || dedupCache.store !== repo.store) {
    const dedup = GroupDedup.open(repo);
    dedup.catch(() => {
      if (dedupCache?.dedup === dedup) dedupCache = undefined;
    });
    dedupCache = { key, store: repo.store, dedup };
  }
  return dedupCache.dedup;
}

export async function transferTask(input: TransferInputT, deps: TaskDeps): Promise<TransferOutputT> {
  const remainingMs = remainingTime(deps, "Transfer");
  const repo = createRepo({ store: deps.store(input.bucket), prefix: input.prefix, group: input.group });
  const descriptors = await readShardIndex(repo, input.runId, input.volumeId);
  const shard = descriptors.find((d) => d.shard === input.shard);
  if (!shard) {
    throw new TransferFailedError(
      `the plan of run ${input.runId} has no shard ${input.shard} for ${input.volumeId} (it has ${descriptors.length})`,
    );
  }
  const dedup = (await dedupFor(repo, input.bucket)).session();
  const options = {
    ...deps.transferOptions,
    ...(input.rate !== undefined ? { initialRate: input.rate, maxRate: input.rate } : {}),
  };
  // Before each segment upload: does this run still hold the group? A zombie Transfer of a run that
  // lost it (taken over, or released after Revert) fails with LockLostError and writes nothing more.
  const guard = new RunGuard(repo, input.runId, { now: () => deps.clock.now() });
  const step = await transferShardStep(
    { repo, source: deps.blockSource(), dedup, remainingMs, beforeSegmentUpload: () => guard.check() },
    {
      runId: input.runId,
      shard,
      options,
      ...(input.transfer ? { resume: input.transfer.checkpoint } : {}),
    },
  );
  if (!step.done) {
    deps.log.info("shard checkpointed before the deadline", {
      volumeId: input.volumeId,
      shard: input.shard,
      sequence: step.sequence,
      blocksDone: step.cursor,
      blocks: step.blocksTotal,
      remainingMs: Math.round(remainingMs()),
      throttled: step.stats.throttled,
    });
    return {
      ok: true,
      done: false,
      checkpoint: step.checkpoint,
      blocks: step.blocksTotal,
      blocksDone: step.cursor,
      storedBytes: step.stats.storedBytes,
    };
  }
  const summary = step.summary;
  deps.log.info("shard transferred", {
    volumeId: input.volumeId,
    shard: input.shard,
    reused: summary.reused,
    blocks: summary.stats.blocks,
    storedBytes: summary.stats.storedBytes,
    dedupedBlocks: summary.stats.dedupedBlocks,
    throttled: summary.stats.throttled,
  });
  if (!summary.reused) {
    // A finished shard's summary returned again (a retried Map item) was counted when it finished.
    deps.metrics.add(input.group, RUN_METRICS.bytesChanged, "Bytes", summary.stats.blocks * BLOCK_SIZE);
    deps.metrics.add(input.group, RUN_METRICS.bytesStored, "Bytes", summary.stats.storedBytes);
    deps.metrics.add(input.group, RUN_METRICS.ebsThrottled, "Count", summary.stats.throttled);
  }
  return {
    ok: true,
    done: true,
    checkpoint: null,
    blocks: summary.stats.blocks,
    blocksDone: summary.stats.blocks,
    storedBytes: summary.stats.storedBytes,
  };
}

export const makeHandler = (deps: () => TaskDeps) =>
  defineTask("Transfer", TransferInput, TransferOutput, transferTask, deps);
export const handler = makeHandler(awsDeps);
