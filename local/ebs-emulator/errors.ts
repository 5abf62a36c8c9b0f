/** The EBS direct API error names the emulator answers with, and their HTTP statuses (per the SDK model). */
export const EBS_ERROR_STATUS = {
  AccessDeniedException: 403,
  ConcurrentLimitExceededException: 400,
  ConflictException: 409,
  InternalServerException: 500,
  RequestThrottledException: 400,
  ResourceNotFoundException: 404,
  ServiceQuotaExceededException: 402,
  ThrottlingException: 400,
  ValidationException: 400,
} as const;

export type EbsErrorName = keyof typeof EBS_ERROR_STATUS;

/** An error answered to the client as an AWS-style JSON error (x-amzn-ErrorType + {Message, Reason}). */
export class EbsApiError extends Error {
  override readonly name = "EbsApiError";
  readonly errorName: EbsErrorName;
  readonly reason: string | undefined;
  readonly status: number;

  constructor(errorName: EbsErrorName, message: string, reason?: string, options?: ErrorOptions) {
    super(message, options);
    this.errorName = errorName;
    this.reason = reason;
    this.status = EBS_ERROR_STATUS[errorName];
  }
}

export function validation(reason: string, message: string): EbsApiError {
  return new EbsApiError("ValidationException", message, reason);
}

export function notFound(snapshotId: string): EbsApiError {
  return new EbsApiError(
    "ResourceNotFoundException",
    `snapshot ${snapshotId} does not exist`,
    "SNAPSHOT_NOT_FOUND",
  );
}
