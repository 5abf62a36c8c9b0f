/**
 * How many Transfer tasks a run starts at once and how fast each reads, from the EBS direct APIs'
 * GetSnapshotBlock quotas (docs/transfer.md, "Concurrency from the quotas"): every shard of one
 * snapshot shares the per-snapshot quota (1,000 requests/s, fixed), every shard of the account shares
 * the per-account quota (1,000/s by default, adjustable). Running more tasks than the quotas feed
 * only slows each one down (and, before resumption, made shards miss Lambda's 15 minutes).
 */
import { InvalidArgumentError } from "./errors.ts";

export interface TransferQuotas {
  /** GetSnapshotBlock requests/s per snapshot. */
  readonly snapshotBlockRps: number;
  /** GetSnapshotBlock requests/s per account (this group's share). */
  readonly accountBlockRps: number;
  /** The rate one task reads at when the quotas allow it. */
  readonly shardRps: number;
  /** Never more tasks at once than this (the config's cap). */
  readonly maxConcurrency: number;
}

export interface TransferConcurrency {
  /** The distributed Map's MaxConcurrency. */
  readonly maxConcurrency: number;
  /** Requests/s each task starts at and stays under (its share of both quotas). */
  readonly shardRate: number;
  /** Tasks of one snapshot its quota feeds at `shardRate`. */
  readonly perSnapshot: number;
}

function positive(what: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0) throw new InvalidArgumentError(`expected ${what} > 0, got ${v}`);
  return v;
}

/**
 * Plans the Map's concurrency for shards of several snapshots (`shardsPerSnapshot[i]` shards of
 * snapshot i): as many tasks as the account quota feeds at `shardRps`, at most as many per snapshot
 * as its quota feeds, at most the config's cap; each task's rate is its share of both quotas.
 */
export function planTransferConcurrency(
  shardsPerSnapshot: readonly number[],
  q: TransferQuotas,
): TransferConcurrency {
  const perSnap = positive("snapshotBlockRps", q.snapshotBlockRps);
  const account = positive("accountBlockRps", q.accountBlockRps);
  const want = Math.min(positive("shardRps", q.shardRps), perSnap, account);
  const cap = Math.max(1, Math.floor(positive("maxConcurrency", q.maxConcurrency)));
  const perSnapshot = Math.max(1, Math.floor(perSnap / want));
  const total = shardsPerSnapshot.reduce((n, s) => n + s, 0);
  const useful = shardsPerSnapshot.reduce((n, s) => n + Math.min(s, perSnapshot), 0);
  const feedable = Math.max(1, Math.floor(account / want));
  const maxConcurrency = Math.max(1, Math.min(cap, feedable, useful, total));
  const shardRate = Math.max(
    1,
    Math.floor(Math.min(want, account / maxConcurrency, perSnap / Math.min(maxConcurrency, perSnapshot))),
  );
  return { maxConcurrency, shardRate, perSnapshot };
}

/**
 * The Map's items in round-robin order over the snapshots (shard 0 of each, then shard 1, ...), so the
 * tasks running at once spread over the snapshots' quotas instead of queueing on one.
 */
export function interleaveShards<T extends { readonly volumeId: string }>(items: readonly T[]): T[] {
  const byVolume = new Map<string, T[]>();
  for (const it of items) {
    const list = byVolume.get(it.volumeId);
    if (list) list.push(it);
    else byVolume.set(it.volumeId, [it]);
  }
  const lists = [...byVolume.values()];
  const out: T[] = [];
  for (let i = 0; out.length < items.length; i++) for (const l of lists) if (i < l.length) out.push(l[i]!);
  return out;
}
