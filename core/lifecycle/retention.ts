/**
 * Retention policy (pure): which committed generations to keep, in the vocabulary of restic's
 * `forget` and Data Lifecycle Manager. Generations are ordered by their point in time, newest first;
 * every rule keeps generations independently and a generation is kept when any rule (or HEAD) keeps
 * it, so the reasons of each survivor can be shown.
 *
 * - `keepLast n`: the n newest generations.
 * - `keepHourly/Daily/Weekly/Monthly/Yearly n`: for the n newest hours (days, ISO weeks, months,
 *   years) that have a generation, the newest generation of each (calendar buckets in `timezone`).
 * - `keepWithin d`: every generation whose point in time is within `d` of the **newest** generation's
 *   (not of now: a group whose backups stopped does not lose its last generations), e.g. `7d`,
 *   `1y6m`, `36h`, `2w`.
 * - HEAD (the committed generation) is always kept.
 */
import { InvalidArgumentError } from "../errors.ts";

export interface RetentionPolicy {
  readonly keepLast?: number | undefined;
  readonly keepHourly?: number | undefined;
  readonly keepDaily?: number | undefined;
  readonly keepWeekly?: number | undefined;
  readonly keepMonthly?: number | undefined;
  readonly keepYearly?: number | undefined;
  /** A duration: a sequence of `<n>y`, `<n>m` (months), `<n>w`, `<n>d`, `<n>h`, e.g. `1y6m`, `36h`. */
  readonly keepWithin?: string | undefined;
  /** IANA time zone of the calendar buckets. @default "UTC" */
  readonly timezone?: string | undefined;
}

export interface RetentionCandidate {
  readonly generation: number;
  /** ISO 8601: when the group's point in time was taken. */
  readonly pointInTime: string;
}

export type KeepReason = "head" | "last" | "hourly" | "daily" | "weekly" | "monthly" | "yearly" | "within";

export interface RetentionDecision extends RetentionCandidate {
  readonly keep: boolean;
  /** Why it is kept (empty when it goes), e.g. ["last", "daily"]. */
  readonly reasons: readonly KeepReason[];
}

const BUCKET_RULES = [
  ["keepLast", "last"],
  ["keepHourly", "hourly"],
  ["keepDaily", "daily"],
  ["keepWeekly", "weekly"],
  ["keepMonthly", "monthly"],
  ["keepYearly", "yearly"],
] as const;

const DURATION = /^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?$/;

export interface ParsedDuration {
  readonly years: number;
  readonly months: number;
  readonly weeks: number;
  readonly days: number;
  readonly hours: number;
}

/** Parses a keep-within duration (`1y6m`, `14d`, `36h`, `2w`). */
export function parseRetentionDuration(text: string): ParsedDuration {
  const m = DURATION.exec(text);
  if (!m || text === "") {
    throw new InvalidArgumentError(
      `expected a duration such as "7d", "36h", "2w" or "1y6m" (units y, m, w, d, h in that order), got ${JSON.stringify(text)}`,
    );
  }
  const n = (i: number) => Number(m[i] ?? 0);
  return { years: n(1), months: n(2), weeks: n(3), days: n(4), hours: n(5) };
}

/** `time` minus the duration, with calendar years and months (UTC). */
export function subtractDuration(time: Date, d: ParsedDuration): Date {
  const t = new Date(time.getTime());
  if (d.years || d.months) t.setUTCMonth(t.getUTCMonth() - d.months - 12 * d.years);
  return new Date(t.getTime() - ((d.weeks * 7 + d.days) * 24 + d.hours) * 3_600_000);
}

/** True when the policy has at least one rule (an empty policy forgets nothing). */
export function hasRules(policy: RetentionPolicy): boolean {
  return BUCKET_RULES.some(([field]) => (policy[field] ?? 0) > 0) || !!policy.keepWithin;
}

function checkPolicy(policy: RetentionPolicy): void {
  for (const [field] of BUCKET_RULES) {
    const v = policy[field];
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) {
      throw new InvalidArgumentError(`expected ${field} to be a whole number of at least 0, got ${v}`);
    }
  }
  if (policy.keepWithin !== undefined) parseRetentionDuration(policy.keepWithin);
}

interface CalendarParts {
  year: number;
  month: number;
  day: number;
  hour: number;
}

function partsIn(timezone: string): (d: Date) => CalendarParts {
  if (timezone === "UTC") {
    return (d) => ({
      year: d.getUTCFullYear(),
      month: d.getUTCMonth() + 1,
      day: d.getUTCDate(),
      hour: d.getUTCHours(),
    });
  }
  let format: Intl.DateTimeFormat;
  try {
    format = new Intl.DateTimeFormat("en-US", {
      timeZone: timezone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
    });
  } catch (cause) {
    throw new InvalidArgumentError(`expected an IANA time zone such as "Europe/Berlin", got ${timezone}`, {
      cause,
    });
  }
  return (d) => {
    const p = Object.fromEntries(format.formatToParts(d).map((x) => [x.type, x.value]));
    return { year: Number(p.year), month: Number(p.month), day: Number(p.day), hour: Number(p.hour) };
  };
}

/** ISO 8601 week-numbering year and week of a calendar date. */
function isoWeek(year: number, month: number, day: number): string {
  const d = new Date(Date.UTC(year, month - 1, day));
  const dow = (d.getUTCDay() + 6) % 7; // Monday = 0
  d.setUTCDate(d.getUTCDate() - dow + 3); // Thursday of this week
  const weekYear = d.getUTCFullYear();
  const firstThursday = new Date(Date.UTC(weekYear, 0, 4));
  firstThursday.setUTCDate(firstThursday.getUTCDate() - ((firstThursday.getUTCDay() + 6) % 7) + 3);
  const week = 1 + Math.round((d.getTime() - firstThursday.getTime()) / (7 * 86_400_000));
  return `${weekYear}-W${week}`;
}

/**
 * Applies a policy. Returns one decision per candidate, newest first. `head` is always kept.
 * @throws InvalidArgumentError for a malformed policy
 */
export function applyRetention(
  candidates: readonly RetentionCandidate[],
  policy: RetentionPolicy,
  head: number | undefined,
): RetentionDecision[] {
  checkPolicy(policy);
  const parts = partsIn(policy.timezone ?? "UTC");
  const sorted = [...candidates].sort(
    (a, b) => Date.parse(b.pointInTime) - Date.parse(a.pointInTime) || b.generation - a.generation,
  );
  const newest = sorted[0] ? new Date(sorted[0].pointInTime) : undefined;
  const within =
    policy.keepWithin && newest
      ? subtractDuration(newest, parseRetentionDuration(policy.keepWithin)).getTime()
      : undefined;
  const left = new Map<KeepReason, number>(
    BUCKET_RULES.map(([field, reason]) => [reason, policy[field] ?? 0]),
  );
  const last = new Map<KeepReason, string>();
  return sorted.map((c) => {
    const reasons: KeepReason[] = [];
    if (c.generation === head) reasons.push("head");
    const t = new Date(c.pointInTime);
    const p = parts(t);
    const bucket: Record<string, string> = {
      last: String(c.generation),
      hourly: `${p.year}-${p.month}-${p.day} ${p.hour}`,
      daily: `${p.year}-${p.month}-${p.day}`,
      weekly: isoWeek(p.year, p.month, p.day),
      monthly: `${p.year}-${p.month}`,
      yearly: `${p.year}`,
    };
    for (const [, reason] of BUCKET_RULES) {
      const n = left.get(reason)!;
      if (n <= 0) continue;
      const b = bucket[reason]!;
      if (last.get(reason) === b) continue;
      last.set(reason, b);
      left.set(reason, n - 1);
      reasons.push(reason);
    }
    if (within !== undefined && t.getTime() >= within) reasons.push("within");
    return { ...c, keep: reasons.length > 0, reasons };
  });
}
