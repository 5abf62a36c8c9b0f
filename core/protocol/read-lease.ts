/**
 * Read leases (docs/format.md §10.2): what keeps a running restore's data from a concurrent forget +
 * prune without taking the group lock (a restore must not stop backups for hours, and a backup never
 * deletes committed data).
 *
 * A restore writes `leases/<restoreId>.json` naming each generation it reads (the one it restores and
 * a parent's it diffs against) with the manifest pointer HEAD or the commit record gave, **then**
 * checks that each is still retained. Forget keeps the manifest of a leased generation (it deletes the
 * commit record, lists the leases, then deletes the manifest unless leased); prune lists the leases
 * after the retained generations and marks every leased generation as retained. Order alone makes it
 * safe while the lease is live (the argument is in docs/format.md §10.2); the expiry only bounds how
 * long a crashed restore keeps garbage: a restore renews its lease on every task, and one whose lease
 * expired stops (`ReadLeaseLostError`) — and even then its reads are checked, so it could only fail,
 * never write wrong bytes.
 */
import { z } from "zod";
import { CorruptObjectError, GenerationNotFoundError } from "../errors.ts";
import {
  type GenerationManifest,
  listGenerations,
  PointerSchema,
  readCommitRecord,
  readHead,
  readPinnedManifest,
} from "../format/generation.ts";
import { keys, type Repo } from "../format/layout.ts";
import { encodeMetadata, openMetadata } from "../format/metadata.ts";
import { ObjectNotFoundError, PreconditionFailedError } from "../ports/object-store.ts";
import { namedError } from "../util/named-error.ts";

/** How long a lease lives without renewal. Restore tasks renew it every invocation (≤ 15 minutes). */
export const READ_LEASE_TTL_MS = 60 * 60_000;

const PinSchema = z.object({
  generation: z.number().int().positive(),
  /** The manifest HEAD or the commit record pinned when the lease was taken. */
  manifest: PointerSchema,
});
export type GenerationPin = z.infer<typeof PinSchema>;

const ReadLeaseSchema = z.object({
  group: z.string(),
  restoreId: z.string(),
  generations: z.array(PinSchema).min(1),
  acquiredAt: z.string(),
  expiresAt: z.string(),
});
export type ReadLease = z.infer<typeof ReadLeaseSchema>;

/** The restore's lease is gone or expired: a prune may have deleted what it reads. */
export class ReadLeaseLostError extends namedError("ReadLeaseLostError") {}

function leaseKey(repo: Repo, restoreId: string): string {
  return keys.readLease(repo, restoreId);
}

/** Where a committed generation's manifest is: HEAD's pointer, else its commit record's. */
export async function pinGeneration(repo: Repo, generation: number): Promise<GenerationPin | undefined> {
  const state = await readHead(repo);
  if (state?.head.commit && state.head.generation === generation) {
    return { generation, manifest: state.head.commit.manifest };
  }
  const record = await readCommitRecord(repo, generation);
  return record ? { generation, manifest: record.manifest } : undefined;
}

/** The manifest a pin names (the lease's, not whatever HEAD or a record says now). */
export function readPinnedGeneration(
  repo: Repo,
  pin: GenerationPin,
  restoreId: string,
): Promise<GenerationManifest> {
  return readPinnedManifest(repo, pin.manifest, pin.generation, leaseKey(repo, restoreId));
}

async function write(repo: Repo, lease: ReadLease, ifMatch?: string): Promise<void> {
  await repo.store.put(leaseKey(repo, lease.restoreId), encodeMetadata("cgmirror.read-lease", lease), {
    contentType: "application/json",
    ...(ifMatch ? { ifMatch } : {}),
  });
}

async function read(repo: Repo, restoreId: string): Promise<{ lease: ReadLease; etag: string } | undefined> {
  const key = leaseKey(repo, restoreId);
  try {
    const got = await repo.store.get(key);
    const lease = openMetadata(got.body, "cgmirror.read-lease", ReadLeaseSchema, key, got.versionId).value;
    return { lease, etag: got.etag };
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return undefined;
    throw error;
  }
}

/**
 * Takes (or, for a retried task, takes again) the lease on these generations, then checks that each is
 * still retained with the manifest it pinned. Only after this returns may the restore rely on its data.
 * @throws GenerationNotFoundError when one was forgotten before the lease was visible
 */
export async function takeReadLease(
  repo: Repo,
  options: { restoreId: string; generations: readonly number[]; now: number; ttlMs?: number },
): Promise<ReadLease> {
  const pins: GenerationPin[] = [];
  for (const n of [...new Set(options.generations)].sort((a, b) => a - b)) {
    const pin = await pinGeneration(repo, n);
    if (!pin) throw new GenerationNotFoundError(repo.group, n, await listGenerations(repo));
    pins.push(pin);
  }
  const lease: ReadLease = {
    group: repo.group,
    restoreId: options.restoreId,
    generations: pins,
    acquiredAt: new Date(options.now).toISOString(),
    expiresAt: new Date(options.now + (options.ttlMs ?? READ_LEASE_TTL_MS)).toISOString(),
  };
  await write(repo, lease);
  // The lease is visible: from now on a forget keeps these manifests and a prune their data. Each must
  // still be retained as pinned, else a prune that listed the leases before ours may have dropped it.
  for (const pin of pins) {
    const now = await pinGeneration(repo, pin.generation);
    if (!now || now.manifest.sha256 !== pin.manifest.sha256) {
      await releaseReadLease(repo, options.restoreId).catch(() => undefined);
      throw new GenerationNotFoundError(repo.group, pin.generation, await listGenerations(repo));
    }
  }
  return lease;
}

/**
 * Extends a live lease (a restore task calls it before its work). Two tasks renewing at once both
 * succeed (If-Match: the loser's lease was just renewed by the winner).
 * @throws ReadLeaseLostError when the lease is gone or has expired
 */
export async function renewReadLease(
  repo: Repo,
  restoreId: string,
  now: number,
  ttlMs = READ_LEASE_TTL_MS,
): Promise<ReadLease> {
  const got = await read(repo, restoreId);
  const key = leaseKey(repo, restoreId);
  if (!got) {
    throw new ReadLeaseLostError(
      `restore ${restoreId} has no read lease (${key} is gone): a prune may have deleted data it reads; restore again`,
    );
  }
  if (Date.parse(got.lease.expiresAt) <= now) {
    throw new ReadLeaseLostError(
      `the read lease of restore ${restoreId} expired at ${got.lease.expiresAt}: a prune may have deleted data it reads; restore again`,
    );
  }
  const renewed = { ...got.lease, expiresAt: new Date(now + ttlMs).toISOString() };
  try {
    await write(repo, renewed, got.etag);
  } catch (error) {
    // Renewed by another task meanwhile (or released by the workflow's end): nothing to do.
    if (!(error instanceof PreconditionFailedError) && !(error instanceof ObjectNotFoundError)) throw error;
  }
  return renewed;
}

/** Deletes the lease (every version): the restore ended. Idempotent. */
export async function releaseReadLease(repo: Repo, restoreId: string): Promise<void> {
  const key = leaseKey(repo, restoreId);
  const versions = [];
  for await (const v of repo.store.listVersions(key)) {
    if (v.key === key) versions.push({ key, versionId: v.versionId });
  }
  if (versions.length > 0) await repo.store.deleteVersions(versions);
}

/**
 * Every lease that has not expired at `now`. A lease that cannot be read is an ambiguous state:
 * CorruptObjectError (forget and prune then delete nothing).
 */
export async function liveReadLeases(repo: Repo, now: number): Promise<ReadLease[]> {
  const out: ReadLease[] = [];
  const prefix = keys.readLeasesPrefix(repo);
  for await (const o of repo.store.list(prefix)) {
    if (!o.key.endsWith(".json")) continue;
    let got: Awaited<ReturnType<typeof read>>;
    try {
      got = await read(repo, o.key.slice(prefix.length, -".json".length));
    } catch (error) {
      if (error instanceof CorruptObjectError) throw error;
      throw new CorruptObjectError(
        o.key,
        undefined,
        `a read lease that cannot be read: ${(error as Error).message}`,
      );
    }
    if (got && Date.parse(got.lease.expiresAt) > now) out.push(got.lease);
  }
  return out;
}

/** The generations live leases pin, each with the leases that pin it. */
export function leasedPins(
  leases: readonly ReadLease[],
): Map<number, { pin: GenerationPin; restoreIds: string[] }> {
  const out = new Map<number, { pin: GenerationPin; restoreIds: string[] }>();
  for (const l of leases) {
    for (const pin of l.generations) {
      const e = out.get(pin.generation);
      if (e) e.restoreIds.push(l.restoreId);
      else out.set(pin.generation, { pin, restoreIds: [l.restoreId] });
    }
  }
  return out;
}

/**
 * Runs `fn` under a read lease on these generations (a restore to files, which runs in one process):
 * taken and checked first, renewed every quarter of its lifetime while `fn` runs, released after it.
 * A renewal that fails is not fatal: every byte the restore reads is checked, so it can only fail, never
 * produce wrong bytes, if a prune reclaims what it reads after that.
 */
export async function withReadLease<T>(
  repo: Repo,
  options: {
    restoreId: string;
    generations: readonly number[];
    ttlMs?: number;
    now?: () => number;
    /**
     * Called when the lease cannot be written (e.g. a reader with read-only access): `fn` then runs
     * without one, as restores did before leases. Without it such a failure is thrown.
     */
    onUnleased?: (error: unknown) => void;
  },
  fn: () => Promise<T>,
): Promise<T> {
  const now = options.now ?? Date.now;
  const ttlMs = options.ttlMs ?? READ_LEASE_TTL_MS;
  try {
    await takeReadLease(repo, {
      restoreId: options.restoreId,
      generations: options.generations,
      now: now(),
      ttlMs,
    });
  } catch (error) {
    if (!options.onUnleased || error instanceof GenerationNotFoundError) throw error;
    options.onUnleased(error);
    return fn();
  }
  const timer = setInterval(() => {
    renewReadLease(repo, options.restoreId, now(), ttlMs).catch(() => undefined);
  }, ttlMs / 4);
  timer.unref?.();
  try {
    return await fn();
  } finally {
    clearInterval(timer);
    await releaseReadLease(repo, options.restoreId).catch(() => undefined);
  }
}
