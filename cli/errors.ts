/**
 * The CLI's exit codes (one table for every command; README and docs/operations.md print it) and the
 * translation of every foreseeable failure into one line naming the cause and the fix.
 */

/** Exit codes of every `cgmirror` command. */
export const ExitCode = {
  /** Success (a backup committed, or was skipped because another live run holds the lock). */
  ok: 0,
  /** The command ran and failed: a backup reverted (or its revert failed), verify found damage, data failed a check. */
  failed: 1,
  /** Usage or input error: bad arguments, config, ids or generation numbers. Nothing was done. */
  usage: 2,
  /** backup: the group IS committed, only the lock release failed (the next run takes the lock over). */
  releaseFailed: 3,
  /** backup/watch: the execution timed out without reverting. */
  timedOut: 4,
  /** backup/watch: the execution was stopped (StopExecution) without reverting. */
  aborted: 5,
  /** The environment: no AWS Region or credentials, access denied, an endpoint that cannot be reached, a missing prerequisite. */
  environment: 6,
  /** Busy: a live run holds the group's lock, or another command is using the local stack's state directory. */
  busy: 7,
  /** Interrupted (Ctrl-C). */
  interrupted: 130,
} as const;

export type ExitCodeName = keyof typeof ExitCode;

/** The exit code table as README and docs/operations.md print it (a test keeps them in step). */
export const EXIT_CODE_TABLE: readonly { code: number; meaning: string }[] = [
  { code: 0, meaning: "success (backup: committed, or skipped because another live run holds the lock)" },
  {
    code: 1,
    meaning:
      "the command ran and failed: the backup reverted (or its revert failed), verify/repair found a problem, data failed a check",
  },
  { code: 2, meaning: "usage or input error (arguments, config, ids, generation numbers); nothing was done" },
  {
    code: 3,
    meaning:
      "backup: the group IS committed, only releasing the lock failed (the next run takes the lock over)",
  },
  { code: 4, meaning: "backup/watch: the execution timed out and stopped without reverting" },
  { code: 5, meaning: "backup/watch: the execution was aborted (StopExecution) without reverting" },
  {
    code: 6,
    meaning:
      "environment: no AWS Region or credentials, access denied, an endpoint that cannot be reached, a missing prerequisite",
  },
  {
    code: 7,
    meaning:
      "busy: a live run holds the group's lock, or another command uses the local stack's state directory",
  },
  { code: 130, meaning: "interrupted (Ctrl-C)" },
];

/** An error whose message is written for the user, with the exit code it ends the command with. */
export class CliError extends Error {
  override readonly name: string = "CliError";
  readonly exitCode: number;
  constructor(message: string, exitCode: number, options?: ErrorOptions) {
    super(message, options);
    this.exitCode = exitCode;
  }
}

/** Bad arguments or input (exit 2). */
export class UsageError extends CliError {
  override readonly name = "UsageError";
  constructor(message: string, options?: ErrorOptions) {
    super(message, ExitCode.usage, options);
  }
}

/** The environment is not ready: Region, credentials, permissions, network, prerequisites (exit 6). */
export class EnvironmentError extends CliError {
  override readonly name = "EnvironmentError";
  constructor(message: string, options?: ErrorOptions) {
    super(message, ExitCode.environment, options);
  }
}

/** Someone else holds what the command needs (exit 7). */
export class BusyError extends CliError {
  override readonly name = "BusyError";
  constructor(message: string, options?: ErrorOptions) {
    super(message, ExitCode.busy, options);
  }
}

/** Error names (of core/, local/ and the CLI) whose message already says what is wrong, by exit code. */
const INPUT_ERRORS =
  /^(GroupConfig|InvalidArgument|GenerationNotFound|RestoreTarget|VolumeSimulator|EbsFaultConfig|RunIdReused|Runner|InjectedFailureSpec)\w*Error$/;
const DATA_ERRORS =
  /^(Corrupt|BlockIntegrity|UnsupportedFormat|RepositoryState|CommitConflict|Verify|Restore|Backup|Demo|VolumeShrunk|LockLost|Format|Prune)\w*Error$/;
const ENV_ERRORS = /^(Prerequisite|EbsAdmin|LocalStackStart)\w*Error$/;
const BUSY_ERRORS = /^(LockHeld|LocalStackBusy)\w*Error$/;

interface AwsErrorLike {
  name?: string;
  code?: string;
  message?: string;
  syscall?: string;
  address?: string;
  port?: number;
  hostname?: string;
  $metadata?: { httpStatusCode?: number };
  $fault?: string;
  Endpoint?: string;
  Region?: string;
  BucketName?: string;
}

const HINT_LOCAL = "or add --local to use the embedded local stack";

function networkCode(err: AwsErrorLike): string | undefined {
  const codes = ["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH"];
  if (err.code && codes.includes(err.code)) return err.code;
  const inner = (err as { cause?: AwsErrorLike }).cause;
  if (inner?.code && codes.includes(inner.code)) return inner.code;
  const m = /\b(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ECONNRESET|ETIMEDOUT|EHOSTUNREACH)\b/.exec(
    err.message ?? "",
  );
  return m?.[1];
}

/**
 * Turns any error into a CliError with one line naming the cause and the fix. Returns undefined only
 * for errors nothing here recognises (a bug: the caller prints it as an internal error).
 */
export function toCliError(error: unknown, context: { bucket?: string } = {}): CliError | undefined {
  if (error instanceof CliError) return error;
  if (!(error instanceof Error)) return undefined;
  const err = error as Error & AwsErrorLike;
  const name = err.name || err.constructor.name;
  const message = err.message ?? String(err);
  if (INPUT_ERRORS.test(name) || INPUT_ERRORS.test(err.constructor.name)) {
    return new CliError(message, ExitCode.usage, { cause: error });
  }
  if (BUSY_ERRORS.test(name)) return new CliError(message, ExitCode.busy, { cause: error });
  if (ENV_ERRORS.test(name)) return new CliError(message, ExitCode.environment, { cause: error });
  if (DATA_ERRORS.test(name) || DATA_ERRORS.test(err.constructor.name)) {
    return new CliError(message, ExitCode.failed, { cause: error });
  }
  // ---- AWS SDK and network
  const badRegion = /Region not accepted: region="([^"]*)"/.exec(message);
  if (badRegion?.[1]) {
    return new EnvironmentError(
      `"${badRegion[1]}" is not an AWS Region: give --region (e.g. eu-west-1) or fix AWS_REGION`,
      { cause: error },
    );
  }
  if (
    /Region is missing|Region not accepted/i.test(message) ||
    (name === "ConfigError" && /region/i.test(message))
  ) {
    return new EnvironmentError(
      `no AWS Region is set: give --region, set AWS_REGION, or use a profile that has one (AWS_PROFILE, aws configure); ${HINT_LOCAL}`,
      { cause: error },
    );
  }
  if (name === "CredentialsProviderError" || /Could not load credentials/i.test(message)) {
    return new EnvironmentError(
      `no AWS credentials were found: set AWS_PROFILE (aws configure / aws sso login) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; ${HINT_LOCAL}`,
      { cause: error },
    );
  }
  if (/^(ExpiredToken|ExpiredTokenException|TokenRefreshRequired|RequestExpired)$/.test(name)) {
    return new EnvironmentError(
      `your AWS credentials have expired (${name}): refresh them (e.g. aws sso login) and run the command again`,
      { cause: error },
    );
  }
  if (
    /^(InvalidAccessKeyId|SignatureDoesNotMatch|UnrecognizedClientException|InvalidClientTokenId|InvalidSignatureException)$/.test(
      name,
    )
  ) {
    return new EnvironmentError(
      `AWS rejected the credentials (${name}): check AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY`,
      { cause: error },
    );
  }
  if (
    /^(AccessDenied|AccessDeniedException|Forbidden|AllAccessDisabled)$/.test(name) ||
    err.$metadata?.httpStatusCode === 403
  ) {
    return new EnvironmentError(
      `access denied (${name}${message && message !== name ? `: ${message}` : ""}); the operator policy in README.md ("IAM") lists what cgmirror needs`,
      { cause: error },
    );
  }
  if (name === "NoSuchBucket") {
    const bucket = err.BucketName ?? context.bucket;
    return new UsageError(
      `bucket ${bucket ?? "(unknown)"} does not exist: check --bucket (or the config's target.bucket) and the Region`,
      { cause: error },
    );
  }
  if (
    /^(PermanentRedirect|AuthorizationHeaderMalformed|IllegalLocationConstraintException)$/.test(name) ||
    err.$metadata?.httpStatusCode === 301
  ) {
    const region = err.Region ?? /expecting '([a-z0-9-]+)'/.exec(message)?.[1];
    return new EnvironmentError(
      `bucket ${context.bucket ?? ""} is in another Region${region ? ` (${region})` : ""}: give --region${region ? ` ${region}` : ""} or set AWS_REGION`.replace(
        "bucket  is",
        "the bucket is",
      ),
      { cause: error },
    );
  }
  if (/^(ExecutionDoesNotExist|StateMachineDoesNotExist|InvalidArn)$/.test(name)) {
    return new UsageError(`${message} (${name})`, { cause: error });
  }
  const net = networkCode(err);
  if (net || name === "TimeoutError") {
    const where = err.address
      ? `${err.address}${err.port ? `:${err.port}` : ""}`
      : (err.hostname ?? "the endpoint");
    return new EnvironmentError(
      `cannot reach ${where} (${net ?? name}): if it is the local stack, start it with \`npx cgmirror local up\` (or add --local); otherwise check the network and the endpoint variables (CGM_S3_ENDPOINT, AWS_ENDPOINT_URL_S3)`,
      { cause: error },
    );
  }
  if (
    /^(ThrottlingException|Throttling|SlowDown|TooManyRequestsException|RequestLimitExceeded)$/.test(name)
  ) {
    return new EnvironmentError(`AWS throttled the request (${name}); try again in a minute`, {
      cause: error,
    });
  }
  return undefined;
}
