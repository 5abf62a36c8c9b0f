/**
 * A run's transfer progress, summed from the progress objects its shards write
 * (`runs/<runId>/progress/<volume>/<shard>.json`, see core/transfer-worker.ts). Read by the CLI while a
 * backup runs, locally or in AWS.
 */
import type { Repo } from "./layout.ts";
import { ObjectNotFoundError } from "./ports/object-store.ts";
import { planKeys } from "./shard-list.ts";
import type { TransferProgress } from "./transfer-worker.ts";

export interface RunProgress {
  /** Shards that have reported at least once. */
  readonly shardsReporting: number;
  readonly shardsDone: number;
  readonly blocksDone: number;
  /** Blocks of the reporting shards. */
  readonly blocksTotal: number;
  readonly bytesDone: number;
  readonly bytesTotal: number;
}

export async function readRunProgress(repo: Repo, runId: string): Promise<RunProgress> {
  const progress = {
    shardsReporting: 0,
    shardsDone: 0,
    blocksDone: 0,
    blocksTotal: 0,
    bytesDone: 0,
    bytesTotal: 0,
  };
  for await (const o of repo.store.list(planKeys.progressPrefix(repo, runId))) {
    let p: TransferProgress;
    try {
      p = JSON.parse(new TextDecoder().decode((await repo.store.get(o.key)).body)) as TransferProgress;
    } catch (error) {
      if (error instanceof ObjectNotFoundError || error instanceof SyntaxError) continue; // gone or mid-write
      throw error;
    }
    progress.shardsReporting++;
    if (p.state === "done") progress.shardsDone++;
    progress.blocksDone += p.blocksDone;
    progress.blocksTotal += p.blocksTotal;
    progress.bytesDone += p.bytesDone;
    progress.bytesTotal += p.bytesTotal;
  }
  return progress;
}
