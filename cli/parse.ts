import { InvalidArgumentError } from "commander";

export function parseNonNegativeInt(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError(`expected a whole number of 0 or more, got "${value}"`);
  }
  return Number(value);
}

export function parsePositiveInt(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value)) || Number(value) < 1) {
    throw new InvalidArgumentError(`expected a whole number of 1 or more, got "${value}"`);
  }
  return Number(value);
}

/** Generation numbers start at 1 (generation 0 is "nothing committed yet" and cannot be read). */
export function parseGeneration(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value)) || Number(value) < 1) {
    throw new InvalidArgumentError(
      `expected a generation number of 1 or more (see \`cgmirror status\`), got "${value}"`,
    );
  }
  return Number(value);
}
