/** `cgmirror runs`, `diff`, `stats`: a group's history and what its repository holds (definitions). */
import { Command } from "commander";
import { parseGeneration, parsePositiveInt } from "../parse.ts";
import { repoOptions } from "./repo.ts";

const run = () => import("./history-run.ts");

export function runsCommand(): Command {
  return repoOptions(
    new Command("runs").description(
      "the history of runs: started, outcome, generation, duration, changed and stored bytes, cause of failure (from the run records under history/)",
    ),
  )
    .option("--limit <n>", "show the newest n runs", parsePositiveInt, 50)
    .action(async (opts) => (await run()).runsAction(opts));
}

export function diffCommand(): Command {
  return repoOptions(
    new Command("diff")
      .description("blocks and bytes that changed per volume between two generations (from their indexes)")
      .argument("<from>", "the older generation", parseGeneration)
      .argument("<to>", "the newer generation", parseGeneration),
  ).action(async (from: number, to: number, opts) => (await run()).diffAction(from, to, opts));
}

export function statsCommand(): Command {
  return repoOptions(
    new Command("stats").description(
      "logical vs stored bytes of a generation (default HEAD) and of the repository: dedup and compression ratios",
    ),
  )
    .option("--generation <n>", "generation (default: HEAD)", parseGeneration)
    .action(async (opts) => (await run()).statsAction(opts));
}
