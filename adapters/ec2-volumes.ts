/**
 * Finds the EBS volumes of a group by tag (for `cgmirror config init --tag`), with the instance each
 * is attached to and, for an encrypted volume, its KMS key ARN (`volumes[].kmsKeyArn`). This runs
 * when the user writes the config, never during `cdk synth` (which stays offline).
 */
import { DescribeVolumesCommand, type EC2Client } from "@aws-sdk/client-ec2";

export interface FoundVolume {
  readonly id: string;
  readonly instanceId?: string;
  /** The key an encrypted volume (and its snapshots) is encrypted with. */
  readonly kmsKeyArn?: string;
}

export async function findTaggedVolumes(
  ec2: EC2Client,
  tag: { key: string; value: string },
): Promise<FoundVolume[]> {
  const out: FoundVolume[] = [];
  let token: string | undefined;
  do {
    const page = await ec2.send(
      new DescribeVolumesCommand({
        Filters: [{ Name: `tag:${tag.key}`, Values: [tag.value] }],
        ...(token ? { NextToken: token } : {}),
      }),
    );
    for (const v of page.Volumes ?? []) {
      if (!v.VolumeId) continue;
      const instanceId = v.Attachments?.find(
        (a) => a.State === "attached" || a.State === "attaching",
      )?.InstanceId;
      out.push({
        id: v.VolumeId,
        ...(instanceId ? { instanceId } : {}),
        ...(v.Encrypted && v.KmsKeyId ? { kmsKeyArn: v.KmsKeyId } : {}),
      });
    }
    token = page.NextToken;
  } while (token);
  return out.sort((a, b) => a.id.localeCompare(b.id));
}
