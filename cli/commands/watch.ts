/** `cgmirror watch`: follow a running backup, in AWS (its execution) or locally (its lock and progress). */
import { Command } from "commander";
import { awsOptions } from "../state.ts";
import { repoOptions } from "./repo.ts";

export function watchCommand(): Command {
  const [region] = awsOptions();
  const cmd = repoOptions(
    new Command("watch").description(
      "follow a running backup to its end: the states it enters (in AWS), transfer progress, and its outcome (exit code as for backup)",
    ),
  )
    .option("--execution-arn <arn>", "in AWS: the execution to follow")
    .option(
      "--state-machine-arn <arn>",
      "in AWS: follow the newest running execution of this state machine (default: $CGM_STATE_MACHINE_ARN)",
    )
    .option("--wait <seconds>", "wait this long for a run to start when none is running", "0");
  void region;
  return cmd.action(async (opts) => {
    const { watchAction } = await import("./watch-run.ts");
    await watchAction(opts);
  });
}
