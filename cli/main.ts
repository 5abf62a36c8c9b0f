/**
 * cgmirror's command-line interface. Every command has --help; data commands take --json; every
 * command ends with an exit code from one table (cli/errors.ts, README "Exit codes"). A foreseeable
 * failure prints one line (`cgmirror: <cause>; <fix>`), never a stack trace.
 *
 * Startup cost matters (`--help` and `status` must answer in well under a second): this module and the
 * command definitions import only commander and small helpers; each action imports what it needs.
 */
import { Command, CommanderError } from "commander";
import { backupCommand } from "./commands/backup.ts";
import { configCommands } from "./commands/config.ts";
import { demoCommand } from "./commands/demo.ts";
import { diffCommand, runsCommand, statsCommand } from "./commands/history.ts";
import { forgetCommand, pruneCommand } from "./commands/lifecycle.ts";
import { localCommands } from "./commands/local.ts";
import { repairCommand, restoreCommand, statusCommand, verifyCommand } from "./commands/repo.ts";
import { reportCommand } from "./commands/report.ts";
import { unlockCommand } from "./commands/unlock.ts";
import { watchCommand } from "./commands/watch.ts";
import { ExitCode, toCliError } from "./errors.ts";

export { seededBytes } from "./seeded.ts";

/** Applies the CLI's conventions to a command and all its subcommands. */
function finish(c: Command, path: string): void {
  c.exitOverride();
  c.configureOutput({
    // Commander's own errors ("error: unknown option") get the same prefix as every other error.
    outputError: (str, write) => write(str.replace(/^error: /, "cgmirror: ")),
  });
  c.showHelpAfterError(`(run \`${path} --help\` for usage)`);
  c.configureHelp({
    optionDescription: (option) => {
      const base = option.description ?? "";
      const extra: string[] = [];
      if (option.mandatory) extra.push("required");
      if (option.defaultValue !== undefined && option.defaultValue !== false && !option.negate) {
        extra.push(`default: ${option.defaultValueDescription ?? JSON.stringify(option.defaultValue)}`);
      }
      if (option.argChoices) extra.push(`choices: ${option.argChoices.join(", ")}`);
      return extra.length > 0 ? `${base} (${extra.join("; ")})` : base;
    },
    sortSubcommands: false,
  });
  for (const sub of c.commands) finish(sub, `${path} ${sub.name()}`);
}

export function buildProgram(): Command {
  const program = new Command("cgmirror")
    .description(
      "consistency groups across EBS volumes, backed up incrementally into S3 and committed atomically",
    )
    .version("0.1.0")
    .addHelpText(
      "after",
      "\nExit codes: 0 success, 1 failed (reverted, problems found), 2 usage or input error, 3 committed but the lock\n" +
        "release failed, 4 timed out, 5 aborted, 6 environment (Region, credentials, access, network), 7 busy (lock held),\n" +
        "130 interrupted. Set CGM_DEBUG=1 for stack traces. Docs: README.md, docs/operations.md.",
    );
  for (const c of [
    localCommands(),
    configCommands(),
    backupCommand(),
    watchCommand(),
    statusCommand(),
    runsCommand(),
    diffCommand(),
    statsCommand(),
    reportCommand(),
    restoreCommand(),
    verifyCommand(),
    repairCommand(),
    forgetCommand(),
    pruneCommand(),
    unlockCommand(),
    demoCommand(),
  ]) {
    program.addCommand(c);
  }
  finish(program, "cgmirror");
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  const onInterrupt = (): void => {
    process.stderr.write("\ncgmirror: interrupted\n");
    process.exit(ExitCode.interrupted);
  };
  process.once("SIGINT", onInterrupt);
  try {
    await program.parseAsync(argv);
    // A command that completed but found something wrong (verify's problems) sets process.exitCode.
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? 0 : ExitCode.usage;
    }
    const cli = toCliError(err);
    if (cli) {
      console.error(`cgmirror: ${cli.message}`);
      if (process.env.CGM_DEBUG) console.error(err);
      return cli.exitCode;
    }
    const e = err as Error | undefined;
    console.error(
      `cgmirror: internal error (a bug in cgmirror): ${e?.name ?? "Error"}: ${e?.message ?? String(err)}`,
    );
    if (process.env.CGM_DEBUG) console.error(err);
    else
      console.error("(set CGM_DEBUG=1 for the stack trace, and please report it with the command you ran)");
    return ExitCode.failed;
  } finally {
    process.off("SIGINT", onInterrupt);
  }
}
