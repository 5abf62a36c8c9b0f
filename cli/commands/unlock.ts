/** `cgmirror unlock`: release a stale group lock, showing its holder, after a confirmation. */
import { Command } from "commander";
import { repoOptions } from "./repo.ts";

export function unlockCommand(): Command {
  return repoOptions(
    new Command("unlock")
      .description("release the group's lock left by a run that died (shows the holder, asks first)")
      .addHelpText(
        "after",
        `
An expired lock is taken over by the next run anyway (its Recover finishes or reverts what the dead run
left); unlock lets the next run start now instead of waiting for the lease to end.

A lock whose lease has not expired belongs to a run that may still be alive: unlock refuses it unless
--force. Even then two runs cannot both commit: the next run moves HEAD's fence to its higher fencing
number before it writes anything, and Commit moves HEAD only with If-Match on the HEAD it read (core/protocol/commit.ts).
Whichever run moves HEAD second fails with LockLostError and reverts only what it wrote itself; nothing a
committed generation uses is touched. A forced unlock can therefore cost the live run its work, never data.

Exit codes: 0 released (or nothing to release), 1 not confirmed, 7 the lock is live and --force was not given.`,
      ),
  )
    .option("--yes", "do not ask for confirmation")
    .option(
      "--force",
      "also release a lock whose lease has not expired (its run may still be alive; see below)",
    )
    .action(async (opts) => {
      const { unlockAction } = await import("./unlock-run.ts");
      await unlockAction(opts);
    });
}
