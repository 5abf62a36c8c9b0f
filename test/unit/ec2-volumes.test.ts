// EC2 has no local emulator here: these tests use aws-sdk-client-mock.
import { DescribeVolumesCommand, EC2Client } from "@aws-sdk/client-ec2";
import { mockClient } from "aws-sdk-client-mock";
import { afterEach, describe, expect, it } from "vitest";
import { findTaggedVolumes } from "../../adapters/ec2-volumes.ts";

const ec2Mock = mockClient(EC2Client);
afterEach(() => ec2Mock.reset());

describe("findTaggedVolumes (aws-sdk-client-mock)", () => {
  it("GIVEN two pages of tagged volumes THEN it filters by the tag, follows NextToken and names attached instances", async () => {
    ec2Mock
      .on(DescribeVolumesCommand)
      .resolvesOnce({
        Volumes: [
          {
            VolumeId: "vol-0000000000000000b",
            Attachments: [{ InstanceId: "i-0000000000000000a", State: "attached" }],
          },
        ],
        NextToken: "page-2",
      })
      .resolvesOnce({ Volumes: [{ VolumeId: "vol-0000000000000000a", Attachments: [] }] });
    const ec2 = new EC2Client({ region: "us-east-1" });
    const found = await findTaggedVolumes(ec2, { key: "cgmirror:group", value: "db" });
    expect(found).toEqual([
      { id: "vol-0000000000000000a" },
      { id: "vol-0000000000000000b", instanceId: "i-0000000000000000a" },
    ]);
    const calls = ec2Mock.commandCalls(DescribeVolumesCommand);
    expect(calls).toHaveLength(2);
    expect(calls[0]!.args[0].input.Filters).toEqual([{ Name: "tag:cgmirror:group", Values: ["db"] }]);
    expect(calls[1]!.args[0].input.NextToken).toBe("page-2");
  });

  it("GIVEN an encrypted volume THEN its KMS key ARN is returned for volumes[].kmsKeyArn; an unencrypted one has none", async () => {
    const key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    ec2Mock.on(DescribeVolumesCommand).resolves({
      Volumes: [
        { VolumeId: "vol-0000000000000000a", Encrypted: true, KmsKeyId: key },
        { VolumeId: "vol-0000000000000000b", Encrypted: false },
      ],
    });
    const found = await findTaggedVolumes(new EC2Client({ region: "eu-west-1" }), { key: "g", value: "db" });
    expect(found).toEqual([{ id: "vol-0000000000000000a", kmsKeyArn: key }, { id: "vol-0000000000000000b" }]);
  });
});
