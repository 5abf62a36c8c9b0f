/**
 * The repository: one versioned, SSE-KMS encrypted bucket per distinct `target.bucket` of the groups,
 * their key, and the bucket their server access logs go to. Everything here is retained when the
 * stack is deleted (docs/operations.md, "Tear-down").
 */
import { Duration, RemovalPolicy, Validations } from "aws-cdk-lib";
import * as kms from "aws-cdk-lib/aws-kms";
import * as s3 from "aws-cdk-lib/aws-s3";
import type { Construct } from "constructs";
import type { GroupConfig } from "#core/config/group-config.ts";
import { ACCEPTED_FINDINGS } from "./accepted-findings.ts";
import { StackPart } from "./stack-part.ts";

export interface RepositoryProps {
  /** The groups whose `target.bucket`s this creates (one bucket per distinct name). */
  readonly groups: readonly GroupConfig[];
  /**
   * Enable S3 Object Lock on every bucket, not only those of groups with `target.objectLock`
   * (never a default retention: Revert deletes exact versions).
   * @default false
   */
  readonly objectLock?: boolean;
}

export class Repository extends StackPart {
  /** Encrypts every repository bucket (bucket keys on). */
  readonly key: kms.Key;
  /** Receives the repository buckets' server access logs, one prefix per bucket. */
  readonly accessLogs: s3.Bucket;
  /** The repository buckets by name, in the order the groups first name them. */
  readonly buckets: ReadonlyMap<string, s3.Bucket>;

  constructor(scope: Construct, id: string, props: RepositoryProps) {
    super(scope, id);
    this.key = new kms.Key(this, "RepositoryKey", {
      description: "cgmirror: SSE-KMS key of the repository bucket(s)",
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.accessLogs = new s3.Bucket(this, "AccessLogs", {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [{ id: "expire-access-logs", expiration: Duration.days(365) }],
    });
    Validations.of(this.accessLogs).acknowledge({
      id: "AwsSolutions-S1",
      reason: ACCEPTED_FINDINGS.accessLogBucket,
    });

    const byBucket = new Map<string, GroupConfig[]>();
    for (const g of props.groups)
      byBucket.set(g.target.bucket, [...(byBucket.get(g.target.bucket) ?? []), g]);
    const buckets = new Map<string, s3.Bucket>();
    for (const [bucketName, members] of byBucket) {
      const index = buckets.size;
      const bucket = new s3.Bucket(this, index === 0 ? "Repository" : `Repository${index}`, {
        bucketName,
        versioned: true,
        encryption: s3.BucketEncryption.KMS,
        encryptionKey: this.key,
        bucketKeyEnabled: true,
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
        enforceSSL: true,
        minimumTLSVersion: 1.2,
        objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        serverAccessLogsBucket: this.accessLogs,
        serverAccessLogsPrefix: `${bucketName}/`,
        // A group with target.objectLock needs it; never a default retention (Revert deletes what a
        // failed run wrote: only committed objects are locked, by Commit).
        objectLockEnabled:
          (props.objectLock ?? false) || members.some((g) => g.target.objectLock !== undefined),
        removalPolicy: RemovalPolicy.RETAIN,
        lifecycleRules: repositoryLifecycle(members),
      });
      buckets.set(bucketName, bucket);
    }
    this.buckets = buckets;
  }
}

/**
 * Lifecycle of a repository bucket. Nothing that a committed generation can still name ever expires:
 * index roots (`volumes/`), manifests (`generations/`) and segments (`segments/`) are deleted only
 * by cgmirror itself (revert, prune) by exact version id. What lifecycle may clean:
 * - noncurrent versions of the lock object (one per acquire/release; only the current one matters),
 * - objects under `runs/` (transient per-run plans, shard results and progress, deleted by
 *   ReleaseLock/Revert/Recover; what a crash, a timeout or a stopped housekeeping left is unreachable
 *   from any manifest): current versions expire two days after the longest run can have ended (the
 *   group's run timeout), noncurrent ones a week later,
 * - old noncurrent versions of HEAD (history; each manifest names its generation),
 * - incomplete multipart uploads (a Transfer that died mid-segment),
 * - expired delete markers.
 */
export function repositoryLifecycle(groups: readonly GroupConfig[]): s3.LifecycleRule[] {
  const rules: s3.LifecycleRule[] = [
    { id: "abort-incomplete-multipart", abortIncompleteMultipartUploadAfter: Duration.days(7) },
    { id: "remove-expired-delete-markers", expiredObjectDeleteMarker: true },
  ];
  for (const g of groups) {
    rules.push(
      {
        id: `${g.group}-lock-history`,
        prefix: `${g.target.prefix}/locks/`,
        noncurrentVersionExpiration: Duration.days(1),
      },
      {
        id: `${g.group}-run-scratch`,
        prefix: `${g.target.prefix}/runs/`,
        // A backstop: no run lives longer than its run timeout, so its files are garbage by then.
        expiration: Duration.days(runScratchDays(g)),
        noncurrentVersionExpiration: Duration.days(7),
      },
      {
        id: `${g.group}-head-history`,
        prefix: `${g.target.prefix}/HEAD`,
        noncurrentVersionExpiration: Duration.days(90),
        noncurrentVersionsToRetain: 10,
      },
    );
  }
  return rules;
}

/** Days after which a current object under `runs/` is surely garbage: the run timeout, plus 2 days. */
export function runScratchDays(g: Pick<GroupConfig, "runTimeoutMinutes">): number {
  return Math.ceil(g.runTimeoutMinutes / 1440) + 2;
}
