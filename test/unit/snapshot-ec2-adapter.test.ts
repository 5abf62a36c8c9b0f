/** adapters/ec2-snapshots.ts against a mocked EC2 client (aws-sdk-client-mock; EC2 has no local emulator). */
import {
  CreateSnapshotCommand,
  CreateSnapshotsCommand,
  DeleteSnapshotCommand,
  DescribeInstancesCommand,
  DescribeSnapshotsCommand,
  EC2Client,
} from "@aws-sdk/client-ec2";
import { mockClient } from "aws-sdk-client-mock";
import { beforeEach, describe, expect, it } from "vitest";
import { Ec2Snapshots } from "#adapters/ec2-snapshots.ts";

const ec2 = mockClient(EC2Client);
const labels = { group: "orders", generation: 5, runId: "run-1" };
const I = "i-0123456789abcdef0";
const ROOT = "vol-000000000000000aa";
const DATA = "vol-0123456789abcdef0";
const WAL = "vol-0123456789abcdef1";
const OTHER = "vol-0123456789abcdef9";

function adapter(stackName?: string) {
  return new Ec2Snapshots({
    client: new EC2Client({ region: "us-east-1" }),
    ...(stackName ? { stackName } : {}),
  });
}

beforeEach(() => {
  ec2.reset();
  ec2.on(DescribeInstancesCommand).resolves({
    Reservations: [
      {
        Instances: [
          {
            InstanceId: I,
            RootDeviceName: "/dev/xvda",
            BlockDeviceMappings: [
              { DeviceName: "/dev/xvda", Ebs: { VolumeId: ROOT } },
              { DeviceName: "/dev/sdf", Ebs: { VolumeId: DATA } },
              { DeviceName: "/dev/sdg", Ebs: { VolumeId: WAL } },
              { DeviceName: "/dev/sdh", Ebs: { VolumeId: OTHER } },
            ],
          },
        ],
      },
    ],
  });
});

describe("Ec2Snapshots (aws-sdk-client-mock)", () => {
  it("GIVEN an instance with extra volumes WHEN its group volumes are snapshotted THEN one CreateSnapshots excludes the boot and non-group volumes and tags the snapshots", async () => {
    ec2.on(CreateSnapshotsCommand).resolves({
      Snapshots: [
        { SnapshotId: "snap-0000000000000000a", VolumeId: DATA },
        { SnapshotId: "snap-0000000000000000b", VolumeId: WAL },
      ],
    });
    const refs = await adapter().createInstanceSnapshots(I, [DATA, WAL], labels);
    expect(refs).toEqual([
      { volumeId: DATA, snapshotId: "snap-0000000000000000a" },
      { volumeId: WAL, snapshotId: "snap-0000000000000000b" },
    ]);
    const input = ec2.commandCalls(CreateSnapshotsCommand)[0]?.args[0].input;
    expect(input?.InstanceSpecification).toEqual({
      InstanceId: I,
      ExcludeBootVolume: true,
      ExcludeDataVolumeIds: [OTHER],
    });
    expect(input?.TagSpecifications?.[0]?.ResourceType).toBe("snapshot");
    expect(input?.TagSpecifications?.[0]?.Tags).toEqual(
      expect.arrayContaining([
        { Key: "cgmirror:group", Value: "orders" },
        { Key: "cgmirror:generation", Value: "5" },
        { Key: "cgmirror:run-id", Value: "run-1" },
      ]),
    );
  });

  it("GIVEN the boot volume is in the group THEN it is not excluded", async () => {
    ec2.on(CreateSnapshotsCommand).resolves({
      Snapshots: [{ SnapshotId: "snap-0000000000000000c", VolumeId: ROOT }],
    });
    await adapter().createInstanceSnapshots(I, [ROOT], labels);
    const spec = ec2.commandCalls(CreateSnapshotsCommand)[0]?.args[0].input.InstanceSpecification;
    expect(spec?.ExcludeBootVolume).toBe(false);
    expect(spec?.ExcludeDataVolumeIds).toEqual([DATA, WAL, OTHER]);
  });

  it("fails with SnapshotFailedError naming the volume when it is not attached to the instance", async () => {
    await expect(
      adapter().createInstanceSnapshots(I, ["vol-0123456789abcdef7"], labels),
    ).rejects.toMatchObject({
      name: "SnapshotFailedError",
      message: expect.stringContaining("vol-0123456789abcdef7 are not attached to i-0123456789abcdef0"),
    });
    expect(ec2.commandCalls(CreateSnapshotsCommand)).toHaveLength(0);
  });

  it("GIVEN a detached volume WHEN snapshotted THEN CreateSnapshot is tagged at creation", async () => {
    ec2.on(CreateSnapshotCommand).resolves({ SnapshotId: "snap-0000000000000000d" });
    expect(await adapter().createVolumeSnapshot(OTHER, labels)).toEqual({
      volumeId: OTHER,
      snapshotId: "snap-0000000000000000d",
    });
    const input = ec2.commandCalls(CreateSnapshotCommand)[0]?.args[0].input;
    expect(input?.VolumeId).toBe(OTHER);
    expect(input?.TagSpecifications?.[0]?.Tags).toContainEqual({ Key: "cgmirror:run-id", Value: "run-1" });
  });

  it("GIVEN snapshots WHEN described THEN states, progress and messages are returned", async () => {
    ec2.on(DescribeSnapshotsCommand).resolves({
      Snapshots: [
        { SnapshotId: "snap-0000000000000000a", VolumeId: DATA, State: "completed", Progress: "100%" },
        { SnapshotId: "snap-0000000000000000b", VolumeId: WAL, State: "error", StateMessage: "internal" },
      ],
    });
    const out = await adapter().describeSnapshots(["snap-0000000000000000a", "snap-0000000000000000b"]);
    expect(out).toEqual([
      { snapshotId: "snap-0000000000000000a", volumeId: DATA, state: "completed", progress: "100%" },
      { snapshotId: "snap-0000000000000000b", volumeId: WAL, state: "error", stateMessage: "internal" },
    ]);
    expect(ec2.commandCalls(DescribeSnapshotsCommand)[0]?.args[0].input.Filters).toEqual([
      { Name: "snapshot-id", Values: ["snap-0000000000000000a", "snap-0000000000000000b"] },
    ]);
  });

  it("GIVEN tagged snapshots on several pages WHEN found by group and run THEN all pages are read and tags parsed", async () => {
    const tags = [
      { Key: "cgmirror:group", Value: "orders" },
      { Key: "cgmirror:generation", Value: "5" },
      { Key: "cgmirror:run-id", Value: "run-1" },
    ];
    ec2
      .on(DescribeSnapshotsCommand)
      .resolvesOnce({
        Snapshots: [{ SnapshotId: "snap-0000000000000000a", VolumeId: DATA, State: "pending", Tags: tags }],
        NextToken: "t1",
      })
      .resolvesOnce({
        Snapshots: [
          {
            SnapshotId: "snap-0000000000000000b",
            VolumeId: WAL,
            State: "completed",
            Tags: tags,
            StartTime: new Date("2026-01-01T00:00:00Z"),
          },
        ],
      });
    const found = await adapter().findSnapshots("orders", "run-1");
    expect(found.map((s) => s.snapshotId)).toEqual(["snap-0000000000000000a", "snap-0000000000000000b"]);
    expect(found[1]).toMatchObject({ generation: 5, runId: "run-1", startTime: "2026-01-01T00:00:00.000Z" });
    const filters = ec2.commandCalls(DescribeSnapshotsCommand)[0]?.args[0].input.Filters;
    expect(filters).toEqual([
      { Name: "tag:cgmirror:group", Values: ["orders"] },
      { Name: "tag:cgmirror:run-id", Values: ["run-1"] },
    ]);
  });

  it("GIVEN the stack name WHEN snapshots are created THEN they carry the stack tag, and only the stack's own are found", async () => {
    ec2.on(CreateSnapshotCommand).resolves({ SnapshotId: "snap-0000000000000000d" });
    ec2.on(DescribeSnapshotsCommand).resolves({ Snapshots: [] });
    const a = adapter("CgmirrorProd");
    await a.createVolumeSnapshot(OTHER, labels);
    expect(
      ec2.commandCalls(CreateSnapshotCommand)[0]?.args[0].input.TagSpecifications?.[0]?.Tags,
    ).toContainEqual({
      Key: "cgmirror:stack",
      Value: "CgmirrorProd",
    });
    await a.findSnapshots("orders");
    expect(ec2.commandCalls(DescribeSnapshotsCommand)[0]?.args[0].input.Filters).toEqual([
      { Name: "tag:cgmirror:group", Values: ["orders"] },
      { Name: "tag:cgmirror:stack", Values: ["CgmirrorProd"] },
    ]);
  });

  it("GIVEN a plan made before the freeze WHEN the snapshots are created THEN no DescribeInstances happens in the window", async () => {
    const plan = await adapter().planInstanceSnapshots(I, [DATA, WAL]);
    expect(plan).toEqual({
      instanceId: I,
      volumeIds: [DATA, WAL],
      excludeBootVolume: true,
      excludeDataVolumeIds: [OTHER],
    });
    ec2.resetHistory();
    ec2.on(CreateSnapshotsCommand).resolves({
      Snapshots: [
        { SnapshotId: "snap-0000000000000000a", VolumeId: DATA },
        { SnapshotId: "snap-0000000000000000b", VolumeId: WAL },
      ],
    });
    await adapter().createInstanceSnapshots(I, [DATA, WAL], labels, plan);
    expect(ec2.commandCalls(DescribeInstancesCommand)).toHaveLength(0);
    expect(ec2.commandCalls(CreateSnapshotsCommand)[0]?.args[0].input.InstanceSpecification).toEqual({
      InstanceId: I,
      ExcludeBootVolume: true,
      ExcludeDataVolumeIds: [OTHER],
    });
  });

  it("fails to send a CreateSnapshots that would exclude more than 40 data volumes", async () => {
    const plan = {
      instanceId: I,
      volumeIds: [DATA, WAL],
      excludeBootVolume: true,
      excludeDataVolumeIds: Array.from({ length: 41 }, (_, i) => `vol-${String(i).padStart(17, "0")}`),
    };
    await expect(adapter().createInstanceSnapshots(I, [DATA, WAL], labels, plan)).rejects.toThrow(
      /would have to exclude 41 data volumes \(at most 40\)/,
    );
    expect(ec2.commandCalls(CreateSnapshotsCommand)).toHaveLength(0);
  });

  it("GIVEN a snapshot already gone WHEN deleted THEN it succeeds (idempotent revert)", async () => {
    ec2
      .on(DeleteSnapshotCommand)
      .rejects(Object.assign(new Error("The snapshot does not exist"), { name: "InvalidSnapshot.NotFound" }));
    await expect(adapter().deleteSnapshot("snap-0000000000000000a")).resolves.toBeUndefined();
  });

  it("fails on other DeleteSnapshot errors", async () => {
    ec2
      .on(DeleteSnapshotCommand)
      .rejects(Object.assign(new Error("in use by ami-1"), { name: "InvalidSnapshot.InUse" }));
    await expect(adapter().deleteSnapshot("snap-0000000000000000a")).rejects.toThrow("in use by ami-1");
  });
});
