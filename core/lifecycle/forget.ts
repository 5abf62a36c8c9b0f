/**
 * Forget (docs/format.md §6.1, §10.2): applies a retention policy to the committed generations and
 * removes the commit record and the manifest of every generation it does not keep (the manifest stays
 * while a running restore's read lease pins it, core/protocol/read-lease.ts). Readers reach a
 * generation only through HEAD or its commit record, so a forgotten generation is gone for restore,
 * verify and status at once; its data is reclaimed by prune (core/lifecycle/prune.ts). HEAD is never forgotten.
 */

import { InvalidArgumentError } from "../errors.ts";
import { listGenerations, readCommitRecord, readGeneration, readHead } from "../format/generation.ts";
import { keys, type Repo } from "../format/layout.ts";
import { ObjectLockedError, type ObjectVersionRef } from "../ports/object-store.ts";
import { assertFenced, type Lease } from "../protocol/commit.ts";
import { leasedPins, liveReadLeases } from "../protocol/read-lease.ts";
import { applyRetention, hasRules, type RetentionDecision, type RetentionPolicy } from "./retention.ts";

export interface ForgetPlan {
  /** HEAD's generation (always kept); undefined before the first commit. */
  readonly head: number | undefined;
  /** One decision per committed generation, newest first. */
  readonly decisions: readonly RetentionDecision[];
  /** Generations that go, ascending. */
  readonly forget: readonly number[];
  /** Generations that stay, ascending. */
  readonly keep: readonly number[];
}

/**
 * Which generations the policy keeps and why. Reads HEAD and every committed generation's manifest
 * (for its point in time); writes nothing.
 * @throws InvalidArgumentError when the policy has no rule (it would forget everything but HEAD)
 */
export async function planForget(repo: Repo, policy: RetentionPolicy): Promise<ForgetPlan> {
  if (!hasRules(policy)) {
    throw new InvalidArgumentError(
      "the retention policy has no rule (keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, keepYearly, keepWithin); refusing to forget every generation but HEAD",
    );
  }
  const head = (await readHead(repo))?.head;
  const generations = await listGenerations(repo);
  const candidates = [];
  for (const n of generations) {
    const m = await readGeneration(repo, n);
    candidates.push({ generation: n, pointInTime: m.pointInTime });
  }
  const headGeneration = head && head.generation > 0 ? head.generation : undefined;
  const decisions = applyRetention(candidates, policy, headGeneration);
  return {
    head: headGeneration,
    decisions,
    forget: decisions
      .filter((d) => !d.keep)
      .map((d) => d.generation)
      .sort((a, b) => a - b),
    keep: decisions
      .filter((d) => d.keep)
      .map((d) => d.generation)
      .sort((a, b) => a - b),
  };
}

export interface ForgetResult {
  readonly forgotten: readonly number[];
  /** Object versions deleted (commit records and manifests). */
  readonly objectsDeleted: number;
  /**
   * Generations the plan forgets whose commit record is still under an Object Lock retention: they
   * stay committed (and retained by prune) until a later forget, after the retention has passed.
   */
  readonly locked: readonly number[];
  /**
   * Forgotten generations a running restore reads (a live read lease pins them): their manifest is
   * kept, and prune keeps their data, until the lease ends (docs/format.md §10.2).
   */
  readonly leased: readonly number[];
}

/** Deletes the versions; returns how many the store kept under an Object Lock retention. */
async function deleteUnlessLocked(repo: Repo, refs: readonly ObjectVersionRef[]): Promise<number> {
  try {
    await repo.store.deleteVersions(refs);
    return 0;
  } catch (error) {
    if (error instanceof ObjectLockedError) return error.refs.length;
    throw error;
  }
}

async function versionsOf(repo: Repo, key: string): Promise<ObjectVersionRef[]> {
  const out: ObjectVersionRef[] = [];
  for await (const v of repo.store.listVersions(key)) {
    if (v.key === key) out.push({ key: v.key, versionId: v.versionId });
  }
  return out;
}

/**
 * Deletes the commit record (every version) and then the manifest (unless a running restore's read
 * lease pins it) of each generation the plan forgets, oldest first, while this lease holds the group (checked before every delete). Idempotent:
 * a generation already forgotten is skipped. HEAD's generation is refused even if a plan names it.
 * @throws LockLostError when another run took the group
 */
export async function applyForget(
  repo: Repo,
  lease: Lease,
  plan: ForgetPlan,
  options: { readonly now?: number } = {},
): Promise<ForgetResult> {
  const forgotten: number[] = [];
  const locked: number[] = [];
  const leasedKept: number[] = [];
  let objectsDeleted = 0;
  for (const n of [...plan.forget].sort((a, b) => a - b)) {
    const head = (await assertFenced(repo, lease)).head;
    if (n >= head.generation) {
      throw new InvalidArgumentError(
        `generation ${n} is HEAD's (${head.generation}) or newer: never forgotten`,
      );
    }
    const record = await readCommitRecord(repo, n);
    const recordVersions = await versionsOf(repo, keys.commit(repo, n));
    // The record first: from then on no reader reaches the manifest; a crash before the manifest's
    // delete leaves an unreferenced manifest for prune.
    const keptRecords = await deleteUnlessLocked(repo, recordVersions);
    objectsDeleted += recordVersions.length - keptRecords;
    if (keptRecords > 0) {
      // Still committed: its manifest stays too.
      locked.push(n);
      continue;
    }
    if (record) {
      // Listed after the record is gone (docs/format.md §10.2): a restore that found the record took
      // its lease before, so it is seen here, and its manifest stays for it (prune deletes it later).
      const leased = leasedPins(await liveReadLeases(repo, options.now ?? Date.now())).get(n);
      if (leased && leased.pin.manifest.sha256 === record.manifest.sha256) {
        leasedKept.push(n);
        forgotten.push(n);
        continue;
      }
      const manifestVersions = await versionsOf(repo, keys.manifest(repo, n, record.fencing));
      await assertFenced(repo, lease);
      // A locked manifest is unreferenced from now on: prune deletes it once its retention passes.
      objectsDeleted += manifestVersions.length - (await deleteUnlessLocked(repo, manifestVersions));
    }
    if (record || recordVersions.length > 0) forgotten.push(n);
  }
  return { forgotten, objectsDeleted, locked, leased: leasedKept };
}
