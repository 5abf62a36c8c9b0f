/**
 * Least privilege per backup task (DESIGN.md section 2; docs/operations.md, "Permissions"): S3 access
 * per repository area as `TASK_S3_ACCESS` says, EBS direct reads only on snapshots tagged for this
 * deployment's groups, and snapshot deletes only of snapshots this stack created of configured volumes.
 */
import { Aws } from "aws-cdk-lib";
import * as iam from "aws-cdk-lib/aws-iam";
import type * as kms from "aws-cdk-lib/aws-kms";
import type * as nodejs from "aws-cdk-lib/aws-lambda-nodejs";
import type * as ssm from "aws-cdk-lib/aws-ssm";
import type { GroupConfig } from "#core/config/group-config.ts";
import { SNAPSHOT_TAGS } from "#core/protocol/snapshot-group.ts";
import type { TaskName } from "#workflows/tasks.ts";
import type { FreezeDocuments } from "./freeze-documents.ts";
import { areaPattern, OBJECT_LOCK_AREAS, type RepositoryArea, TASK_S3_ACCESS } from "./repository-access.ts";

export interface TaskPermissionsProps {
  readonly groups: readonly GroupConfig[];
  /** The repository buckets' key (SSE-KMS through S3 only). */
  readonly repositoryKey: kms.IKey;
  /** The stack's name: snapshots it creates carry it, and only those may be deleted. */
  readonly stackName: string;
  /**
   * The freeze/thaw documents the Snapshot task may run.
   * @default no freeze permissions
   */
  readonly freezeDocuments?: FreezeDocuments;
}

/** ARNs and conditions every statement builder shares. */
interface Scope {
  readonly props: TaskPermissionsProps;
  readonly groupNames: readonly string[];
  readonly volumes: readonly GroupConfig["volumes"][number][];
  readonly snapshotArn: string;
  readonly ec2Arn: (type: string, id: string) => string;
  /** The object ARNs of these areas under every group's prefix (or only `groups`'). */
  readonly areaArns: (areas: readonly RepositoryArea[], groups?: readonly GroupConfig[]) => string[];
}

/**
 * Least privilege per task (DESIGN.md section 2; docs/operations.md, "Permissions"). S3 access is
 * granted per repository area (`REPOSITORY_AREAS`) as `TASK_S3_ACCESS` says.
 */
export function grantTaskPermissions(
  f: Readonly<Record<TaskName, nodejs.NodejsFunction>>,
  props: TaskPermissionsProps,
): void {
  const p = Aws.PARTITION;
  const scope: Scope = {
    props,
    groupNames: props.groups.map((g) => g.group),
    volumes: props.groups.flatMap((g) => g.volumes),
    snapshotArn: `arn:${p}:ec2:${Aws.REGION}::snapshot/*`,
    ec2Arn: (type, id) => `arn:${p}:ec2:${Aws.REGION}:${Aws.ACCOUNT_ID}:${type}/${id}`,
    areaArns: (areas, groups = props.groups) =>
      groups.flatMap((g) =>
        areas.map((a) => `arn:${p}:s3:::${g.target.bucket}/${g.target.prefix}/${areaPattern(a)}`),
      ),
  };
  const snap = snapshotStatements(scope);
  const grant = (task: TaskName, statements: iam.PolicyStatement[]) => {
    for (const s of [...repositoryStatements(scope, task), ...statements]) f[task].addToRolePolicy(s);
  };
  grant("AcquireLock", []);
  grant("Recover", [snap.describe, snap.deleteOwn]);
  grant("CheckSnapshots", [snap.describe]);
  grant("Plan", [snap.describe, snap.ebsList, ...snap.volumeKeys]);
  grant("Transfer", [snap.ebsList, snap.ebsRead, ...snap.volumeKeys]);
  grant("Prepare", []);
  grant("Commit", []);
  grant("Revert", [snap.describe, snap.deleteOwn]);
  grant("ReleaseLock", [snap.describe, snap.deleteOwn]);
  grant("Snapshot", [snap.describe, snap.deleteOwn, ...createSnapshotStatements(scope)]);
}

/** The task's S3 statements: its areas (`TASK_S3_ACCESS`), Object Lock where needed, the bucket key. */
function repositoryStatements(scope: Scope, task: TaskName): iam.PolicyStatement[] {
  const { groups, repositoryKey } = scope.props;
  const access = TASK_S3_ACCESS[task];
  const statement = (sid: string, actions: string[], areas: readonly RepositoryArea[]) =>
    areas.length > 0 ? [new iam.PolicyStatement({ sid, actions, resources: scope.areaArns(areas) })] : [];
  const list = new iam.PolicyStatement({
    sid: "RepositoryList",
    actions: ["s3:ListBucket", "s3:ListBucketVersions"],
    resources: [...new Set(groups.map((g) => g.target.bucket))].map((b) => `arn:${Aws.PARTITION}:s3:::${b}`),
    conditions: {
      StringLike: { "s3:prefix": groups.flatMap((g) => [g.target.prefix, `${g.target.prefix}/*`]) },
    },
  });
  return [
    ...statement("RepositoryRead", ["s3:GetObject", "s3:GetObjectVersion"], access.read),
    ...(access.read.length > 0 ? [list] : []),
    ...statement(
      "RepositoryWrite",
      ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      access.write,
    ),
    ...statement("RepositoryDeleteScratch", ["s3:DeleteObject"], access.deleteMarker),
    ...statement("RepositoryDeleteVersion", ["s3:DeleteObjectVersion"], access.deleteVersion),
    ...objectLockStatements(scope, task),
    new iam.PolicyStatement({
      sid: "RepositoryKey",
      actions: access.write.length > 0 ? ["kms:Decrypt", "kms:GenerateDataKey*"] : ["kms:Decrypt"],
      resources: [repositoryKey.keyArn],
      conditions: { StringEquals: { "kms:ViaService": `s3.${Aws.REGION}.amazonaws.com` } },
    }),
  ];
}

/** Under `target.objectLock`: Commit locks, and a task that deletes versions may read a retention. */
function objectLockStatements(scope: Scope, task: TaskName): iam.PolicyStatement[] {
  const locking = scope.props.groups.filter((g) => g.target.objectLock !== undefined);
  if (locking.length === 0) return [];
  const access = TASK_S3_ACCESS[task];
  if (task === "Commit") {
    // Commit locks what a committed generation reaches (core/protocol/object-lock.ts); HEAD is never locked.
    return [
      new iam.PolicyStatement({
        sid: "RepositoryObjectLock",
        actions: ["s3:PutObjectRetention", "s3:GetObjectRetention"],
        resources: scope.areaArns(OBJECT_LOCK_AREAS, locking),
      }),
    ];
  }
  if (access.deleteVersion.length === 0) return [];
  // A refused delete is AccessDenied for a lock and an IAM deny alike: the retention tells them apart.
  return [
    new iam.PolicyStatement({
      sid: "RepositoryReadRetention",
      actions: ["s3:GetObjectRetention"],
      resources: scope.areaArns(access.deleteVersion, locking),
    }),
  ];
}

/** Finding, deleting and reading snapshots: only this deployment's, of the configured volumes. */
function snapshotStatements(scope: Scope) {
  const { groupNames, volumes, snapshotArn, ec2Arn } = scope;
  const stackName = scope.props.stackName;
  const taggedForGroups = { StringEquals: { [`aws:ResourceTag/${SNAPSHOT_TAGS.group}`]: groupNames } };
  const describeSnapshots = new iam.PolicyStatement({
    sid: "DescribeSnapshots",
    actions: ["ec2:DescribeSnapshots"],
    resources: ["*"],
  });
  // Only snapshots this stack created (its stack tag) of the configured volumes, for these groups:
  // never a snapshot that merely carries a group tag.
  const deleteSnapshots = new iam.PolicyStatement({
    sid: "DeleteOwnGroupSnapshots",
    actions: ["ec2:DeleteSnapshot"],
    resources: [snapshotArn],
    conditions: {
      StringEquals: {
        [`aws:ResourceTag/${SNAPSHOT_TAGS.group}`]: groupNames,
        [`aws:ResourceTag/${SNAPSHOT_TAGS.stack}`]: stackName,
      },
      ArnEquals: { "ec2:ParentVolume": volumes.map((v) => ec2Arn("volume", v.id)) },
    },
  });
  const ebsList = new iam.PolicyStatement({
    sid: "EbsDirectList",
    actions: ["ebs:ListChangedBlocks", "ebs:ListSnapshotBlocks"],
    resources: [snapshotArn],
    conditions: taggedForGroups,
  });
  const ebsRead = new iam.PolicyStatement({
    sid: "EbsDirectRead",
    actions: ["ebs:GetSnapshotBlock"],
    resources: [snapshotArn],
    conditions: taggedForGroups,
  });
  // Encrypted volumes: their snapshots can be read only with their KMS key, and only through EBS.
  const volumeKeys = [...new Set(volumes.flatMap((v) => (v.kmsKeyArn ? [v.kmsKeyArn] : [])))].sort();
  const ebsKeys =
    volumeKeys.length > 0
      ? [
          new iam.PolicyStatement({
            sid: "EncryptedVolumeKeys",
            actions: ["kms:Decrypt", "kms:DescribeKey"],
            resources: volumeKeys,
            conditions: { StringEquals: { "kms:ViaService": `ebs.${Aws.REGION}.amazonaws.com` } },
          }),
        ]
      : [];

  return { describe: describeSnapshots, deleteOwn: deleteSnapshots, ebsList, ebsRead, volumeKeys: ebsKeys };
}

/** The Snapshot task creates snapshots of exactly the groups' volumes/instances, tagged for them. */
function createSnapshotStatements(scope: Scope): iam.PolicyStatement[] {
  const { groupNames, volumes, snapshotArn, ec2Arn } = scope;
  const { stackName, freezeDocuments, groups } = scope.props;
  const p = Aws.PARTITION;
  // Snapshot: create snapshots of exactly the group's volumes / instances, tagged for the group.
  const instances = [...new Set(volumes.flatMap((v) => (v.instanceId ? [v.instanceId] : [])))];
  const requestTagged = {
    StringEquals: {
      [`aws:RequestTag/${SNAPSHOT_TAGS.group}`]: groupNames,
      [`aws:RequestTag/${SNAPSHOT_TAGS.stack}`]: stackName,
    },
  };
  const statements = [
    new iam.PolicyStatement({
      sid: "DescribeInstances",
      actions: ["ec2:DescribeInstances"],
      resources: ["*"],
    }),
    new iam.PolicyStatement({
      sid: "CreateSnapshotsOfGroupSources",
      actions: ["ec2:CreateSnapshot", "ec2:CreateSnapshots"],
      resources: [
        ...volumes.map((v) => ec2Arn("volume", v.id)),
        ...instances.map((i) => ec2Arn("instance", i)),
      ],
    }),
    new iam.PolicyStatement({
      sid: "CreateGroupTaggedSnapshots",
      actions: ["ec2:CreateSnapshot", "ec2:CreateSnapshots"],
      resources: [snapshotArn],
      conditions: requestTagged,
    }),
    new iam.PolicyStatement({
      sid: "TagSnapshotsOnCreate",
      actions: ["ec2:CreateTags"],
      resources: [snapshotArn],
      conditions: { StringEquals: { "ec2:CreateAction": ["CreateSnapshot", "CreateSnapshots"] } },
    }),
  ];
  if (freezeDocuments) {
    const frozen = groups.filter((g) => g.freeze.enabled);
    const freezeInstances = [
      ...new Set(
        frozen.flatMap((g) => g.volumes.flatMap((v) => (v.instanceId && v.mountPoint ? [v.instanceId] : []))),
      ),
    ];
    const docArn = (d: ssm.CfnDocument) => `arn:${p}:ssm:${Aws.REGION}:${Aws.ACCOUNT_ID}:document/${d.ref}`;
    statements.push(
      new iam.PolicyStatement({
        sid: "FreezeWithOwnDocuments",
        actions: ["ssm:SendCommand"],
        resources: [
          docArn(freezeDocuments.freeze),
          docArn(freezeDocuments.thaw),
          ...freezeInstances.map((i) => ec2Arn("instance", i)),
        ],
      }),
      new iam.PolicyStatement({
        sid: "FreezeCommandStatus",
        actions: ["ssm:GetCommandInvocation", "ssm:CancelCommand"],
        resources: ["*"],
      }),
    );
  }
  return statements;
}
