/** `cgmirror report`: one self-contained HTML page with the group's health. */
import { Command } from "commander";
import { parsePositiveInt } from "../parse.ts";
import { repoOptions } from "./repo.ts";

export function reportCommand(): Command {
  return repoOptions(
    new Command("report").description(
      "write one self-contained HTML page (no network): RPO timeline, bytes changed/stored and durations per generation, reverted runs and their causes, retention status",
    ),
  )
    .requiredOption("--out <file>", "where to write the page, e.g. report.html")
    .option(
      "--rpo-minutes <n>",
      "RPO target to draw (default: the config's alarms.rpoMinutes)",
      parsePositiveInt,
    )
    .option("--limit <n>", "at most the newest n generations and runs", parsePositiveInt, 200)
    .action(async (opts) => {
      const { reportAction } = await import("./report-run.ts");
      await reportAction(opts);
    });
}
