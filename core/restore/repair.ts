/**
 * Repair of an ambiguous repository (docs/format.md §9.3): when HEAD is missing, delete-marked,
 * unreadable or older than the newest commit record, every run stops without changing anything. This
 * module explains that state and, when asked, points HEAD at the newest committed generation that
 * verifies. It never deletes data: commit records of newer generations that do not verify are copied
 * to `quarantine/` before their record is removed, so the choice can be undone by hand.
 */

import { RepositoryStateError } from "../errors.ts";
import {
  type CommitInfo,
  decodeHead,
  encodeHead,
  type GenerationManifest,
  listCommitRecords,
  readCommitRecord,
  readPinnedManifest,
  sealCommitRecord,
} from "../format/generation.ts";
import { generationName, keys, type Repo } from "../format/layout.ts";
import { ObjectNotFoundError } from "../ports/object-store.ts";
import { inspectRepository, type Lease } from "../protocol/commit.ts";
import { verifyGeneration } from "./verify.ts";

export interface RepairCandidate {
  readonly generation: number;
  readonly commit: CommitInfo;
  /** Where the candidate was found. */
  readonly sources: readonly ("HEAD" | "commit record" | "HEAD history")[];
  /** Problems verify found (empty: it verifies), or why its manifest could not be read. */
  readonly problems: readonly string[];
}

export interface RepairPlan {
  /** `ok`: nothing to repair. */
  readonly state: "ok" | "needs-repair";
  /** What is wrong (RepositoryStateError's message). */
  readonly problem?: string;
  /** HEAD's generation now, when HEAD can be read. */
  readonly headGeneration: number | null;
  /** Newest first. */
  readonly candidates: readonly RepairCandidate[];
  /** The newest candidate that verifies: HEAD would name it. */
  readonly chosen?: RepairCandidate;
  /** Newer commit records that do not verify: they would be moved to `quarantine/`. */
  readonly quarantine: readonly number[];
}

async function collectCandidates(
  repo: Repo,
): Promise<
  Map<string, { generation: number; commit: CommitInfo; sources: Set<RepairCandidate["sources"][number]> }>
> {
  const found = new Map<
    string,
    { generation: number; commit: CommitInfo; sources: Set<RepairCandidate["sources"][number]> }
  >();
  const add = (generation: number, commit: CommitInfo, source: RepairCandidate["sources"][number]) => {
    const id = `${generation}:${commit.manifest.sha256}`;
    const entry = found.get(id) ?? { generation, commit, sources: new Set() };
    entry.sources.add(source);
    found.set(id, entry);
  };
  for (const n of await listCommitRecords(repo)) {
    try {
      const r = await readCommitRecord(repo, n);
      if (r) add(n, r, "commit record");
    } catch {
      // an unreadable record is no candidate
    }
  }
  const key = keys.head(repo);
  for await (const v of repo.store.listVersions(key)) {
    if (v.key !== key || v.isDeleteMarker) continue;
    try {
      const got = await repo.store.get(key, { versionId: v.versionId });
      const head = decodeHead(repo, got.body, got.versionId);
      if (head.commit) add(head.generation, head.commit, v.isLatest ? "HEAD" : "HEAD history");
    } catch {
      // an unreadable version is no candidate
    }
  }
  return found;
}

/**
 * Inspects the repository and, when it needs repair, lists the committed generations it can find
 * (commit records and HEAD's version history), verifies them newest first (structure; `readData` of
 * the data too) and picks the newest that verifies.
 */
export async function planRepair(
  repo: Repo,
  options: { readonly readData?: number } = {},
): Promise<RepairPlan> {
  let headGeneration: number | null = null;
  try {
    const state = await inspectRepository(repo);
    headGeneration = state.kind === "ok" ? state.head.head.generation : 0;
    return { state: "ok", headGeneration, candidates: [], quarantine: [] };
  } catch (error) {
    if (!(error instanceof RepositoryStateError)) throw error;
    const candidates: RepairCandidate[] = [];
    const found = [...(await collectCandidates(repo)).values()].sort((a, b) => b.generation - a.generation);
    let chosen: RepairCandidate | undefined;
    for (const c of found) {
      let problems: string[];
      let manifest: GenerationManifest | undefined;
      try {
        manifest = await readPinnedManifest(
          repo,
          c.commit.manifest,
          c.generation,
          keys.commit(repo, c.generation),
        );
        const report = await verifyGeneration(repo, { manifest, readData: options.readData ?? 0 });
        problems = report.problems.map((p) => `${p.kind} ${p.key}: ${p.message}`);
      } catch (e) {
        problems = [(e as Error).message];
      }
      const candidate = { generation: c.generation, commit: c.commit, sources: [...c.sources], problems };
      candidates.push(candidate);
      if (!chosen && problems.length === 0) chosen = candidate;
    }
    const records = await listCommitRecords(repo);
    const quarantine = chosen ? records.filter((n) => n > chosen.generation) : [];
    try {
      const got = await repo.store.get(keys.head(repo));
      headGeneration = decodeHead(repo, got.body).generation;
    } catch {
      headGeneration = null;
    }
    return {
      state: "needs-repair",
      problem: error.message,
      headGeneration,
      candidates,
      ...(chosen ? { chosen } : {}),
      quarantine,
    };
  }
}

/**
 * Applies a plan: moves the commit records it quarantines to `quarantine/commits/`, writes the chosen
 * generation's record if missing, and writes HEAD naming it with `lease`'s fence. The caller holds
 * the group lock (`lease`), so no run acts meanwhile.
 */
export async function applyRepair(
  repo: Repo,
  plan: RepairPlan,
  lease: Lease,
  now = new Date(),
): Promise<void> {
  const chosen = plan.chosen;
  if (plan.state !== "needs-repair" || !chosen) return;
  for (const n of plan.quarantine) {
    const key = keys.commit(repo, n);
    try {
      const got = await repo.store.get(key);
      const aside = keys.resolve(repo, `commits/quarantine/${generationName(n)}-${now.getTime()}.json`, key);
      await repo.store.put(aside, got.body, { contentType: "application/json" });
      const versions = [];
      for await (const v of repo.store.listVersions(key))
        if (v.key === key) versions.push({ key, versionId: v.versionId });
      await repo.store.deleteVersions(versions);
    } catch (error) {
      if (!(error instanceof ObjectNotFoundError)) throw error;
    }
  }
  const recordKey = keys.commit(repo, chosen.generation);
  if (!(await readCommitRecord(repo, chosen.generation).catch(() => undefined))) {
    await repo.store.put(
      recordKey,
      sealCommitRecord({ group: repo.group, generation: chosen.generation, ...chosen.commit }).bytes,
      { contentType: "application/json" },
    );
  }
  const body = encodeHead({
    group: repo.group,
    generation: chosen.generation,
    commit: chosen.commit,
    fence: { fencing: lease.fencing, runId: lease.runId, at: now.toISOString() },
  });
  await repo.store.put(keys.head(repo), body, { contentType: "application/json" });
}
