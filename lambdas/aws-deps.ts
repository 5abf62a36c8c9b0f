/**
 * TaskDeps over AWS: SDK clients created once per container from the environment (read on the first
 * invocation, which is the cold start), adapters wired around them.
 *
 * Environment: AWS_REGION (set by Lambda), POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE
 * (set by the stack). CGM_STACK_NAME (the snapshot tasks: tags and finds only the stack's own
 * snapshots), CGM_FREEZE_DOCUMENT / CGM_THAW_DOCUMENT (Snapshot, when a group freezes: the stack's SSM
 * documents). Optional endpoint overrides for local runs: S3_ENDPOINT (path-style), EBS_ENDPOINT,
 * EC2_ENDPOINT, SSM_ENDPOINT, SFN_ENDPOINT.
 */
import { Logger } from "@aws-lambda-powertools/logger";
import { Metrics, MetricUnit } from "@aws-lambda-powertools/metrics";
import { EC2Client } from "@aws-sdk/client-ec2";
import { S3Client } from "@aws-sdk/client-s3";
import { SFNClient } from "@aws-sdk/client-sfn";
import { SSMClient } from "@aws-sdk/client-ssm";
import { createEbsClient, EbsBlockSource } from "#adapters/ebs-source.ts";
import { EbsSnapshotWriter, ec2SnapshotCatalog } from "#adapters/ebs-writer.ts";
import { Ec2Snapshots } from "#adapters/ec2-snapshots.ts";
import { usePrecomputedPayloadHash } from "#adapters/s3-payload-hash.ts";
import { S3ObjectStore } from "#adapters/s3-store.ts";
import { SfnRunStatus } from "#adapters/sfn-execution.ts";
import { SsmFreeze } from "#adapters/ssm-freeze.ts";
import type { BlockSource } from "#core/ports/block-source.ts";
import type { ObjectStore } from "#core/ports/object-store.ts";
import type { SnapshotWriter } from "#core/ports/snapshot-writer.ts";
import type { FreezePort, SnapshotPort } from "#core/protocol/snapshot-group.ts";
import { optionalEnv, requireEnv } from "./env.ts";
import { once, type TaskDeps } from "./runtime.ts";

export function createAwsDeps(env: Readonly<Record<string, string | undefined>> = process.env): TaskDeps {
  const region = requireEnv(env, "AWS_REGION");
  const serviceName = requireEnv(env, "POWERTOOLS_SERVICE_NAME");
  const namespace = requireEnv(env, "POWERTOOLS_METRICS_NAMESPACE");
  const s3Endpoint = optionalEnv(env, "S3_ENDPOINT");
  const ebsEndpoint = optionalEnv(env, "EBS_ENDPOINT");
  const ec2Endpoint = optionalEnv(env, "EC2_ENDPOINT");
  const ssmEndpoint = optionalEnv(env, "SSM_ENDPOINT");
  const sfnEndpoint = optionalEnv(env, "SFN_ENDPOINT");
  const stackName = optionalEnv(env, "CGM_STACK_NAME");
  const freezeDocument = optionalEnv(env, "CGM_FREEZE_DOCUMENT");
  const thawDocument = optionalEnv(env, "CGM_THAW_DOCUMENT");

  const logger = new Logger({ serviceName });
  const metrics = new Metrics({ namespace, serviceName });
  const s3 = once(() =>
    usePrecomputedPayloadHash(
      new S3Client({
        region,
        ...(s3Endpoint ? { endpoint: s3Endpoint, forcePathStyle: true } : {}),
      }),
    ),
  );
  const stores = new Map<string, ObjectStore>();
  const source = once<BlockSource>(
    () => new EbsBlockSource(createEbsClient({ region, ...(ebsEndpoint ? { endpoint: ebsEndpoint } : {}) })),
  );
  const ec2 = once(() => new EC2Client({ region, ...(ec2Endpoint ? { endpoint: ec2Endpoint } : {}) }));
  const snapshotWriter = once<SnapshotWriter>(
    () =>
      new EbsSnapshotWriter({
        client: createEbsClient({ region, ...(ebsEndpoint ? { endpoint: ebsEndpoint } : {}) }),
        catalog: ec2SnapshotCatalog(ec2()),
      }),
  );
  const snapshots = once<SnapshotPort>(
    () =>
      new Ec2Snapshots({
        client: ec2(),
        ...(stackName ? { stackName } : {}),
      }),
  );
  const freeze = once<FreezePort>(() => {
    if (!freezeDocument || !thawDocument) {
      throw new Error(
        "CGM_FREEZE_DOCUMENT and CGM_THAW_DOCUMENT are not set: the stack creates its freeze documents only " +
          "for groups with freeze.enabled; deploy again after enabling freeze in the config",
      );
    }
    return new SsmFreeze({
      client: new SSMClient({ region, ...(ssmEndpoint ? { endpoint: ssmEndpoint } : {}) }),
      freezeDocument,
      thawDocument,
    });
  });
  const sfn = once(() => new SFNClient({ region, ...(sfnEndpoint ? { endpoint: sfnEndpoint } : {}) }));
  const units = {
    Count: MetricUnit.Count,
    Milliseconds: MetricUnit.Milliseconds,
    Seconds: MetricUnit.Seconds,
    Bytes: MetricUnit.Bytes,
  } as const;

  return {
    store(bucket) {
      let store = stores.get(bucket);
      if (!store) {
        store = new S3ObjectStore({ client: s3(), bucket });
        stores.set(bucket, store);
      }
      return store;
    },
    blockSource: source,
    snapshots,
    snapshotWriter,
    freeze,
    runStatus: (stateMachineArn) =>
      new SfnRunStatus({
        client: sfn(),
        stateMachineArn,
        onUnknown: (runId, why) => logger.info("lock holder's execution state unknown", { runId, why }),
      }),
    clock: { now: () => Date.now() },
    log: {
      info: (m, e) => logger.info(m, e ?? {}),
      warn: (m, e) => logger.warn(m, e ?? {}),
      error: (m, e) => logger.error(m, e ?? {}),
    },
    metrics: {
      add(group, name, unit, value) {
        const single = metrics.singleMetric();
        single.addDimension("Group", group);
        single.addMetric(name, units[unit], value);
      },
      flush() {
        // singleMetric() publishes on addMetric; nothing is buffered.
      },
    },
  };
}

/** The deps of the deployed functions: created on the first invocation, then reused. */
export const awsDeps = once(() => createAwsDeps());
