/**
 * S3 client middleware: never let SigV4 hash a body whose integrity is already covered.
 *
 * - A request that carries `ChecksumSHA256` (the body's SHA-256, computed by the caller) uses it as
 *   SigV4's `x-amz-content-sha256` instead of the signer hashing the body a second time.
 * - A request that carries a CRC full-object checksum (`ChecksumCRC32`, `ChecksumCRC32C`,
 *   `ChecksumCRC64NVME`; the segment writer sends a CRC-32) is signed with `UNSIGNED-PAYLOAD`: S3
 *   verifies the body against the (signed) checksum header, TLS protects it in transit, and no
 *   SHA-256 pass over the body is made at all. S3 documents UNSIGNED-PAYLOAD for single-chunk
 *   uploads; the local S3 server (Versity S3 Gateway) accepts it.
 *
 * Without this the SDK's signer hashes every Uint8Array body (`applyChecksum`), i.e. one more SHA-256
 * over every segment byte (≈ 0.7 CPU-s per GiB on the development machine).
 *
 * Owned by the transfer (issue 4); kept separate from adapters/s3-store.ts. Apply it to the client
 * that the transfer Lambda passes to S3ObjectStore: `usePrecomputedPayloadHash(new S3Client(...))`.
 */
import type { S3Client } from "@aws-sdk/client-s3";

const NAME = "cgmirrorPrecomputedPayloadHash";
const CRC_INPUTS = ["ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME"] as const;

export function usePrecomputedPayloadHash(client: S3Client): S3Client {
  if (client.middlewareStack.identify().some((m) => m.startsWith(NAME))) return client;
  client.middlewareStack.add(
    (next) => async (args) => {
      const input = args.input as Record<string, unknown>;
      const request = args.request as { headers?: Record<string, string> } | undefined;
      if (request?.headers && !("x-amz-content-sha256" in request.headers)) {
        const sha = input.ChecksumSHA256;
        if (typeof sha === "string") {
          const hex = Buffer.from(sha, "base64").toString("hex");
          if (hex.length === 64) request.headers["x-amz-content-sha256"] = hex;
        } else if (CRC_INPUTS.some((k) => typeof input[k] === "string")) {
          request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD";
        }
      }
      return next(args);
    },
    { step: "build", name: NAME, priority: "low" },
  );
  return client;
}
