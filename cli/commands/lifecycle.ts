/**
 * `cgmirror forget` and `cgmirror prune`: the retention side of the lifecycle (docs/operations.md,
 * "Retention and prune"). Both hold the group like a backup run (lock + fenced HEAD); `--dry-run`
 * only reads. Definitions only: the actions load from lifecycle-run.ts when a command runs.
 */
import { Command, Option } from "commander";
import { parseNonNegativeInt } from "../parse.ts";
import { repoOptions } from "./repo.ts";

const run = () => import("./lifecycle-run.ts");

function policyOptions(cmd: Command): Command {
  const count = (flag: string, what: string) =>
    new Option(`${flag} <n>`, `keep ${what} (replaces the config's policy)`).argParser(parseNonNegativeInt);
  return cmd
    .addOption(count("--keep-last", "the newest n generations"))
    .addOption(count("--keep-hourly", "the newest generation of each of the last n hours that have one"))
    .addOption(count("--keep-daily", "the newest generation of each of the last n days"))
    .addOption(count("--keep-weekly", "the newest generation of each of the last n ISO weeks"))
    .addOption(count("--keep-monthly", "the newest generation of each of the last n months"))
    .addOption(count("--keep-yearly", "the newest generation of each of the last n years"))
    .option("--keep-within <duration>", "keep every generation within this of the newest one (7d, 36h, 1y6m)")
    .option(
      "--timezone <iana>",
      "time zone of the hourly/daily/... buckets (default: the config's, else UTC)",
    );
}

export function forgetCommand(): Command {
  return policyOptions(
    repoOptions(
      new Command("forget").description(
        "apply the retention policy: remove the commit record and manifest of every generation it does not keep (HEAD is always kept); `prune` then reclaims their data",
      ),
    ),
  )
    .option("--dry-run", "only show which generations would go and why")
    .option("--prune", "prune right after forgetting (same lock)")
    .option("--lock-minutes <n>", "lease of the group lock", parseNonNegativeInt, 120)
    .action(async (opts) => (await run()).forgetAction(opts));
}

export function pruneCommand(): Command {
  return repoOptions(
    new Command("prune").description(
      "reclaim storage: delete segments, index runs, root versions and manifests no retained generation reaches, leftovers of failed runs, and repack mostly-garbage segments",
    ),
  )
    .option("--dry-run", "only report what would be deleted and repacked (takes no lock, writes nothing)")
    .option(
      "--repack-threshold <percent>",
      "repack a live segment when at least this % of it is garbage (default: the config's prune.repackGarbagePercent, else 50; 100 = never)",
      parseNonNegativeInt,
    )
    .option(
      "--max-repack-gib <n>",
      "copy at most this many GiB of live blocks (default: the config's, else 16)",
      parseNonNegativeInt,
    )
    .option("--lock-minutes <n>", "lease of the group lock", parseNonNegativeInt, 120)
    .action(async (opts) => (await run()).pruneAction(opts));
}
