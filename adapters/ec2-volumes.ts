/** Finds the EBS volumes of a group by tag (for `cgmirror config init --tag`). */
import { DescribeVolumesCommand, type EC2Client } from "@aws-sdk/client-ec2";

export async function findTaggedVolumes(
  ec2: EC2Client,
  tag: { key: string; value: string },
): Promise<{ id: string; instanceId?: string }[]> {
  const out: { id: string; instanceId?: string }[] = [];
  let token: string | undefined;
  do {
    const page = await ec2.send(
      new DescribeVolumesCommand({
        Filters: [{ Name: `tag:${tag.key}`, Values: [tag.value] }],
        ...(token ? { NextToken: token } : {}),
      }),
    );
    for (const v of page.Volumes ?? []) {
      const instanceId = v.Attachments?.find(
        (a) => a.State === "attached" || a.State === "attaching",
      )?.InstanceId;
      out.push({ id: v.VolumeId!, ...(instanceId ? { instanceId } : {}) });
    }
    token = page.NextToken;
  } while (token);
  return out.sort((a, b) => a.id.localeCompare(b.id));
}
