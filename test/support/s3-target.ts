/** Where the S3-dependent tests run: the local server, or another endpoint named by the environment. */
export interface S3Target {
  readonly endpoint?: string;
  readonly region: string;
  readonly accessKeyId?: string;
  readonly secretAccessKey?: string;
  readonly forcePathStyle: boolean;
  /** An existing versioned bucket to use instead of creating one per test file. */
  readonly bucket?: string;
  readonly external: boolean;
}

/**
 * CGM_S3_ENDPOINT (e.g. http://127.0.0.1:9000) runs the suite against another S3-compatible server;
 * CGM_S3_BUCKET (with AWS credentials from the usual chain) against an existing versioned bucket,
 * on AWS when CGM_S3_ENDPOINT is unset.
 */
export function s3TargetFromEnv(env: NodeJS.ProcessEnv): S3Target | undefined {
  const endpoint = env.CGM_S3_ENDPOINT;
  const bucket = env.CGM_S3_BUCKET;
  if (!endpoint && !bucket) return undefined;
  return {
    ...(endpoint ? { endpoint } : {}),
    region: env.CGM_S3_REGION ?? env.AWS_REGION ?? "us-east-1",
    ...(env.CGM_S3_ACCESS_KEY_ID ? { accessKeyId: env.CGM_S3_ACCESS_KEY_ID } : {}),
    ...(env.CGM_S3_SECRET_ACCESS_KEY ? { secretAccessKey: env.CGM_S3_SECRET_ACCESS_KEY } : {}),
    forcePathStyle: env.CGM_S3_FORCE_PATH_STYLE ? env.CGM_S3_FORCE_PATH_STYLE !== "false" : Boolean(endpoint),
    ...(bucket ? { bucket } : {}),
    external: true,
  };
}
