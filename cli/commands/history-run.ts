/** The work behind `cgmirror runs`, `diff` and `stats`. */
import type { IndexEntry } from "#core/format/block-ref.ts";
import { Codec } from "#core/format/codec.ts";
import { keys, type Repo } from "#core/format/layout.ts";
import { openVolumeIndex, type VolumeIndex } from "#core/format/volume-index.ts";
import { listRunRecords } from "#core/protocol/run-history.ts";
import { formatBytes, printJson, table } from "../output.ts";
import type { RepoOptions } from "./repo.ts";
import { manifestOrExplain, RUN_HEADERS, readLockView, runRow, withRepo } from "./repo-run.ts";

const BLOCK = 524_288;

export async function runsAction(opts: RepoOptions & { limit: number }): Promise<void> {
  await withRepo(opts, async (repo) => {
    const { records, unreadable } = await listRunRecords(repo, { limit: opts.limit });
    const lock = await readLockView(repo);
    const running = lock?.state === "held" ? { runId: lock.runId, startedAt: lock.acquiredAt } : null;
    if (opts.json) {
      printJson({ group: repo.group, running, runs: records, unreadable });
      return;
    }
    if (records.length === 0 && !running) console.log(`group ${repo.group}: no runs recorded yet`);
    else console.log(table(RUN_HEADERS, records.map(runRow)));
    if (running) console.log(`running now: ${running.runId} (since ${running.startedAt})`);
    for (const u of unreadable) console.log(`unreadable run record ${u}`);
  });
}

/** Pull-based iteration over a volume index's live entries (scan pushes batches; one batch in flight). */
async function* entries(index: VolumeIndex): AsyncGenerator<IndexEntry> {
  let resolveBatch: ((b: IndexEntry[] | null) => void) | undefined;
  let consumed: (() => void) | undefined;
  let next = new Promise<IndexEntry[] | null>((r) => {
    resolveBatch = r;
  });
  let failure: unknown;
  const done = index
    .scan(async (batch) => {
      const ready = new Promise<void>((r) => {
        consumed = r;
      });
      resolveBatch!(batch);
      await ready;
    })
    .then(
      () => resolveBatch!(null),
      (error) => {
        failure = error;
        resolveBatch!(null);
      },
    );
  for (;;) {
    const batch = await next;
    if (batch === null) break;
    next = new Promise<IndexEntry[] | null>((r) => {
      resolveBatch = r;
    });
    for (const e of batch) yield e;
    consumed!();
  }
  await done;
  if (failure) throw failure;
}

function sameRef(a: IndexEntry["ref"], b: IndexEntry["ref"]): boolean {
  return Buffer.compare(Buffer.from(a.sha256), Buffer.from(b.sha256)) === 0;
}

export interface VolumeDiff {
  readonly volumeId: string;
  /** Blocks whose content differs (written, rewritten or zeroed). */
  readonly changedBlocks: number;
  readonly changedBytes: number;
  /** Of those: never written in `from`. */
  readonly newBlocks: number;
  /** Of those: zero or trimmed in `to`. */
  readonly zeroedBlocks: number;
  readonly status: "changed" | "unchanged" | "added" | "removed";
}

export async function diffVolumes(repo: Repo, from: number, to: number): Promise<VolumeDiff[]> {
  const [a, b] = [await manifestOrExplain(repo, from), await manifestOrExplain(repo, to)];
  const ids = [...new Set([...a.volumes, ...b.volumes].map((v) => v.volumeId))].sort();
  const out: VolumeDiff[] = [];
  for (const id of ids) {
    const va = a.volumes.find((v) => v.volumeId === id);
    const vb = b.volumes.find((v) => v.volumeId === id);
    if (!va || !vb) {
      out.push({
        volumeId: id,
        changedBlocks: 0,
        changedBytes: 0,
        newBlocks: 0,
        zeroedBlocks: 0,
        status: va ? "removed" : "added",
      });
      continue;
    }
    if (va.index.sha256 === vb.index.sha256) {
      out.push({
        volumeId: id,
        changedBlocks: 0,
        changedBytes: 0,
        newBlocks: 0,
        zeroedBlocks: 0,
        status: "unchanged",
      });
      continue;
    }
    const ia = entries(await openVolumeIndex(repo, id, va.index));
    const ib = entries(await openVolumeIndex(repo, id, vb.index));
    let ea = await ia.next();
    let eb = await ib.next();
    let changed = 0;
    let added = 0;
    let zeroed = 0;
    const isZero = (e: IndexEntry) => e.ref.codec === Codec.zero;
    while (!ea.done || !eb.done) {
      if (!eb.done && (ea.done || eb.value.block < ea.value.block)) {
        if (!isZero(eb.value)) {
          changed++;
          added++;
        }
        eb = await ib.next();
      } else if (!ea.done && (eb.done || ea.value.block < eb.value.block)) {
        if (!isZero(ea.value)) {
          changed++;
          zeroed++;
        }
        ea = await ia.next();
      } else {
        if (!sameRef(ea.value!.ref, eb.value!.ref)) {
          changed++;
          if (isZero(eb.value!)) zeroed++;
        }
        ea = await ia.next();
        eb = await ib.next();
      }
    }
    out.push({
      volumeId: id,
      changedBlocks: changed,
      changedBytes: changed * BLOCK,
      newBlocks: added,
      zeroedBlocks: zeroed,
      status: changed > 0 ? "changed" : "unchanged",
    });
  }
  return out;
}

export async function diffAction(from: number, to: number, opts: RepoOptions): Promise<void> {
  await withRepo(opts, async (repo) => {
    const volumes = await diffVolumes(repo, from, to);
    const total = volumes.reduce((s, v) => s + v.changedBlocks, 0);
    if (opts.json) {
      printJson({ group: repo.group, from, to, changedBlocks: total, changedBytes: total * BLOCK, volumes });
      return;
    }
    console.log(
      table(
        ["VOLUME", "STATUS", "CHANGED BLOCKS", "CHANGED", "NEW", "ZEROED"],
        volumes.map((v) => [
          v.volumeId,
          v.status,
          v.changedBlocks,
          formatBytes(v.changedBytes),
          v.newBlocks,
          v.zeroedBlocks,
        ]),
      ),
    );
    console.log(`generation ${from} → ${to}: ${total} blocks (${formatBytes(total * BLOCK)}) changed`);
  });
}

export interface RepoStats {
  readonly generation: number;
  /** Non-zero blocks the generation's volumes hold, × 512 KiB: what a restore writes. */
  readonly logicalBytes: number;
  readonly dataBlocks: number;
  readonly zeroBlocks: number;
  /** Distinct stored blocks those refer to (dedup within and across volumes). */
  readonly uniqueBlocks: number;
  /** Stored (compressed) bytes of those distinct blocks. */
  readonly storedBytes: number;
  /** logical bytes ÷ (distinct blocks × 512 KiB). */
  readonly dedupRatio: number;
  /** (distinct blocks × 512 KiB) ÷ their stored bytes. */
  readonly compressionRatio: number;
  /** The whole repository: every object under the prefix (segments, indexes, metadata), current versions. */
  readonly repository: { segments: number; segmentBytes: number; objects: number; bytes: number };
}

export async function repoStats(repo: Repo, generation?: number): Promise<RepoStats> {
  const manifest = await manifestOrExplain(repo, generation);
  let dataBlocks = 0;
  let zeroBlocks = 0;
  let storedBytes = 0;
  // Distinct stored blocks by where they are stored (memory: ~100 bytes per distinct block).
  const seen = new Set<string>();
  for (const v of manifest.volumes) {
    const index = await openVolumeIndex(repo, v.volumeId, v.index);
    await index.scan((batch) => {
      for (const e of batch) {
        if (e.ref.codec === Codec.zero) {
          zeroBlocks++;
          continue;
        }
        dataBlocks++;
        const where = `${e.ref.segment}:${e.ref.offset}`;
        if (!seen.has(where)) {
          seen.add(where);
          storedBytes += e.ref.length;
        }
      }
    });
  }
  let segments = 0;
  let segmentBytes = 0;
  let objects = 0;
  let bytes = 0;
  const segPrefix = keys.segment(repo, "00").replace(/00\/00\.seg$/, "");
  const all = repo.prefix === "" ? "" : `${repo.prefix}/`;
  for await (const o of repo.store.list(all)) {
    objects++;
    bytes += o.size ?? 0;
    if (o.key.startsWith(segPrefix)) {
      segments++;
      segmentBytes += o.size ?? 0;
    }
  }
  const logicalBytes = dataBlocks * BLOCK;
  const uniqueBytes = seen.size * BLOCK;
  return {
    generation: manifest.generation,
    logicalBytes,
    dataBlocks,
    zeroBlocks,
    uniqueBlocks: seen.size,
    storedBytes,
    dedupRatio: uniqueBytes > 0 ? logicalBytes / uniqueBytes : 1,
    compressionRatio: storedBytes > 0 ? uniqueBytes / storedBytes : 1,
    repository: { segments, segmentBytes, objects, bytes },
  };
}

export async function statsAction(opts: RepoOptions & { generation?: number }): Promise<void> {
  await withRepo(opts, async (repo) => {
    const s = await repoStats(repo, opts.generation);
    if (opts.json) {
      printJson({ group: repo.group, ...s });
      return;
    }
    console.log(`group ${repo.group}, generation ${s.generation}:`);
    console.log(
      table(
        ["", "VALUE"],
        [
          [
            "logical (what a restore writes)",
            `${formatBytes(s.logicalBytes)} in ${s.dataBlocks} blocks (+${s.zeroBlocks} zero)`,
          ],
          ["distinct stored blocks", `${s.uniqueBlocks} (${formatBytes(s.uniqueBlocks * BLOCK)} raw)`],
          ["stored (compressed)", formatBytes(s.storedBytes)],
          ["dedup ratio", `${s.dedupRatio.toFixed(2)}x`],
          ["compression ratio", `${s.compressionRatio.toFixed(2)}x`],
          [
            "overall (logical ÷ stored)",
            `${(s.storedBytes > 0 ? s.logicalBytes / s.storedBytes : 1).toFixed(2)}x`,
          ],
          [
            "repository (all generations)",
            `${formatBytes(s.repository.bytes)} in ${s.repository.objects} objects, ${s.repository.segments} segments (${formatBytes(s.repository.segmentBytes)})`,
          ],
        ],
      ),
    );
  });
}
