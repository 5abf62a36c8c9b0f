/**
 * How many Transfer tasks a run starts at once and how fast each reads, from the EBS direct APIs'
 * GetSnapshotBlock quotas (docs/transfer.md, "Concurrency from the quotas"): every shard of one
 * snapshot shares the per-snapshot quota (1,000 requests/s, fixed), every shard of the account shares
 * the per-account quota (1,000/s by default, adjustable). Running more tasks than the quotas feed
 * only slows each one down (and, before resumption, made shards miss Lambda's 15 minutes).
 */
import { InvalidArgumentError } from "../errors.ts";
import type { BlockSource } from "../ports/block-source.ts";
import { type RetryOptions, retrySource } from "./errors.ts";

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

/**
 * Shards one volume should be cut into for the planned tasks to use the quotas: as many as its
 * snapshot's quota feeds, at most its share of what the account quota feeds.
 */
export function targetShardsPerVolume(volumes: number, q: TransferQuotas): number {
  const want = Math.min(q.shardRps, q.snapshotBlockRps, q.accountBlockRps);
  const perSnapshot = Math.max(1, Math.floor(q.snapshotBlockRps / want));
  const feedable = Math.max(1, Math.floor(q.accountBlockRps / want));
  return Math.max(1, Math.min(perSnapshot, Math.ceil(feedable / Math.max(1, volumes)), q.maxConcurrency));
}

/**
 * Counts the blocks a plan of this snapshot will list, stopping as soon as there are `limit` (a
 * large change set costs `limit` / 10,000 List requests, a small one its whole listing, a few pages).
 */
export async function countBlocksUpTo(
  source: BlockSource,
  snapshot: { readonly snapshotId: string; readonly baseSnapshotId: string | null },
  limit: number,
  retry?: RetryOptions,
): Promise<number> {
  let count = 0;
  let nextToken: string | undefined;
  let start = 0;
  for (;;) {
    const token = nextToken;
    const from = start;
    const page = await retrySource(
      snapshot.baseSnapshotId ? "ListChangedBlocks" : "ListSnapshotBlocks",
      () =>
        source.listBlocks({
          snapshotId: snapshot.snapshotId,
          baseSnapshotId: snapshot.baseSnapshotId ?? undefined,
          maxResults: 10_000,
          ...(token ? { nextToken: token } : { startingBlockIndex: from }),
        }),
      retry,
    );
    count += page.blocks.length;
    if (count >= limit || !page.nextToken) return count;
    nextToken = page.nextToken;
    const last = page.blocks.at(-1);
    if (last) start = last.index + 1;
  }
}

/**
 * The shard size for a volume with `counted` blocks (counted up to `target × configured`): the
 * configured size for a large change set, else small enough for `target` shards (at least 64 blocks).
 */
export function shardBlocksFor(counted: number, configured: number, target: number): number {
  if (counted >= target * configured) return configured;
  return Math.min(configured, Math.max(64, Math.ceil(counted / target)));
}

/**
 * The shard size that keeps a plan within `maxShards` whatever the volumes hold: the configured size,
 * or larger when the volumes together have more blocks than `maxShards` shards of it could hold.
 * A volume of `b` blocks gives at most ⌈b / size⌉ shards, so a size of ⌈Σb / (maxShards − n)⌉ bounds
 * the total by Σ(b / size + 1) ≤ maxShards. Shards resume across invocations, so a larger shard only
 * takes more invocations, never a failed run.
 */
export function shardBlocksWithin(
  volumeBlocks: readonly number[],
  configured: number,
  maxShards: number,
): number {
  const n = volumeBlocks.length;
  if (!Number.isInteger(maxShards) || maxShards <= n) {
    throw new InvalidArgumentError(
      `expected room for more than one shard per volume, got ${maxShards} for ${n} volumes`,
    );
  }
  const total = volumeBlocks.reduce((a, b) => a + b, 0);
  return Math.max(configured, Math.ceil(total / (maxShards - n)));
}

/** Each snapshot's size in blocks: one List request each (its first page names the volume size). */
export async function volumeBlocksOf(
  source: BlockSource,
  snapshots: readonly { readonly snapshotId: string }[],
  blockSize: number,
  retry?: RetryOptions,
): Promise<number[]> {
  const sizes: number[] = [];
  for (const s of snapshots) {
    const page = await retrySource(
      "ListSnapshotBlocks",
      () => source.listBlocks({ snapshotId: s.snapshotId, maxResults: 100 }),
      retry,
    );
    sizes.push(Math.ceil(page.volumeSizeBytes / blockSize));
  }
  return sizes;
}
