import { InvalidArgumentError } from "commander";

export function parseNonNegativeInt(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError(`expected a whole number of 0 or more, got "${value}"`);
  }
  return Number(value);
}
