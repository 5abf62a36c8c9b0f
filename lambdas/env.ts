/** Environment read once per container, through helpers that say exactly what is missing. */

import { namedError } from "#core/util/named-error.ts";

/** A variable the handler is a misconfiguration without. */
export class MissingEnvironmentError extends namedError("MissingEnvironmentError") {}

export function requireEnv(env: Readonly<Record<string, string | undefined>>, name: string): string {
  const value = env[name];
  if (value === undefined || value.trim() === "") {
    throw new MissingEnvironmentError(
      `environment variable ${name} is not set; the CDK stack (infra/) sets it, a local runner must set it too`,
    );
  }
  return value;
}

export function optionalEnv(
  env: Readonly<Record<string, string | undefined>>,
  name: string,
): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === "" ? undefined : value;
}
