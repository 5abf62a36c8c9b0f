/** SDK clients and the volume simulator over a local stack: what the demo, the CLI and tests share. */
import { EBSClient } from "@aws-sdk/client-ebs";
import { S3Client } from "@aws-sdk/client-s3";
import type { LocalEndpoints } from "./stack.ts";
import { VolumeSimulator } from "./volumes/simulator.ts";

export interface LocalClients {
  readonly ebs: EBSClient;
  readonly s3: S3Client;
  readonly simulator: VolumeSimulator;
  destroy(): void;
}

export function localClients(e: LocalEndpoints): LocalClients {
  const credentials = { accessKeyId: e.accessKeyId, secretAccessKey: e.secretAccessKey };
  const ebs = new EBSClient({ endpoint: e.ebsEndpoint, region: e.region, credentials });
  const s3 = new S3Client({ endpoint: e.s3Endpoint, region: e.region, forcePathStyle: true, credentials });
  return {
    ebs,
    s3,
    simulator: new VolumeSimulator({ stateDir: e.stateDir, ebs }),
    destroy() {
      ebs.destroy();
      s3.destroy();
    },
  };
}
