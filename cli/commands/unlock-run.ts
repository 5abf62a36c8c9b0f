/** The work behind `cgmirror unlock`. */
import { createInterface } from "node:readline/promises";
import { keys } from "#core/format/layout.ts";
import { encodeMetadata } from "#core/format/metadata.ts";
import { PreconditionFailedError } from "#core/ports/object-store.ts";
import { readLock } from "#core/protocol/lock.ts";
import { BusyError, ExitCode } from "../errors.ts";
import { printJson } from "../output.ts";
import type { RepoOptions } from "./repo.ts";
import { describeLock, readLockView, withRepo } from "./repo-run.ts";

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

export async function unlockAction(opts: RepoOptions & { yes?: boolean; force?: boolean }): Promise<void> {
  await withRepo(opts, async (repo) => {
    const view = await readLockView(repo);
    if (!opts.json) console.log(describeLock(view));
    if (!view || view.state === "free") {
      if (opts.json)
        printJson({ group: repo.group, released: false, reason: "not locked", lock: view ?? null });
      else console.log("nothing to unlock");
      return;
    }
    if (view.state === "held" && !opts.force) {
      throw new BusyError(
        `the lock of run ${view.runId} has not expired (until ${view.expiresAt}); that run may still be working. ` +
          "Wait for it, or add --force (safe for the data: see `cgmirror unlock --help`)",
      );
    }
    const go =
      opts.yes ||
      (process.stdin.isTTY && !opts.json && (await confirm(`release the lock of run ${view.runId}?`)));
    if (!go) {
      if (!opts.json) console.log("nothing changed; re-run with --yes to release it");
      process.exitCode = ExitCode.failed;
      return;
    }
    const current = await readLock(repo);
    if (!current || current.record.runId !== view.runId || current.record.fencing !== view.fencing) {
      throw new BusyError(
        "the lock changed while unlocking (a run took it); look again with `cgmirror status`",
      );
    }
    // Released, keeping its fencing number (the next run's is higher). If-Match: only the lock we showed.
    try {
      await repo.store.put(
        keys.lock(repo),
        encodeMetadata("cgmirror.lock", { ...current.record, released: true }),
        {
          ifMatch: current.etag,
        },
      );
    } catch (error) {
      if (error instanceof PreconditionFailedError) {
        throw new BusyError(
          "the lock changed while unlocking (a run took it); look again with `cgmirror status`",
        );
      }
      throw error;
    }
    if (opts.json) printJson({ group: repo.group, released: true, runId: view.runId, fencing: view.fencing });
    else
      console.log(`released the lock of run ${view.runId} (fencing ${view.fencing}); the next run can start`);
  });
}
