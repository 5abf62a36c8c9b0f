import { CorruptObjectError, InvalidArgumentError } from "../errors.ts";
import type { ObjectStore } from "../ports/object-store.ts";

/** A repository: one consistency group's objects under `prefix` in a versioned bucket. */
export interface Repo {
  readonly store: ObjectStore;
  /** Key prefix without a trailing slash, e.g. `groups/orders-db`; `""` for the bucket root. */
  readonly prefix: string;
  /** The consistency group's name (names the lock object). */
  readonly group: string;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export function assertName(kind: string, value: string): void {
  if (!NAME.test(value)) {
    throw new InvalidArgumentError(
      `expected a ${kind} of 1-128 characters [A-Za-z0-9._-] starting with a letter or digit, got ${JSON.stringify(value)}`,
    );
  }
}

export function assertRunId(value: string): void {
  if (!RUN_ID.test(value)) {
    throw new InvalidArgumentError(
      `expected a run id of 1-128 characters [A-Za-z0-9._:-], got ${JSON.stringify(value)}`,
    );
  }
}

export function createRepo(options: { store: ObjectStore; prefix: string; group: string }): Repo {
  assertName("group name", options.group);
  const prefix = options.prefix.replace(/\/+$/, "");
  return { store: options.store, prefix, group: options.group };
}

function join(repo: Repo, rest: string): string {
  return repo.prefix === "" ? rest : `${repo.prefix}/${rest}`;
}

/** Generation numbers are zero-padded to 10 digits so that keys sort in generation order. */
export function generationName(n: number): string {
  if (!Number.isSafeInteger(n) || n < 1 || n > 9_999_999_999) {
    throw new InvalidArgumentError(`expected a generation number 1..9999999999, got ${n}`);
  }
  return String(n).padStart(10, "0");
}

/** Fencing numbers in keys: zero-padded to 10 digits. */
function fencingName(fencing: number): string {
  if (!Number.isSafeInteger(fencing) || fencing < 1 || fencing > 9_999_999_999) {
    throw new InvalidArgumentError(`expected a fencing number 1..9999999999, got ${fencing}`);
  }
  return String(fencing).padStart(10, "0");
}

/** A relative key as pointers carry it: one of the repository's folders, no "..", no "//". */
const RELATIVE_KEY = /^(generations|commits|volumes|segments|runs)\/(?:[A-Za-z0-9._:-]+\/)*[A-Za-z0-9._:-]+$/;

/**
 * Object keys of the repository layout (docs/format.md, "Key layout"). Every function returns the
 * full object key (with the repository prefix); pointers inside objects carry keys relative to the
 * prefix (`keys.relative` / `keys.resolve`), so a repository copied to another prefix stays readable.
 */
export const keys = {
  head: (repo: Repo) => join(repo, "HEAD"),
  lock: (repo: Repo) => join(repo, `locks/${repo.group}`),
  /** Committed-generation records (one per committed generation, written after HEAD moved). */
  commitsPrefix: (repo: Repo) => join(repo, "commits/"),
  commit: (repo: Repo, n: number) => join(repo, `commits/${generationName(n)}.json`),
  generationsPrefix: (repo: Repo) => join(repo, "generations/"),
  /** A generation manifest: unique per generation and per run (its fencing number), written once. */
  manifest: (repo: Repo, n: number, fencing: number) =>
    join(repo, `generations/${generationName(n)}-${fencingName(fencing)}.json`),
  volumesPrefix: (repo: Repo) => join(repo, "volumes/"),
  volumeIndex: (repo: Repo, volumeId: string) => join(repo, `volumes/${volumeId}/index`),
  volumeRun: (repo: Repo, volumeId: string, name: string) =>
    join(repo, `volumes/${volumeId}/runs/${name}.run`),
  segment: (repo: Repo, segmentId: string) =>
    join(repo, `segments/${segmentId.slice(0, 2)}/${segmentId}.seg`),
  runPrefix: (repo: Repo, runId: string) => join(repo, `runs/${runId}/`),
  /** The snapshot set of the next generation, kept while its snapshots may still be pending (adoptable). */
  snapshotSet: (repo: Repo) => join(repo, "pending/snapshot-set.json"),
  /** Read leases of running restores (docs/format.md §10.2): what forget and prune must keep. */
  readLeasesPrefix: (repo: Repo) => join(repo, "leases/"),
  readLease: (repo: Repo, restoreId: string) => join(repo, `leases/${restoreId}.json`),
  /** Run records (docs/format.md §2, §13): one per finished run, never read by restore or verify. */
  historyPrefix: (repo: Repo) => join(repo, "history/"),
  history: (repo: Repo, fencing: number, runId: string) =>
    join(repo, `history/${fencingName(fencing)}-${runId}.json`),
  /**
   * A shard's result run. `attempt` (a random id) keeps two deliveries of one shard from writing the
   * same key: the shard's summary names the attempt whose result it describes.
   */
  shardResult: (repo: Repo, runId: string, volumeId: string, shard: number, attempt?: string) =>
    join(
      repo,
      `runs/${runId}/shards/${volumeId}/${String(shard).padStart(6, "0")}${attempt ? `-${attempt}` : ""}.run`,
    ),
  /**
   * Transfer checkpoints of a run (docs/transfer.md, "Resumption"): one sealed JSON object per
   * invocation that stopped before its deadline, unique per attempt (`attempt` is a random id).
   */
  checkpointsPrefix: (repo: Repo, runId: string) => join(repo, `runs/${runId}/checkpoints/`),
  checkpoint: (
    repo: Repo,
    runId: string,
    volumeId: string,
    shard: number,
    sequence: number,
    attempt: string,
  ) =>
    join(
      repo,
      `runs/${runId}/checkpoints/${volumeId}/${String(shard).padStart(6, "0")}-${String(sequence).padStart(4, "0")}-${attempt}.json`,
    ),
  /** The partial result (index run) a checkpoint pins: the blocks its invocation transferred. */
  checkpointRun: (
    repo: Repo,
    runId: string,
    volumeId: string,
    shard: number,
    sequence: number,
    attempt: string,
  ) =>
    join(
      repo,
      `runs/${runId}/checkpoints/${volumeId}/${String(shard).padStart(6, "0")}-${String(sequence).padStart(4, "0")}-${attempt}.run`,
    ),
  /** The key relative to the repository prefix, as a pointer stores it. */
  relative(repo: Repo, key: string): string {
    const base = repo.prefix === "" ? "" : `${repo.prefix}/`;
    if (!key.startsWith(base) || !RELATIVE_KEY.test(key.slice(base.length))) {
      throw new InvalidArgumentError(
        `key ${JSON.stringify(key)} is not an object of repository ${repo.prefix}`,
      );
    }
    return key.slice(base.length);
  },
  /** The full key of a pointer's relative key. @throws CorruptObjectError when it leaves the repository */
  resolve(repo: Repo, relative: string, from: string): string {
    if (!RELATIVE_KEY.test(relative) || relative.split("/").includes("..")) {
      throw new CorruptObjectError(
        from,
        undefined,
        `it points at ${JSON.stringify(relative)}, not a key inside the repository`,
      );
    }
    return join(repo, relative);
  },
};

/** Parses `generations/<n>-<fencing>.json` (relative to `generations/`). */
export function parseManifestName(name: string): { generation: number; fencing: number } | undefined {
  const m = /^(\d{10})-(\d{10})\.json$/.exec(name);
  return m ? { generation: Number(m[1]), fencing: Number(m[2]) } : undefined;
}
