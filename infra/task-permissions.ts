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

/**
 * Least privilege per task (DESIGN.md section 2; docs/operations.md, "Permissions"). S3 access is
 * granted per repository area (`REPOSITORY_AREAS`) as `TASK_S3_ACCESS` says.
 */
export function grantTaskPermissions(
  f: Readonly<Record<TaskName, nodejs.NodejsFunction>>,
  props: TaskPermissionsProps,
): void {
  const { groups, repositoryKey: key, stackName, freezeDocuments } = props;
  const p = Aws.PARTITION;
  const snapshotArn = `arn:${p}:ec2:${Aws.REGION}::snapshot/*`;
  const groupNames = groups.map((g) => g.group);
  const taggedForGroups = { StringEquals: { [`aws:ResourceTag/${SNAPSHOT_TAGS.group}`]: groupNames } };
  const bucketsOf = [...new Set(groups.map((g) => g.target.bucket))];
  const prefixes = groups.flatMap((g) => [g.target.prefix, `${g.target.prefix}/*`]);
  const areaArns = (areas: readonly RepositoryArea[]) =>
    groups.flatMap((g) =>
      areas.map((a) => `arn:${p}:s3:::${g.target.bucket}/${g.target.prefix}/${areaPattern(a)}`),
    );
  const ec2Arn = (type: string, id: string) => `arn:${p}:ec2:${Aws.REGION}:${Aws.ACCOUNT_ID}:${type}/${id}`;
  const volumes = groups.flatMap((g) => g.volumes);

  const s3List = new iam.PolicyStatement({
    sid: "RepositoryList",
    actions: ["s3:ListBucket", "s3:ListBucketVersions"],
    resources: bucketsOf.map((b) => `arn:${p}:s3:::${b}`),
    conditions: { StringLike: { "s3:prefix": prefixes } },
  });
  const viaS3 = { StringEquals: { "kms:ViaService": `s3.${Aws.REGION}.amazonaws.com` } };
  const s3Statements = (task: TaskName): iam.PolicyStatement[] => {
    const access = TASK_S3_ACCESS[task];
    const out: iam.PolicyStatement[] = [];
    if (access.read.length > 0) {
      out.push(
        new iam.PolicyStatement({
          sid: "RepositoryRead",
          actions: ["s3:GetObject", "s3:GetObjectVersion"],
          resources: areaArns(access.read),
        }),
        s3List,
      );
    }
    if (access.write.length > 0) {
      out.push(
        new iam.PolicyStatement({
          sid: "RepositoryWrite",
          actions: ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
          resources: areaArns(access.write),
        }),
      );
    }
    if (access.deleteMarker.length > 0) {
      out.push(
        new iam.PolicyStatement({
          sid: "RepositoryDeleteScratch",
          actions: ["s3:DeleteObject"],
          resources: areaArns(access.deleteMarker),
        }),
      );
    }
    if (access.deleteVersion.length > 0) {
      out.push(
        new iam.PolicyStatement({
          sid: "RepositoryDeleteVersion",
          actions: ["s3:DeleteObjectVersion"],
          resources: areaArns(access.deleteVersion),
        }),
      );
    }
    const locking = groups.filter((g) => g.target.objectLock !== undefined);
    const lockArns = (areas: readonly RepositoryArea[]) =>
      locking.flatMap((g) =>
        areas.map((a) => `arn:${p}:s3:::${g.target.bucket}/${g.target.prefix}/${areaPattern(a)}`),
      );
    if (locking.length > 0 && task === "Commit") {
      // Commit locks what a committed generation reaches (core/protocol/object-lock.ts); HEAD is never locked.
      out.push(
        new iam.PolicyStatement({
          sid: "RepositoryObjectLock",
          actions: ["s3:PutObjectRetention", "s3:GetObjectRetention"],
          resources: lockArns(OBJECT_LOCK_AREAS),
        }),
      );
    } else if (locking.length > 0 && access.deleteVersion.length > 0) {
      // A refused delete is AccessDenied for a lock and an IAM deny alike: the retention tells them apart.
      out.push(
        new iam.PolicyStatement({
          sid: "RepositoryReadRetention",
          actions: ["s3:GetObjectRetention"],
          resources: lockArns(access.deleteVersion),
        }),
      );
    }
    out.push(
      new iam.PolicyStatement({
        sid: "RepositoryKey",
        actions: access.write.length > 0 ? ["kms:Decrypt", "kms:GenerateDataKey*"] : ["kms:Decrypt"],
        resources: [key.keyArn],
        conditions: viaS3,
      }),
    );
    return out;
  };

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

  const grant = (task: TaskName, statements: iam.PolicyStatement[]) => {
    for (const s of [...s3Statements(task), ...statements]) f[task].addToRolePolicy(s);
  };
  grant("AcquireLock", []);
  grant("Recover", [describeSnapshots, deleteSnapshots]);
  grant("CheckSnapshots", [describeSnapshots]);
  grant("Plan", [describeSnapshots, ebsList, ...ebsKeys]);
  grant("Transfer", [ebsList, ebsRead, ...ebsKeys]);
  grant("Prepare", []);
  grant("Commit", []);
  grant("Revert", [describeSnapshots, deleteSnapshots]);
  grant("ReleaseLock", [describeSnapshots, deleteSnapshots]);

  // Snapshot: create snapshots of exactly the group's volumes / instances, tagged for the group.
  const instances = [...new Set(volumes.flatMap((v) => (v.instanceId ? [v.instanceId] : [])))];
  const requestTagged = {
    StringEquals: {
      [`aws:RequestTag/${SNAPSHOT_TAGS.group}`]: groupNames,
      [`aws:RequestTag/${SNAPSHOT_TAGS.stack}`]: stackName,
    },
  };
  const snapshotStatements = [
    describeSnapshots,
    deleteSnapshots,
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
    snapshotStatements.push(
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
  grant("Snapshot", snapshotStatements);
}
