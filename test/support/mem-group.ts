/**
 * A consistency group on in-memory parts (MemoryEbs + MemoryObjectStore) for protocol tests: the real
 * task handlers run against it through test/support/pipeline.ts, and every committed generation can
 * be restored and compared with the volumes' point-in-time images.
 */
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { type GroupConfig, parseGroupConfig } from "#core/config/group-config.ts";
import { BLOCK_SIZE } from "#core/format/bytes.ts";
import { listGenerations, readCommittedManifest, readGeneration } from "#core/format/generation.ts";
import { createRepo, type Repo } from "#core/format/layout.ts";
import { readVolume, restoreGroup } from "#core/restore/restore.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import { RecordingFreeze } from "../unit/lambda-fixtures.ts";
import { blockBytes, MemoryEbs } from "./mem-ebs.ts";

export interface MemGroup {
  readonly ebs: MemoryEbs;
  readonly store: MemoryObjectStore;
  readonly repo: Repo;
  readonly config: GroupConfig;
  /** Task deps over the group's parts (a fresh set = a fresh "Lambda container"). */
  deps(overrides?: Partial<TaskDeps>): TaskDeps;
  readonly errors: string[];
  readonly metrics: { name: string; value: number }[];
}

export const MEM_VOLUMES = [
  { id: "vol-a", instanceId: "i-a", blocks: 12 },
  { id: "vol-b", instanceId: "i-a", blocks: 8 },
  { id: "vol-c", instanceId: "i-b", blocks: 6 },
] as const;

export function memGroup(
  options: {
    group?: string;
    volumes?: readonly { id: string; instanceId?: string; blocks: number }[];
    /** Start from copies of another group's parts (its volumes must match `volumes`). */
    from?: MemGroup;
  } = {},
): MemGroup {
  const volumes = options.volumes ?? MEM_VOLUMES;
  let ebs: MemoryEbs;
  if (options.from) ebs = options.from.ebs.clone();
  else {
    ebs = new MemoryEbs();
    for (const v of volumes) ebs.addVolume(v.id, v.blocks);
  }
  const store = options.from ? options.from.store.clone() : new MemoryObjectStore();
  const config = parseGroupConfig({
    group: options.group ?? "db",
    volumes: volumes.map((v) => ({ id: v.id, ...(v.instanceId ? { instanceId: v.instanceId } : {}) })),
    target: { bucket: "backups" },
    schedule: { expression: "rate(1 hour)" },
    transfer: { shardBlocks: 64 },
    snapshots: { keep: 100 },
  });
  const repo = createRepo({ store, prefix: config.target.prefix, group: config.group });
  const errors: string[] = [];
  const metrics: { name: string; value: number }[] = [];
  const freeze = new RecordingFreeze();
  return {
    ebs,
    store,
    repo,
    config,
    errors,
    metrics,
    deps(overrides = {}) {
      return {
        store: () => store,
        blockSource: () => ebs,
        snapshots: () => ebs,
        freeze: () => freeze,
        clock: { now: () => Date.now() },
        transferOptions: {
          segmentBytes: 3 * BLOCK_SIZE,
          allowSmallSegments: true,
          progressIntervalMs: 3_600_000,
          backoffBaseMs: 0,
          backoffCapMs: 0,
        },
        log: {
          info: () => {},
          warn: () => {},
          error: (m, e) => errors.push(`${m} ${JSON.stringify(e ?? {})}`),
        },
        metrics: { add: (_g, name, _u, value) => metrics.push({ name, value }), flush: () => {} },
        ...overrides,
      };
    },
  };
}

/** Restores generation `n` (default HEAD) to a temporary directory and compares it with the images. */
export async function restoreMatches(g: MemGroup, generation?: number): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), "cgm-memgroup-"));
  try {
    const manifest = generation === undefined ? undefined : await readGeneration(g.repo, generation);
    await restoreGroup(g.repo, { directory: dir, ...(generation !== undefined ? { generation } : {}) });
    const m = manifest ?? (await readGeneration(g.repo, (await listGenerations(g.repo)).at(-1)!));
    const problems: string[] = [];
    for (const v of m.volumes) {
      const image = g.ebs.image(v.sourceSnapshotId!);
      const file = await readFile(join(dir, `${v.volumeId}.img`));
      if (file.byteLength !== image.sizeBlocks * BLOCK_SIZE) {
        problems.push(`${v.volumeId}: ${file.byteLength} bytes, expected ${image.sizeBlocks * BLOCK_SIZE}`);
        continue;
      }
      for (let b = 0; b < image.sizeBlocks; b++) {
        const want = blockBytes(image.blocks.get(b) ?? null);
        if (!file.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE).equals(want)) {
          problems.push(`${v.volumeId} block ${b} differs in generation ${m.generation}`);
          break;
        }
      }
    }
    const left = (await readdir(dir)).filter((f) => !f.endsWith(".img"));
    if (left.length > 0) problems.push(`restore left ${left.join(", ")}`);
    return problems;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Reads generation `n` (default HEAD) through `readVolume` (every check restore makes, no file) and
 * compares every block with the volumes' images at that generation's snapshots. Returns the
 * differences; throws what readVolume throws (a refused read).
 */
export async function readMatches(g: MemGroup, generation?: number): Promise<string[]> {
  const m =
    generation === undefined ? await readCommittedManifest(g.repo) : await readGeneration(g.repo, generation);
  if (!m) return ["no committed generation"];
  const problems: string[] = [];
  for (const v of m.volumes) {
    const image = g.ebs.image(v.sourceSnapshotId!);
    const got = new Map<number, Buffer>();
    await readVolume(g.repo, { manifest: m, volumeId: v.volumeId }, (block, raw) => {
      got.set(block, Buffer.from(raw));
    });
    if (v.sizeBytes !== image.sizeBlocks * BLOCK_SIZE) problems.push(`${v.volumeId}: size ${v.sizeBytes}`);
    for (let b = 0; b < image.sizeBlocks; b++) {
      const want = blockBytes(image.blocks.get(b) ?? null);
      const have = got.get(b) ?? ZERO;
      if (!have.equals(want)) problems.push(`${v.volumeId} block ${b} differs in generation ${m.generation}`);
    }
    for (const b of got.keys())
      if (b >= image.sizeBlocks) problems.push(`${v.volumeId} block ${b} beyond the volume`);
  }
  return problems;
}

const ZERO = Buffer.alloc(BLOCK_SIZE);

/** Every committed generation restores to its images; returns the problems (empty when all match). */
export async function allGenerationsRestore(g: MemGroup): Promise<string[]> {
  const out: string[] = [];
  for (const n of await listGenerations(g.repo)) {
    try {
      out.push(...(await restoreMatches(g, n)));
    } catch (error) {
      out.push(`generation ${n}: ${(error as Error).name}: ${(error as Error).message}`);
    }
  }
  return out;
}

/** Writes `count` blocks of new content to random-ish places (deterministic from `seed`). */
export function churn(g: MemGroup, seed: number, count = 4): void {
  let x = seed * 7919 + 1;
  const next = () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x;
  };
  for (let i = 0; i < count; i++) {
    const v = [...g.ebs.volumes.keys()][next() % g.ebs.volumes.size]!;
    const size = g.ebs.volumes.get(v)!.sizeBlocks;
    const kind = next() % 6;
    // Some repeated content (dedup), some zero blocks, mostly fresh content.
    const content = kind === 0 ? null : kind === 1 ? `shared-${next() % 3}` : `s${seed}-${i}-${next()}`;
    g.ebs.write(v, next() % size, content);
  }
}
