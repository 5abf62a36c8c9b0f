/**
 * The lean GetSnapshotBlock's pieces that need no network: its SigV4 signature equals the SDK's
 * signer's for the same request, and error responses are shaped as the SDK shapes them.
 */
import { EBSClient } from "@aws-sdk/client-ebs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GetSigner, serviceError } from "#adapters/ebs-get-block.ts";
import { mapEbsError } from "#adapters/ebs-source.ts";

interface SdkSigner {
  sign(request: unknown, options: { signingDate: Date }): Promise<{ headers: Record<string, string> }>;
}

async function sdkSign(
  region: string,
  credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string },
  host: string,
  path: string,
  token: string,
  date: Date,
): Promise<Record<string, string>> {
  const client = new EBSClient({ region, credentials });
  const signer = (await (client.config as unknown as { signer: (o: unknown) => Promise<SdkSigner> }).signer(
    {},
  )) as SdkSigner;
  const [hostname, port] = host.split(":");
  const signed = await signer.sign(
    {
      method: "GET",
      protocol: "https:",
      hostname,
      ...(port ? { port: Number(port) } : {}),
      path,
      query: { blockToken: token },
      headers: { host },
    },
    { signingDate: date },
  );
  client.destroy();
  return signed.headers;
}

describe("GetSigner", () => {
  it("GIVEN any token, date and credentials THEN the Authorization equals the SDK signer's", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.string({ minLength: 1, maxLength: 80 }),
        fc.integer({ min: 1_600_000_000_000, max: 1_900_000_000_000 }),
        fc.boolean(),
        fc.constantFrom("us-east-1", "eu-central-2"),
        fc.constantFrom("ebs.us-east-1.amazonaws.com", "127.0.0.1:4510"),
        async (token, ms, session, region, host) => {
          const credentials = {
            accessKeyId: "AKIDEXAMPLE",
            secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            ...(session ? { sessionToken: "IQoJb3JpZ2luX2VjE+/=token" } : {}),
          };
          const date = new Date(ms);
          const path = "/snapshots/snap-0123456789abcdef0/blocks/4096";
          const ours = new GetSigner(region).sign(host, path, { blockToken: token }, credentials, date);
          const theirs = await sdkSign(region, credentials, host, path, token, date);
          expect(ours.headers.authorization).toBe(theirs.authorization);
          expect(ours.headers["x-amz-date"]).toBe(theirs["x-amz-date"]);
          expect(ours.headers["x-amz-security-token"]).toBe(theirs["x-amz-security-token"]);
          expect(ours.path.startsWith(`${path}?blockToken=`)).toBe(true);
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe("lean GetSnapshotBlock errors", () => {
  const map = (status: number, headers: Record<string, string>, body: string) =>
    mapEbsError("GetSnapshotBlock", serviceError(status, headers, Buffer.from(body)));

  it("GIVEN RequestThrottledException THEN it maps to throttled", () => {
    const e = map(
      400,
      { "x-amzn-errortype": "RequestThrottledException:http://internal.amazon.com/coral/" },
      '{"Message":"slow down","Reason":"RESOURCE_LEVEL_THROTTLE"}',
    );
    expect([e.kind, e.code]).toEqual(["throttled", "RequestThrottledException"]);
  });

  it("GIVEN ValidationException INVALID_BLOCK_TOKEN THEN it maps to token-expired", () => {
    const e = map(
      400,
      { "x-amzn-errortype": "ValidationException" },
      '{"Message":"x","Reason":"INVALID_BLOCK_TOKEN"}',
    );
    expect([e.kind, e.code]).toEqual(["token-expired", "ValidationException"]);
  });

  it("GIVEN a 502 with an HTML body and no error type THEN it is transient", () => {
    const e = map(502, {}, "<html>bad gateway</html>");
    expect([e.kind, e.code]).toEqual(["transient", "UnknownError"]);
  });

  it("GIVEN a body-only error code (ns#Name) THEN the name is taken from it", () => {
    const e = map(403, {}, '{"__type":"com.amazon.ebs#AccessDeniedException","message":"no"}');
    expect([e.kind, e.code]).toEqual(["fatal", "AccessDeniedException"]);
  });
});
