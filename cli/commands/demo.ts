/** `cgmirror demo` (and `npm run demo`). */
import { resolve } from "node:path";
import { Command } from "commander";
import { formatBytes, printJson, table } from "../output.ts";

export function demoCommand(): Command {
  return new Command("demo")
    .description(
      "on the embedded local stack: a consistency group across two instances, three backups while a workload writes " +
        "(full, incremental, one that fails and reverts), then every generation restored and checked",
    )
    .option("--state-dir <dir>", "keep the demo's stack state here (default: a temporary directory, removed)")
    .option(
      "--report <file>",
      "where to write the HTML report of the demo's group",
      ".cgmirror/demo-report.html",
    )
    .option("--json", "print the report as JSON")
    .action(async (opts: { stateDir?: string; report: string; json?: boolean }) => {
      const quiet = opts.json;
      const { runDemo } = await import("../../local/demo.ts");
      const report = await runDemo({
        reportPath: resolve(opts.report),
        ...(opts.stateDir ? { stateDir: opts.stateDir } : {}),
        ...(quiet ? {} : { log: (l: string) => console.log(l) }),
      });
      if (opts.json) printJson(report);
      else {
        console.log("\nBackups (the workload kept writing during each):");
        console.log(
          table(
            ["BACKUP", "OUTCOME", "GEN", "CHANGED BLOCKS", "STORED", "FREEZE", "DURATION", "RECORDS WRITTEN"],
            report.backups.map((b) => [
              b.step,
              b.outcome,
              b.generation ?? "-",
              b.changedBlocks ?? "-",
              b.storedBytes === undefined ? "-" : formatBytes(b.storedBytes),
              b.coordinationMs === undefined ? "-" : `${b.coordinationMs} ms`,
              `${(b.durationMs / 1000).toFixed(1)} s`,
              b.recordsWritten,
            ]),
          ),
        );
        console.log(`\nAfter the failed run HEAD is still generation ${report.headAfterFailure}.`);
        console.log("\nRestores of every committed generation:");
        console.log(
          table(
            ["GEN", "BYTE-IDENTICAL", "WAL INVARIANT", "LOG RECORDS", "DATA RECORDS", "VERIFY"],
            report.restores.map((r) => [
              r.generation,
              `${r.volumesIdentical}/${r.volumes}`,
              r.invariantOk ? "holds" : "BROKEN",
              r.logRecords,
              r.dataRecords,
              r.verifyOk ? "ok" : "FAILED",
            ]),
          ),
        );
        console.log("\nRestores into EBS snapshots (read back through GetSnapshotBlock):");
        console.log(
          table(
            ["GEN", "BYTE-IDENTICAL", "BLOCKS WRITTEN", "ON PARENT", "SNAPSHOTS"],
            report.snapshotRestores.map((r) => [
              r.generation,
              `${r.volumesIdentical}/${r.volumes}`,
              r.blocksWritten,
              Object.keys(r.parents).length ? Object.values(r.parents).join(", ") : "-",
              r.snapshots.join(", "),
            ]),
          ),
        );
        if (report.reportPath) console.log(`\nHTML report of the group: ${report.reportPath}`);
        console.log(report.ok ? "\ndemo OK" : `\ndemo FAILED:\n- ${report.problems.join("\n- ")}`);
      }
      if (!report.ok) process.exitCode = 1;
    });
}
