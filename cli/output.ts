/** Output helpers: one clear line for a user's mistake, never a stack trace; JSON when asked. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** Error names whose message is written for the user (bad input, missing prerequisite, failed run). */
const USER_FACING =
  /(Usage|Prerequisite|VolumeSimulator|GroupConfig|InvalidArgument|Format|Corrupt|NotFound|Restore|Verify|EbsAdmin|EbsFaultConfig|Repo|Lock|BlockIntegrity|UnsupportedFormat|CommitConflict|Backup|Demo|Runner|Generation|RunIdReused|VolumeShrunk|Prune)\w*Error$/;

export function isUserFacing(err: unknown): err is Error {
  return err instanceof Error && (USER_FACING.test(err.name) || USER_FACING.test(err.constructor.name));
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

/** A fixed-width text table. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}
