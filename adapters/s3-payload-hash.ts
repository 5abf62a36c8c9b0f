/**
 * S3 client middleware: when a request carries `ChecksumSHA256` (the body's SHA-256, which the
 * segment writer has already computed), use it as SigV4's `x-amz-content-sha256` instead of letting
 * the signer hash the body a second time. On plain-HTTP endpoints (the local S3 server) SigV4 signs
 * the payload; without this every segment byte would be hashed twice. The request stays fully signed
 * and S3 still verifies the body against both values.
 *
 * Owned by the transfer (issue 4); kept separate from adapters/s3-store.ts. Apply it to the client
 * that the transfer Lambda passes to S3ObjectStore: `usePrecomputedPayloadHash(new S3Client(...))`.
 */
import type { S3Client } from "@aws-sdk/client-s3";

const NAME = "cgmirrorPrecomputedPayloadHash";

export function usePrecomputedPayloadHash(client: S3Client): S3Client {
  if (client.middlewareStack.identify().some((m) => m.startsWith(NAME))) return client;
  client.middlewareStack.add(
    (next) => async (args) => {
      const input = args.input as { ChecksumSHA256?: unknown };
      const request = args.request as { headers?: Record<string, string> } | undefined;
      const sha = input.ChecksumSHA256;
      if (typeof sha === "string" && request?.headers && !("x-amz-content-sha256" in request.headers)) {
        const hex = Buffer.from(sha, "base64").toString("hex");
        if (hex.length === 64) request.headers["x-amz-content-sha256"] = hex;
      }
      return next(args);
    },
    { step: "build", name: NAME, priority: "low" },
  );
  return client;
}
