/**
 * Prune: garbage collection of a repository (docs/format.md §10.2). Runs while the caller holds the
 * group (core/lifecycle/maintenance.ts: lock + fenced HEAD) and deletes only what no retained generation
 * reaches:
 *
 * 1. **Mark.** Every retained generation (HEAD and every commit record) → manifest → index root
 *    version → block runs, dedup runs, Bloom filters. Every block run is read once, page by page:
 *    per segment the live bytes (refs deduplicated through a Bloom filter over (segment, offset)) —
 *    a segment some retained ref names is live, exactly. Dedup runs are *not* read: a segment only
 *    dedup runs name is garbage, and is **retired** (core/format/gc-state.ts) before it is deleted, so no
 *    backup dedups against it.
 * 2. **Sweep.** Listing `segments/`, `volumes/`, `generations/` and `runs/` (every version) finds
 *    what is not live: unreferenced segments (failed transfer attempts, forgotten generations), index
 *    runs and root versions no retained generation pins, manifests nothing commits, `runs/<id>/` of
 *    ended runs. A live segment whose garbage share is at least the threshold is **repacked**: its
 *    live blocks are copied (checked by SHA-256) into a new segment and a relocation record maps
 *    them; index runs keep naming the old segment.
 *
 * Safety against a concurrent or later backup without trusting clocks: everything deleted was listed
 * after this run fenced HEAD; a backup that can still commit fenced after us, so (a) it wrote nothing
 * we listed and (b) we check the fence before every delete request — if it fenced, we stop. The
 * retired set is written (If-Match) before any segment is deleted, so a backup that fences after
 * our check reads it and cannot dedup into a deleted segment. Every step is idempotent and derived
 * from the bucket's state: a crash anywhere leaves a repository a later prune finishes.
 */

import { CorruptObjectError, InvalidArgumentError, RepositoryStateError } from "../errors.ts";
import { BloomFilter } from "../format/bloom.ts";
import { concatBytes, randomId, sha256, toHex } from "../format/bytes.ts";
import { Codec, type CodecId } from "../format/codec.ts";
import {
  type RelocatedBlock,
  type Relocation,
  RetiredSegments,
  readRelocation,
  readRetiredSegments,
  writeRelocation,
  writeRetiredSegments,
} from "../format/gc-state.ts";
import {
  type GenerationManifest,
  type Head,
  listGenerations,
  readGeneration,
  readHead,
} from "../format/generation.ts";
import { keys, parseManifestName, type Repo } from "../format/layout.ts";
import {
  encodeSegmentTail,
  openStoredBlock,
  readSegmentFooter,
  type SegmentFooterEntry,
} from "../format/segment.ts";
import {
  openRunRef,
  type RunRef,
  readVolumeIndexRoot,
  runKeysOf,
  type VolumeIndexRoot,
} from "../format/volume-index.ts";
import {
  ObjectLockedError,
  ObjectNotFoundError,
  type ObjectVersionRef,
  PreconditionFailedError,
} from "../ports/object-store.ts";
import { assertFenced, type Lease } from "../protocol/commit.ts";
import { leasedPins, liveReadLeases, readPinnedGeneration } from "../protocol/read-lease.ts";
import { namedError } from "../util/named-error.ts";
import { TaskPool } from "../util/pool.ts";

export interface PruneOptions {
  /** The lease this run holds (lock + fenced HEAD). Only a dry run may go without (it writes nothing). */
  readonly lease?: Lease | undefined;
  /** Report what would be deleted and repacked; write and delete nothing. @default false */
  readonly dryRun?: boolean;
  /** Repack a live segment when at least this share (0–1] of its bytes is garbage. @default 0.5 */
  readonly repackThreshold?: number;
  /** Live bytes one prune copies at most. @default 16 GiB */
  readonly maxRepackBytes?: number;
  /** Size at which a repacked segment is sealed. @default 32 MiB */
  readonly segmentBytes?: number;
  /** Requests in flight when reading runs and segments. @default 8 */
  readonly concurrency?: number;
  /** True when the caller must stop (e.g. the Lambda's time runs out); prune stops early, `done: false`. */
  readonly shouldStop?: () => boolean;
  /** Progress lines. */
  readonly log?: (message: string, fields?: Record<string, unknown>) => void;
  /**
   * The group locks committed objects (`target.objectLock`): nothing is repacked (a repacked copy
   * would carry no lock, and its locked source could not be deleted anyway). Versions the store keeps
   * because their retention has not passed are reported in `keptLocked` and tried again next time.
   * @default false
   */
  readonly objectLock?: boolean;
  /** The clock read leases expire by (ms since the epoch). @default Date.now */
  readonly now?: () => number;
}

export interface ObjectTally {
  count: number;
  bytes: number;
}

export interface PruneReport {
  readonly dryRun: boolean;
  readonly retainedGenerations: readonly number[];
  /** Forgotten generations kept (with everything they reach) for running restores' read leases. */
  readonly leasedGenerations: readonly LeasedGeneration[];
  readonly head: number;
  /** Distinct index runs (block) read to mark, and their bytes. */
  readonly indexRunsRead: number;
  readonly indexBytesRead: number;
  readonly segments: {
    readonly total: number;
    readonly live: number;
    readonly liveBytes: number;
    readonly storedBytes: number;
  };
  /** What was (or, in a dry run, would be) deleted, by kind. */
  readonly deleted: Readonly<Record<PruneKind, ObjectTally>>;
  readonly repack: {
    readonly candidates: number;
    readonly segments: number;
    readonly liveBytesCopied: number;
    readonly newSegments: number;
    /** Candidates left for a later prune (repack budget or time). */
    readonly deferred: number;
  };
  readonly retired: { readonly before: number; readonly after: number };
  /** Root versions that could not be read (left alone, never guessed at). */
  readonly unreadable: readonly {
    readonly key: string;
    readonly versionId: string;
    readonly error: string;
  }[];
  readonly objectsDeleted: number;
  readonly bytesReclaimed: number;
  /** Garbage versions kept because an Object Lock retention still protects them (deleted by a later prune). */
  readonly keptLocked: ObjectTally;
  /** False when the run stopped early (shouldStop) or deferred repacks: run prune again. */
  readonly done: boolean;
}

/** A forgotten generation prune keeps because running restores read it. */
export interface LeasedGeneration {
  readonly generation: number;
  readonly restoreIds: readonly string[];
}

export type PruneKind = "segments" | "relocations" | "indexRuns" | "rootVersions" | "manifests" | "runFiles";

/** A prune refuses to delete anything when a retained generation references a missing segment. */
export class PruneRefusedError extends namedError("PruneRefusedError") {}

const SEGMENTS = /^([0-9a-f]{2})\/([0-9a-f]{32})\.(seg|moved)$/;
const DEDUP_RUN_GENERATION = /\/runs\/(\d{10})-dedup[^/]*\.run(?:\.bloom)?$/;

/** Per-segment state during mark, indexed by an interned number. */
class SegmentTable {
  readonly ids: string[] = [];
  readonly #index = new Map<string, number>();
  live: Float64Array = new Float64Array(1024);
  reached: Uint8Array = new Uint8Array(1024);

  intern(id: string): number {
    let i = this.#index.get(id);
    if (i === undefined) {
      i = this.ids.length;
      this.ids.push(id);
      this.#index.set(id, i);
      if (i >= this.live.length) {
        const live = new Float64Array(this.live.length * 2);
        live.set(this.live);
        this.live = live;
        const reached = new Uint8Array(this.reached.length * 2);
        reached.set(this.reached);
        this.reached = reached;
      }
    }
    return i;
  }

  find(id: string): number | undefined {
    return this.#index.get(id);
  }
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Live (segment, offset) pairs: no false negatives, so "not in it" means garbage for sure. */
class LiveRefs {
  readonly #bloom: BloomFilter;
  readonly #key = new Uint8Array(8);
  readonly #dv = new DataView(this.#key.buffer);

  constructor(entries: number) {
    this.#bloom = BloomFilter.forEntries(Math.max(1024, entries));
  }

  #set(segment: number, offset: number): Uint8Array {
    this.#dv.setUint32(0, fmix32(Math.imul(segment, 0x9e3779b1) ^ offset), true);
    this.#dv.setUint32(4, fmix32(Math.imul(offset, 0x27d4eb2f) ^ segment ^ 0x165667b1), true);
    return this.#key;
  }

  /** Adds; returns false when it may have been there already. */
  add(segment: number, offset: number): boolean {
    const k = this.#set(segment, offset);
    if (this.#bloom.mayContain(k)) return false;
    this.#bloom.add(k);
    return true;
  }

  mayContain(segment: number, offset: number): boolean {
    return this.#bloom.mayContain(this.#set(segment, offset));
  }
}

interface Versions {
  readonly key: string;
  readonly versions: ObjectVersionRef[];
  /** Per version: its size (0 for a delete marker) and whether it is a delete marker. */
  readonly sizes: number[];
  readonly markers: boolean[];
  /** Bytes of every version that is not a delete marker. */
  bytes: number;
  /** Size of the current version (0 when it is a delete marker). */
  current: number;
}

async function listAllVersions(repo: Repo, prefix: string): Promise<Map<string, Versions>> {
  const out = new Map<string, Versions>();
  for await (const v of repo.store.listVersions(prefix)) {
    let e = out.get(v.key);
    if (!e) {
      e = { key: v.key, versions: [], sizes: [], markers: [], bytes: 0, current: 0 };
      out.set(v.key, e);
    }
    e.versions.push({ key: v.key, versionId: v.versionId });
    e.sizes.push(v.isDeleteMarker ? 0 : v.size);
    e.markers.push(v.isDeleteMarker);
    if (!v.isDeleteMarker) {
      e.bytes += v.size;
      if (v.isLatest) e.current = v.size;
    }
  }
  return out;
}

/** Repacked blocks waiting to be sealed into a new segment. */
class SegmentBuilder {
  readonly #repo: Repo;
  readonly #target: number;
  #chunks: Uint8Array[] = [];
  #entries: SegmentFooterEntry[] = [];
  #size = 0;
  #id = randomId();
  written = 0;

  constructor(repo: Repo, target: number) {
    this.#repo = repo;
    this.#target = target;
  }

  get full(): boolean {
    return this.#size >= this.#target;
  }

  get empty(): boolean {
    return this.#entries.length === 0;
  }

  /** Appends stored bytes; returns where they will be. */
  add(stored: Uint8Array, codec: CodecId, hash: Uint8Array): { segment: string; at: number } {
    const at = this.#size;
    this.#chunks.push(stored);
    this.#entries.push({ sha256: hash, offset: at, length: stored.byteLength, codec });
    this.#size += stored.byteLength;
    return { segment: this.#id, at };
  }

  /** Uploads the segment (one PUT, SHA-256 checked by the store). */
  async seal(): Promise<string> {
    const id = this.#id;
    const body = concatBytes([...this.#chunks, encodeSegmentTail(id, this.#size, this.#entries)]);
    await this.#repo.store.put(keys.segment(this.#repo, id), body, {
      checksumSha256: sha256(body),
      metadata: { "cgmirror-kind": "segment", "cgmirror-repacked": "true" },
    });
    this.written++;
    this.#chunks = [];
    this.#entries = [];
    this.#size = 0;
    this.#id = randomId();
    return id;
  }
}

const emptyTally = (): Record<PruneKind, ObjectTally> => ({
  segments: { count: 0, bytes: 0 },
  relocations: { count: 0, bytes: 0 },
  indexRuns: { count: 0, bytes: 0 },
  rootVersions: { count: 0, bytes: 0 },
  manifests: { count: 0, bytes: 0 },
  runFiles: { count: 0, bytes: 0 },
});

/** Settings of one prune and the garbage it has found so far, passed from stage to stage. */
interface PruneRun {
  readonly repo: Repo;
  readonly dryRun: boolean;
  /** The lease held; a dry run without one gets a stand-in that treats every run as older. */
  readonly lease: Lease;
  /** The caller holds the group (options.lease was given): HEAD is read through the fence check. */
  readonly held: boolean;
  readonly threshold: number;
  readonly maxRepack: number;
  readonly concurrency: number;
  readonly segmentBytes: number;
  readonly log: (message: string, fields?: Record<string, unknown>) => void;
  readonly stop: () => boolean;
  readonly now: () => number;
  /** Live read leases found by mark: while there are any, nothing live is repacked or deleted. */
  readonly readers: { count: number };
  /** Garbage by key, in the order found: the sweep deletes kind by kind, each kind in this order. */
  readonly doomed: Map<string, { kind: PruneKind; versions: Versions }>;
}

interface IndexRootState {
  readonly volumeId: string;
  readonly root: VolumeIndexRoot;
  readonly versionId: string | undefined;
}

/** HEAD, the retained generations, the manifests they pin, the retired set and the index roots they name. */
interface Retained {
  readonly head: Head;
  readonly generations: number[];
  /** Generations only running restores' read leases keep (forgotten, not yet released). */
  readonly leased: readonly LeasedGeneration[];
  readonly pinnedManifests: ReadonlySet<string>;
  readonly retiredState: { readonly retired: RetiredSegments; readonly etag: string | undefined };
  readonly roots: ReadonlyMap<string, IndexRootState>;
}

/** What the retained index roots name. */
interface IndexRefs {
  /** Root versions (`key\0versionId`) some retained generation pins. */
  readonly pinnedVersions: ReadonlySet<string>;
  /** Runs and Bloom filters under volumes/ that stay (the volumes sweep adds those of newer roots). */
  readonly liveObjects: Set<string>;
  readonly blockRuns: ReadonlyMap<string, { ref: RunRef; from: string }>;
  /** Oldest generation that wrote a dedup run some retained root names (for the retired set). */
  readonly oldestDedupRun: number;
}

/** Per segment its live bytes, and the live (segment, offset) refs. */
interface Marked {
  readonly table: SegmentTable;
  readonly liveRefs: LiveRefs;
  readonly indexBytesRead: number;
}

/** The segments/ prefix: physical segments, relocation records and what the records keep live. */
interface Segments {
  readonly prefix: string;
  readonly physical: ReadonlyMap<string, Versions>;
  /** Relocated segments: their live blocks live on in the record's targets. */
  readonly moved: Map<string, { record: Relocation; etag: string }>;
  /** Per relocation target: the records (and their live blocks) that point into it. */
  readonly into: ReadonlyMap<string, Array<{ from: string; block: RelocatedBlock }>>;
}

interface RepackCandidate {
  readonly id: string;
  readonly garbage: number;
  readonly live: number;
}

interface SegmentAccount {
  readonly liveSegments: number;
  readonly liveBytes: number;
  readonly storedBytes: number;
  /** Live segments with at least the threshold share of garbage, most garbage first. */
  readonly candidates: readonly RepackCandidate[];
}

type Unreadable = { key: string; versionId: string; error: string };

interface RepackPlan {
  readonly chosen: readonly RepackCandidate[];
  readonly deferred: number;
  /** The retired set after this prune. */
  readonly retiredNext: Map<string, number>;
}

/** Everything mark and plan found; retire, repack, sweep and the report read it. */
interface Found {
  readonly retained: Retained;
  readonly refs: IndexRefs;
  readonly marked: Marked;
  readonly segments: Segments;
  readonly account: SegmentAccount;
  readonly unreadable: readonly Unreadable[];
  readonly plan: RepackPlan;
}

/** What was deleted and what Object Lock kept. */
interface Tally {
  readonly deleted: Record<PruneKind, ObjectTally>;
  readonly keptLocked: ObjectTally;
  /** Size per version doomed before the repack (`key\0versionId`), to tally what Object Lock kept. */
  readonly sizeOf: ReadonlyMap<string, number>;
}

interface Repacked {
  segments: number;
  copied: number;
  newSegments: number;
}

/** Garbage collection. The caller holds the group (`withGroupHeld`). */
export async function pruneRepository(repo: Repo, options: PruneOptions): Promise<PruneReport> {
  const run = startPrune(repo, options);
  const found = await findGarbage(run);
  const tally = startTally(run);
  if (run.dryRun) return dryRunReport(run, found, tally);
  await retire(run, found);
  const repacked = await repack(run, found);
  const swept = await sweep(run, tally);
  run.log("pruned", { batches: swept.batches, repacked: repacked.segments });
  const done = !swept.stopped && found.plan.deferred === 0 && repacked.segments === found.plan.chosen.length;
  return buildReport(run, found, tally, done, repacked);
}

function startPrune(repo: Repo, options: PruneOptions): PruneRun {
  const dryRun = options.dryRun ?? false;
  if (!options.lease && !dryRun) {
    throw new InvalidArgumentError(
      "prune needs the group held (a lease from withGroupHeld) unless it is a dry run",
    );
  }
  return {
    repo,
    dryRun,
    // A dry run without a lease reads only; it treats every run as older than itself.
    lease: options.lease ?? { runId: "dry-run", fencing: Number.MAX_SAFE_INTEGER },
    held: Boolean(options.lease),
    // Under Object Lock nothing is repacked (a threshold above 1 selects no segment).
    threshold: options.objectLock ? 2 : (options.repackThreshold ?? 0.5),
    maxRepack: options.maxRepackBytes ?? 16 * 2 ** 30,
    concurrency: options.concurrency ?? 8,
    segmentBytes: options.segmentBytes ?? 32 * 2 ** 20,
    log: options.log ?? (() => {}),
    stop: options.shouldStop ?? (() => false),
    now: options.now ?? Date.now,
    readers: { count: 0 },
    doomed: new Map(),
  };
}

function doom(run: PruneRun, kind: PruneKind, v: Versions): void {
  run.doomed.set(v.key, { kind, versions: v });
}

/** Mark, then list what is there and doom what is not live, then plan the repack and the retired set. */
async function findGarbage(run: PruneRun): Promise<Found> {
  const retained = await loadRetained(run);
  const refs = collectIndexRefs(run.repo, retained.roots);
  const marked = await markLiveSegments(run, retained, refs);
  const segments = await listSegments(run, marked);
  refuseMissingSegments(run, marked, segments);
  const account = accountSegments(run, marked, segments);
  const unreadable = await sweepVolumes(run, refs);
  await sweepManifestsAndRunFiles(run, retained);
  const plan = planRepack(run, retained, refs, segments, account);
  return { retained, refs, marked, segments, account, unreadable, plan };
}

/** Mark, 1: HEAD (through the fence check when held), every retained manifest, the retired set, the roots. */
async function loadRetained(run: PruneRun): Promise<Retained> {
  const { repo, lease } = run;
  const head = run.held ? (await assertFenced(repo, lease)).head : (await readHead(repo))?.head;
  if (!head) throw new InvalidArgumentError(`group ${repo.group} has no HEAD: nothing to prune`);
  const generations = await listGenerations(repo);
  const manifests: GenerationManifest[] = [];
  for (const n of generations) manifests.push(await readGeneration(repo, n));
  // Listed after the retained generations (docs/format.md §10.2): a restore that found its generation
  // retained took its lease before, so a generation forgotten since is seen here and kept.
  const leased: LeasedGeneration[] = [];
  const leases = await liveReadLeases(repo, run.now());
  run.readers.count = leases.length;
  for (const [n, { pin, restoreIds }] of leasedPins(leases)) {
    if (manifests.some((m) => m.generation === n)) continue;
    let m: GenerationManifest;
    try {
      m = await readPinnedGeneration(repo, pin, restoreIds[0]!);
    } catch (error) {
      if (!(error instanceof ObjectNotFoundError) && !(error instanceof CorruptObjectError)) throw error;
      throw new PruneRefusedError(
        `restore ${restoreIds.join(", ")} reads generation ${n}, whose manifest cannot be read (${(error as Error).message}); prune deletes nothing while its read lease is live (see leases/)`,
        { cause: error },
      );
    }
    manifests.push(m);
    leased.push({ generation: n, restoreIds });
  }
  const pinnedManifests = new Set(manifests.map((m) => keys.manifest(repo, m.generation, m.fencing)));
  const retiredState = await readRetiredSegments(repo);

  const roots = new Map<string, IndexRootState>();
  for (const m of manifests) {
    for (const v of m.volumes) {
      const id = `${v.volumeId}\0${v.index.sha256}`;
      if (roots.has(id)) continue;
      const state = await readVolumeIndexRoot(repo, v.volumeId, v.index);
      roots.set(id, { volumeId: v.volumeId, root: state.root, versionId: state.versionId });
    }
  }
  return { head, generations, leased, pinnedManifests, retiredState, roots };
}

/** Mark, 2: the root versions, block runs, dedup runs and Bloom filters the retained roots name. */
function collectIndexRefs(repo: Repo, roots: Retained["roots"]): IndexRefs {
  const pinnedVersions = new Set<string>();
  const liveObjects = new Set<string>();
  const blockRuns = new Map<string, { ref: RunRef; from: string }>();
  let oldestDedupRun = Number.POSITIVE_INFINITY;
  for (const { volumeId, root, versionId } of roots.values()) {
    const from = keys.volumeIndex(repo, volumeId);
    if (versionId !== undefined) pinnedVersions.add(`${from}\0${versionId}`);
    for (const r of [...(root.base ? [root.base] : []), ...root.deltas]) {
      const key = keys.resolve(repo, r.key, from);
      liveObjects.add(key);
      if (!blockRuns.has(key)) blockRuns.set(key, { ref: r, from });
    }
    for (const d of root.dedup ? [...(root.dedup.base ? [root.dedup.base] : []), ...root.dedup.deltas] : []) {
      const key = keys.resolve(repo, d.key, from);
      liveObjects.add(key);
      liveObjects.add(keys.resolve(repo, d.bloomKey, from));
      const g = DEDUP_RUN_GENERATION.exec(key);
      oldestDedupRun = Math.min(oldestDedupRun, g ? Number(g[1]) : 0);
    }
  }
  return { pinnedVersions, liveObjects, blockRuns, oldestDedupRun };
}

/** Mark, 3: every block run read once, page by page: per segment the live bytes and the live refs. */
async function markLiveSegments(run: PruneRun, retained: Retained, refs: IndexRefs): Promise<Marked> {
  const { repo } = run;
  const table = new SegmentTable();
  const entries = [...refs.blockRuns.values()].reduce((s, r) => s + r.ref.entries, 0);
  const liveRefs = new LiveRefs(entries);
  let indexBytesRead = 0;
  const pool = new TaskPool(run.concurrency);
  for (const { ref, from } of refs.blockRuns.values()) {
    await pool.run(async () => {
      const reader = await openRunRef(repo, ref, from);
      indexBytesRead += ref.bytes;
      for (let p = 0; p < reader.pageCount; p++) {
        const page = await reader.readPage(p);
        const local = page.segTable.map((s) => table.intern(s));
        for (let i = 0; i < page.count; i++) {
          if (page.codecs[i] === Codec.zero) continue;
          const s = local[page.seg[i]!]!;
          table.reached[s] = 1;
          if (liveRefs.add(s, page.offsets[i]!)) table.live[s]! += page.lengths[i]!;
        }
      }
    });
  }
  await pool.drain();
  run.log("marked", {
    generations: retained.generations.length,
    runs: refs.blockRuns.size,
    segments: table.ids.length,
  });
  return { table, liveRefs, indexBytesRead };
}

/** Sweep, 1: list segments/; doom records of unreached segments; follow the others' live blocks. */
async function listSegments(run: PruneRun, marked: Marked): Promise<Segments> {
  const { repo } = run;
  const { table, liveRefs } = marked;
  const prefix = `${repo.prefix === "" ? "" : `${repo.prefix}/`}segments/`;
  const segmentObjects = await listAllVersions(repo, prefix);
  const physical = new Map<string, Versions>();
  const records = new Map<string, Versions>();
  for (const [key, v] of segmentObjects) {
    const m = SEGMENTS.exec(key.slice(prefix.length));
    if (!m || m[1] !== m[2]!.slice(0, 2)) continue; // not ours: left alone
    (m[3] === "seg" ? physical : records).set(m[2]!, v);
  }

  const moved = new Map<string, { record: Relocation; etag: string }>();
  const into = new Map<string, Array<{ from: string; block: RelocatedBlock }>>();
  for (const [id, v] of records) {
    const s = table.find(id);
    if (s === undefined || !table.reached[s]) {
      doom(run, "relocations", v);
      continue;
    }
    const got = await readRelocation(repo, id);
    if (!got) continue; // only delete markers: the reached segment is missing, checked below
    moved.set(id, got);
    for (const b of got.record.blocks) {
      if (!liveRefs.mayContain(s, b.offset)) continue;
      const t = table.intern(b.segment);
      table.reached[t] = 1;
      table.live[t]! += b.length;
      const list = into.get(b.segment) ?? [];
      list.push({ from: id, block: b });
      into.set(b.segment, list);
    }
  }
  return { prefix, physical, moved, into };
}

/** Nothing is deleted when a retained generation reaches a segment the bucket does not hold. */
function refuseMissingSegments(run: PruneRun, marked: Marked, segments: Segments): void {
  const { table } = marked;
  const missing: string[] = [];
  for (let s = 0; s < table.ids.length; s++) {
    if (!table.reached[s]) continue;
    const id = table.ids[s]!;
    if (segments.moved.has(id)) continue;
    if (!segments.physical.get(id)?.current) missing.push(id);
  }
  if (missing.length > 0) {
    throw new PruneRefusedError(
      `retained generations reference ${missing.length} segment(s) that are not in the bucket (e.g. ${keys.segment(run.repo, missing[0]!)}); ` +
        "prune deletes nothing on a damaged repository: run `cgmirror verify` and `cgmirror repair`, or forget the generations that use them",
    );
  }
}

/** Sweep, 2: doom unreached and relocated segments; count live bytes; pick the repack candidates. */
function accountSegments(run: PruneRun, marked: Marked, segments: Segments): SegmentAccount {
  const { table } = marked;
  const { threshold } = run;
  let liveSegments = 0;
  let liveBytes = 0;
  let storedBytes = 0;
  const candidates: RepackCandidate[] = [];
  for (const [id, v] of segments.physical) {
    storedBytes += v.current;
    const s = table.find(id);
    const reached = s !== undefined && table.reached[s] === 1;
    if (!reached || segments.moved.has(id)) {
      // A relocated segment a running restore may have located before the relocation stays while
      // restores hold read leases (docs/format.md §10.2); the next prune after them deletes it.
      if (reached && run.readers.count > 0) continue;
      doom(run, "segments", v);
      continue;
    }
    liveSegments++;
    const live = Math.min(table.live[s]!, v.current);
    liveBytes += live;
    const garbage = v.current - live;
    if (v.current > 0 && garbage / v.current >= threshold && threshold <= 1) {
      candidates.push({ id, garbage, live });
    }
  }
  candidates.sort((a, b) => b.garbage - a.garbage);
  return { liveSegments, liveBytes, storedBytes, candidates };
}

/**
 * Sweep, 3: index roots, runs and Bloom filters under volumes/. Roots first (a root version this
 * prune keeps keeps its runs), then runs. Returns the root versions that could not be read.
 */
async function sweepVolumes(run: PruneRun, refs: IndexRefs): Promise<Unreadable[]> {
  const { repo, lease } = run;
  const unreadable: Unreadable[] = [];
  const volumesPrefix = keys.volumesPrefix(repo);
  const volumeObjects = await listAllVersions(repo, volumesPrefix);
  for (const [key, v] of volumeObjects) {
    const index = /^([^/]+)\/index$/.exec(key.slice(volumesPrefix.length));
    if (!index) continue;
    const volumeId = index[1]!;
    const extra: Versions = { key, versions: [], sizes: [], markers: [], bytes: 0, current: 0 };
    for (const [i, ver] of v.versions.entries()) {
      if (v.markers[i] || refs.pinnedVersions.has(`${key}\0${ver.versionId}`)) continue;
      try {
        const state = await readVolumeIndexRoot(repo, volumeId, { versionId: ver.versionId });
        if (state.root.fencing >= lease.fencing) {
          // Never another run's newer work (cannot happen while we hold the fence): keep it and its runs.
          for (const k of runKeysOf(repo, state.root, key)) refs.liveObjects.add(k);
          continue;
        }
        extra.versions.push(ver);
        extra.sizes.push(v.sizes[i]!);
        extra.markers.push(false);
        extra.bytes += v.sizes[i]!;
      } catch (error) {
        if (error instanceof ObjectNotFoundError) continue;
        unreadable.push({ key, versionId: ver.versionId, error: (error as Error).message });
      }
    }
    if (extra.versions.length > 0) doom(run, "rootVersions", extra);
  }
  for (const [key, v] of volumeObjects) {
    // Runs and Bloom filters no kept root names; anything else under volumes/ is not ours: left alone.
    if (/^[^/]+\/runs\/[^/]+$/.test(key.slice(volumesPrefix.length)) && !refs.liveObjects.has(key)) {
      doom(run, "indexRuns", v);
    }
  }
  return unreadable;
}

/** Sweep, 4: manifests nothing commits, and the transient files of every other run. */
async function sweepManifestsAndRunFiles(run: PruneRun, retained: Retained): Promise<void> {
  const { repo, lease } = run;
  // Manifests nothing commits (forgotten generations, runs that lost), written by older runs.
  const generationsPrefix = keys.generationsPrefix(repo);
  for (const [key, v] of await listAllVersions(repo, generationsPrefix)) {
    const name = parseManifestName(key.slice(generationsPrefix.length));
    if (!name || retained.pinnedManifests.has(key) || name.fencing >= lease.fencing) continue;
    doom(run, "manifests", v);
  }

  // Transient files of every run that is not this one (none can still commit: we hold the fence).
  const runsPrefix = `${repo.prefix === "" ? "" : `${repo.prefix}/`}runs/`;
  const ownRun = keys.runPrefix(repo, lease.runId);
  for (const [key, v] of await listAllVersions(repo, runsPrefix)) {
    if (!key.startsWith(ownRun)) doom(run, "runFiles", v);
  }
}

/** Plan: the candidates the repack budget allows, and the retired set after this prune. */
function planRepack(
  run: PruneRun,
  retained: Retained,
  refs: IndexRefs,
  segments: Segments,
  account: SegmentAccount,
): RepackPlan {
  const { head, retiredState } = retained;
  let budget = run.maxRepack;
  const chosen: RepackCandidate[] = [];
  let deferred = 0;
  for (const c of account.candidates) {
    // Repacking deletes the old segment, which a running restore may be reading: not while restores
    // hold read leases (their generations reach it; the next prune repacks).
    if (run.readers.count > 0) break;
    if (c.live <= budget) {
      chosen.push(c);
      budget -= c.live;
    } else deferred++;
  }

  // The retired set after this prune: what it deletes or repacks, plus what older dedup runs may name.
  const retiredNext = new Map<string, number>();
  for (const [id, at] of retiredState.retired.entries()) {
    // A dedup run written after `at` cannot name the segment: keep it only while an older one is retained.
    if (refs.oldestDedupRun <= at) retiredNext.set(id, at);
  }
  for (const { kind, versions } of run.doomed.values()) {
    if (kind !== "segments") continue;
    const id = SEGMENTS.exec(versions.key.slice(segments.prefix.length))?.[2];
    // Deleted now: retired as of now, so it stays retired until every retained dedup run is newer.
    if (id) retiredNext.set(id, Math.max(head.generation, retiredNext.get(id) ?? 0));
  }
  for (const c of chosen) {
    retiredNext.set(c.id, Math.max(head.generation, retiredNext.get(c.id) ?? 0));
  }
  return { chosen, deferred, retiredNext };
}

/** An empty tally, with the size of every version doomed so far (before the repack dooms its sources). */
function startTally(run: PruneRun): Tally {
  const sizeOf = new Map<string, number>();
  for (const { versions: v } of run.doomed.values()) {
    for (const [i, ref] of v.versions.entries()) sizeOf.set(`${ref.key}\0${ref.versionId}`, v.sizes[i] ?? 0);
  }
  return { deleted: emptyTally(), keptLocked: { count: 0, bytes: 0 }, sizeOf };
}

/** A dry run reports what it would delete (repack candidates by their garbage) and writes nothing. */
function dryRunReport(run: PruneRun, found: Found, tally: Tally): PruneReport {
  const { deleted } = tally;
  for (const { kind, versions } of run.doomed.values()) {
    deleted[kind].count += versions.versions.length;
    deleted[kind].bytes += versions.bytes;
  }
  for (const c of found.plan.chosen) {
    deleted.segments.count++;
    deleted.segments.bytes += c.garbage;
  }
  return buildReport(run, found, tally, true, { segments: 0, copied: 0, newSegments: 0 });
}

function buildReport(
  run: PruneRun,
  found: Found,
  tally: Tally,
  done: boolean,
  repacked: Repacked,
): PruneReport {
  const { retained, account, plan } = found;
  const { deleted, keptLocked } = tally;
  let objectsDeleted = 0;
  let bytesReclaimed = 0;
  for (const t of Object.values(deleted)) {
    objectsDeleted += t.count;
    bytesReclaimed += t.bytes;
  }
  const { liveSegments: live, liveBytes, storedBytes } = account;
  return {
    dryRun: run.dryRun,
    retainedGenerations: retained.generations,
    leasedGenerations: retained.leased,
    head: retained.head.generation,
    indexRunsRead: found.refs.blockRuns.size,
    indexBytesRead: found.marked.indexBytesRead,
    segments: { total: found.segments.physical.size, live, liveBytes, storedBytes },
    deleted,
    repack: {
      candidates: account.candidates.length,
      segments: repacked.segments,
      liveBytesCopied: repacked.copied,
      newSegments: repacked.newSegments,
      deferred: plan.deferred + (plan.chosen.length - repacked.segments),
    },
    retired: {
      before: retained.retiredState.retired.size,
      after: run.dryRun ? retained.retiredState.retired.size : plan.retiredNext.size,
    },
    unreadable: found.unreadable,
    objectsDeleted,
    bytesReclaimed,
    keptLocked,
    done,
  } satisfies PruneReport;
}

/**
 * Retire: the retired set first (If-Match), then the fence check: a backup that can still commit
 * fenced after this check, so it reads the new set before it dedups (§10.2). Every delete follows a check.
 */
async function retire(run: PruneRun, found: Found): Promise<void> {
  const { repo, lease } = run;
  const { retiredState } = found.retained;
  const { retiredNext } = found.plan;
  const retired = new RetiredSegments(retiredNext);
  const sameSet =
    retired.size === retiredState.retired.size &&
    retiredState.retired.entries().every(([id, at]) => retired.retiredAt(id) === at);
  if (!sameSet) {
    try {
      await writeRetiredSegments(repo, retiredNext, retiredState.etag);
    } catch (error) {
      if (error instanceof PreconditionFailedError) {
        throw new RepositoryStateError(
          repo.prefix,
          "the retired-segment set changed while this prune ran (another prune?); nothing was deleted, run prune again",
          { cause: error },
        );
      }
      throw error;
    }
  }
  await assertFenced(repo, lease);
}

/** A block copied into the builder and not sealed yet: where it was and where it goes. */
interface PendingBlock {
  readonly source: string;
  readonly offset: number;
  readonly oldAt: number;
  readonly block: Omit<RelocatedBlock, "offset">;
}

/** Repack state: the segment being built and the blocks and sources waiting for its seal. */
interface Repacking {
  readonly builder: SegmentBuilder;
  readonly repacked: Repacked;
  pending: PendingBlock[];
  pendingSources: string[];
}

/** Repack: copy the chosen segments' live blocks into new segments, until done or told to stop. */
async function repack(run: PruneRun, found: Found): Promise<Repacked> {
  const state: Repacking = {
    builder: new SegmentBuilder(run.repo, run.segmentBytes),
    repacked: { segments: 0, copied: 0, newSegments: 0 },
    pending: [],
    pendingSources: [],
  };
  for (const c of found.plan.chosen) {
    if (run.stop()) break;
    await copyLiveBlocks(run, found, state, c.id);
    state.pendingSources.push(c.id);
    if (state.builder.full) await sealRepacked(run, found, state);
  }
  await sealRepacked(run, found, state);
  return state.repacked;
}

type WantedBlock = { length: number; codec: CodecId; sha256: Uint8Array };

/** The blocks of a segment still in use: a relocation target's live record entries, else the footer's live refs. */
async function wantedBlocks(run: PruneRun, found: Found, id: string): Promise<Map<number, WantedBlock>> {
  const key = keys.segment(run.repo, id);
  const wanted = new Map<number, WantedBlock>();
  const pointing = found.segments.into.get(id);
  if (pointing) {
    for (const t of pointing) {
      const b = t.block;
      wanted.set(b.at, {
        length: b.length,
        codec: b.codec as CodecId,
        sha256: Buffer.from(b.sha256, "hex"),
      });
    }
  } else {
    const s = found.marked.table.find(id)!;
    const footer = await readSegmentFooter(run.repo.store, key);
    if (footer.segmentId !== id) {
      throw new CorruptObjectError(key, undefined, `its footer names segment ${footer.segmentId}`);
    }
    for (const e of footer.entries) {
      if (found.marked.liveRefs.mayContain(s, e.offset)) wanted.set(e.offset, e);
    }
  }
  return wanted;
}

/** Copies one segment's live blocks into the builder: coalesced ranged GETs (≤ 8 MiB), every block checked. */
async function copyLiveBlocks(run: PruneRun, found: Found, state: Repacking, id: string): Promise<void> {
  const { repo } = run;
  const key = keys.segment(repo, id);
  const list = [...(await wantedBlocks(run, found, id))].sort((a, b) => a[0] - b[0]);
  for (let i = 0; i < list.length; ) {
    const start = list[i]![0];
    let end = start + list[i]![1].length;
    let j = i + 1;
    while (j < list.length) {
      const [at, w] = list[j]!;
      if (at > end + 256 * 1024 || at + w.length - start > 8 * 2 ** 20) break;
      end = Math.max(end, at + w.length);
      j++;
    }
    const got = await repo.store.get(key, { range: { start, end } });
    if (got.body.byteLength !== end - start) {
      throw new CorruptObjectError(key, got.versionId, `expected bytes ${start}-${end - 1} of the segment`);
    }
    for (const [at, w] of list.slice(i, j)) {
      const stored = got.body.slice(at - start, at - start + w.length);
      openStoredBlock(
        key,
        { segment: id, offset: at, length: w.length, codec: w.codec, sha256: w.sha256 },
        stored,
      );
      const place = state.builder.add(stored, w.codec, w.sha256);
      state.pending.push({
        source: id,
        // A physical segment's blocks keep their offset as the record's key; a target's are re-keyed
        // by the records that point into it (sealRepacked).
        offset: at,
        oldAt: at,
        block: {
          length: w.length,
          codec: w.codec,
          sha256: toHex(w.sha256),
          segment: place.segment,
          at: place.at,
        },
      });
      state.repacked.copied += w.length;
    }
    i = j;
  }
}

/** Seals the new segment; once it is durable, writes the relocation records, then dooms the sources. */
async function sealRepacked(run: PruneRun, found: Found, state: Repacking): Promise<void> {
  const { repo, lease } = run;
  const { moved, into, physical } = found.segments;
  if (state.builder.empty) return;
  await state.builder.seal();
  state.repacked.newSegments++;
  for (const source of state.pendingSources) {
    const copied = state.pending.filter((p) => p.source === source);
    const pointing = into.get(source);
    if (pointing) {
      // A segment an earlier prune wrote: rewrite each record that points into it.
      for (const from of new Set(pointing.map((m) => m.from))) {
        const current = moved.get(from)!;
        const blocks: RelocatedBlock[] = [];
        for (const b of current.record.blocks) {
          if (b.segment !== source) blocks.push(b);
          else {
            const c = copied.find((x) => x.oldAt === b.at);
            if (c) blocks.push({ ...c.block, offset: b.offset }); // else: garbage, dropped
          }
        }
        await assertFenced(repo, lease);
        const record = { segmentId: from, runId: lease.runId, fencing: lease.fencing, blocks };
        moved.set(from, { record, etag: await writeRelocation(repo, record, current.etag) });
      }
    } else {
      await assertFenced(repo, lease);
      const blocks = copied.map((c) => ({ ...c.block, offset: c.offset }));
      await writeRelocation(
        repo,
        { segmentId: source, runId: lease.runId, fencing: lease.fencing, blocks },
        undefined,
      );
    }
    const v = physical.get(source);
    if (v) doom(run, "segments", v);
    state.repacked.segments++;
  }
  state.pending = [];
  state.pendingSources = [];
}

const DELETE_ORDER: readonly PruneKind[] = [
  "runFiles",
  "manifests",
  "rootVersions",
  "indexRuns",
  "segments",
  "relocations",
];

/** Versions of one kind waiting for one delete request (at most 1,000). */
interface DeleteBatch {
  readonly kind: PruneKind;
  refs: ObjectVersionRef[];
  bytes: number;
}

/** Sweep: delete the doomed versions kind by kind, in batches, until done or told to stop. */
async function sweep(run: PruneRun, tally: Tally): Promise<{ stopped: boolean; batches: number }> {
  let batches = 0;
  let stopped = false;
  for (const kind of DELETE_ORDER) {
    const batch: DeleteBatch = { kind, refs: [], bytes: 0 };
    for (const { kind: k, versions } of run.doomed.values()) {
      if (k !== kind) continue;
      if (run.stop()) {
        stopped = true;
        break;
      }
      if (batch.refs.length + versions.versions.length > 1000) batches += await sendBatch(run, tally, batch);
      batch.refs.push(...versions.versions);
      batch.bytes += versions.bytes;
    }
    if (stopped) break;
    batches += await sendBatch(run, tally, batch);
  }
  return { stopped, batches };
}

/** One fence check and one delete request; Object Lock's kept versions are tallied. Returns 1 if sent. */
async function sendBatch(run: PruneRun, tally: Tally, batch: DeleteBatch): Promise<number> {
  if (batch.refs.length === 0) return 0;
  await assertFenced(run.repo, run.lease);
  let kept: readonly ObjectVersionRef[] = [];
  try {
    await run.repo.store.deleteVersions(batch.refs);
  } catch (error) {
    if (!(error instanceof ObjectLockedError)) throw error;
    // Locked garbage stays until its retention passes; everything else in the batch is deleted.
    kept = error.refs;
  }
  const keptBytes = kept.reduce((n, r) => n + (tally.sizeOf.get(`${r.key}\0${r.versionId}`) ?? 0), 0);
  tally.keptLocked.count += kept.length;
  tally.keptLocked.bytes += keptBytes;
  tally.deleted[batch.kind].count += batch.refs.length - kept.length;
  tally.deleted[batch.kind].bytes += batch.bytes - keptBytes;
  batch.refs = [];
  batch.bytes = 0;
  return 1;
}
