/** Options and helpers every command that touches the local stack shares (cheap to import). */
import { resolve } from "node:path";
import { Option } from "commander";
import { defaultStateDir } from "../local/names.ts";

export function stateDirOption(): Option {
  return new Option(
    "--state-dir <dir>",
    "the local stack's state directory (default: .cgmirror/ in the current directory, or $CGM_LOCAL_STATE_DIR)",
  );
}

export function stateDirOf(opts: { stateDir?: string }): string {
  return resolve(opts.stateDir ?? process.env.CGM_LOCAL_STATE_DIR ?? defaultStateDir());
}

/** --region / --profile: where AWS commands go (the SDKs' default chain otherwise). */
export function awsOptions(): Option[] {
  return [
    new Option("--region <region>", "AWS Region (default: $AWS_REGION or the profile's)"),
    new Option("--profile <name>", "AWS profile (default: $AWS_PROFILE or default)"),
  ];
}

/** Applies --region / --profile to the SDKs' default chain (before any client is created). */
export function applyAwsOptions(opts: { region?: string; profile?: string }): void {
  if (opts.region) process.env.AWS_REGION = opts.region;
  if (opts.profile) process.env.AWS_PROFILE = opts.profile;
}
