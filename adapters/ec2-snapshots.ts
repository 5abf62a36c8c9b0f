/**
 * The SnapshotPort (core/protocol/snapshot-group.ts) over Amazon EC2.
 *
 * - Volumes of one instance: `CreateSnapshots` with an instance specification — one crash-consistent
 *   point in time for all of them. Attached volumes that are not in the group are excluded
 *   (`ExcludeBootVolume` / `ExcludeDataVolumeIds`, found with `DescribeInstances` in
 *   `planInstanceSnapshots`, which core calls before the freeze window).
 * - A detached volume: `CreateSnapshot`.
 * - Every snapshot is tagged at creation (SNAPSHOT_TAGS, with the stack's name in AWS) — the IAM policy
 *   only allows deleting snapshots of the configured volumes that carry the group's and the stack's
 *   tags, so `findSnapshots` returns only those (never one that merely carries a group tag).
 */
import {
  CreateSnapshotCommand,
  CreateSnapshotsCommand,
  DeleteSnapshotCommand,
  DescribeInstancesCommand,
  DescribeSnapshotsCommand,
  type EC2Client,
  paginateDescribeSnapshots,
  type Snapshot,
  type Tag,
} from "@aws-sdk/client-ec2";
import {
  type InstanceSnapshotPlan,
  MAX_EXCLUDED_DATA_VOLUMES,
  SNAPSHOT_TAGS,
  SnapshotFailedError,
  type SnapshotLabels,
  type SnapshotPort,
  type SnapshotRef,
  type SnapshotState,
  type SnapshotStatus,
  type TaggedSnapshot,
} from "#core/protocol/snapshot-group.ts";

export interface Ec2SnapshotsProps {
  /** A configured client, created once by the caller. */
  readonly client: EC2Client;
  /**
   * The CloudFormation stack name, written as the `cgmirror:stack` tag on every snapshot created and
   * required on every snapshot found (the IAM policy lets the stack delete only its own snapshots).
   * @default no stack tag
   */
  readonly stackName?: string;
}

function tags(labels: SnapshotLabels, stackName: string | undefined): Tag[] {
  return [
    { Key: SNAPSHOT_TAGS.group, Value: labels.group },
    { Key: SNAPSHOT_TAGS.generation, Value: String(labels.generation) },
    { Key: SNAPSHOT_TAGS.runId, Value: labels.runId },
    ...(stackName !== undefined ? [{ Key: SNAPSHOT_TAGS.stack, Value: stackName }] : []),
    { Key: "Name", Value: `cgmirror ${labels.group} #${labels.generation}` },
  ];
}

function description(labels: SnapshotLabels): string {
  return `cgmirror group ${labels.group} generation ${labels.generation} run ${labels.runId}`;
}

function tagValue(snapshot: Snapshot, key: string): string | undefined {
  return snapshot.Tags?.find((t) => t.Key === key)?.Value;
}

function isNotFound(error: unknown): boolean {
  const name = (error as { name?: string; Code?: string })?.name ?? "";
  return name === "InvalidSnapshot.NotFound" || name === "InvalidSnapshotID.NotFound";
}

const DESCRIBE_BATCH = 200;

export class Ec2Snapshots implements SnapshotPort {
  readonly #client: EC2Client;
  readonly #stackName: string | undefined;

  constructor(props: Ec2SnapshotsProps) {
    this.#client = props.client;
    this.#stackName = props.stackName;
  }

  async planInstanceSnapshots(
    instanceId: string,
    volumeIds: readonly string[],
  ): Promise<InstanceSnapshotPlan> {
    const described = await this.#client.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }));
    const instance = described.Reservations?.[0]?.Instances?.[0];
    if (!instance) throw new SnapshotFailedError(`instance ${instanceId} does not exist (DescribeInstances)`);
    const rootName = instance.RootDeviceName;
    const attached = (instance.BlockDeviceMappings ?? []).flatMap((m) =>
      m.Ebs?.VolumeId ? [{ volumeId: m.Ebs.VolumeId, root: m.DeviceName === rootName }] : [],
    );
    const notAttached = volumeIds.filter((id) => !attached.some((a) => a.volumeId === id));
    if (notAttached.length > 0) {
      throw new SnapshotFailedError(
        `volume(s) ${notAttached.join(", ")} are not attached to ${instanceId}; fix volumes[].instanceId in the group config`,
      );
    }
    const wanted = new Set(volumeIds);
    const root = attached.find((a) => a.root);
    return {
      instanceId,
      volumeIds: [...volumeIds],
      excludeBootVolume: root === undefined || !wanted.has(root.volumeId),
      excludeDataVolumeIds: attached.filter((a) => !a.root && !wanted.has(a.volumeId)).map((a) => a.volumeId),
    };
  }

  async createInstanceSnapshots(
    instanceId: string,
    volumeIds: readonly string[],
    labels: SnapshotLabels,
    plan?: InstanceSnapshotPlan,
  ): Promise<SnapshotRef[]> {
    const p = plan ?? (await this.planInstanceSnapshots(instanceId, volumeIds));
    if (p.excludeDataVolumeIds.length > MAX_EXCLUDED_DATA_VOLUMES) {
      throw new SnapshotFailedError(
        `CreateSnapshots on ${instanceId} would have to exclude ${p.excludeDataVolumeIds.length} data volumes (at most ${MAX_EXCLUDED_DATA_VOLUMES})`,
      );
    }
    const wanted = new Set(volumeIds);
    const out = await this.#client.send(
      new CreateSnapshotsCommand({
        InstanceSpecification: {
          InstanceId: instanceId,
          ExcludeBootVolume: p.excludeBootVolume,
          ...(p.excludeDataVolumeIds.length > 0 ? { ExcludeDataVolumeIds: [...p.excludeDataVolumeIds] } : {}),
        },
        Description: description(labels),
        TagSpecifications: [{ ResourceType: "snapshot", Tags: tags(labels, this.#stackName) }],
      }),
    );
    const refs = (out.Snapshots ?? []).flatMap((s) =>
      s.SnapshotId && s.VolumeId ? [{ volumeId: s.VolumeId, snapshotId: s.SnapshotId }] : [],
    );
    const missing = volumeIds.filter((id) => !refs.some((r) => r.volumeId === id));
    if (missing.length > 0) {
      throw new SnapshotFailedError(
        `CreateSnapshots on ${instanceId} returned no snapshot for ${missing.join(", ")}`,
      );
    }
    return refs.filter((r) => wanted.has(r.volumeId));
  }

  async createVolumeSnapshot(volumeId: string, labels: SnapshotLabels): Promise<SnapshotRef> {
    const out = await this.#client.send(
      new CreateSnapshotCommand({
        VolumeId: volumeId,
        Description: description(labels),
        TagSpecifications: [{ ResourceType: "snapshot", Tags: tags(labels, this.#stackName) }],
      }),
    );
    if (!out.SnapshotId)
      throw new SnapshotFailedError(`CreateSnapshot of ${volumeId} returned no snapshot id`);
    return { volumeId, snapshotId: out.SnapshotId };
  }

  async describeSnapshots(snapshotIds: readonly string[]): Promise<SnapshotStatus[]> {
    const out: SnapshotStatus[] = [];
    for (let i = 0; i < snapshotIds.length; i += DESCRIBE_BATCH) {
      const batch = snapshotIds.slice(i, i + DESCRIBE_BATCH);
      // Filtering by id (rather than SnapshotIds) does not fail the whole call when one is gone.
      const res = await this.#client.send(
        new DescribeSnapshotsCommand({
          OwnerIds: ["self"],
          Filters: [{ Name: "snapshot-id", Values: batch }],
        }),
      );
      for (const s of res.Snapshots ?? []) {
        if (!s.SnapshotId || !s.VolumeId) continue;
        out.push({
          snapshotId: s.SnapshotId,
          volumeId: s.VolumeId,
          state: (s.State ?? "pending") as SnapshotState,
          ...(s.Progress ? { progress: s.Progress } : {}),
          ...(s.StateMessage ? { stateMessage: s.StateMessage } : {}),
        });
      }
    }
    return out;
  }

  async findSnapshots(group: string, runId?: string): Promise<TaggedSnapshot[]> {
    const filters = [{ Name: `tag:${SNAPSHOT_TAGS.group}`, Values: [group] }];
    if (runId !== undefined) filters.push({ Name: `tag:${SNAPSHOT_TAGS.runId}`, Values: [runId] });
    if (this.#stackName !== undefined) {
      filters.push({ Name: `tag:${SNAPSHOT_TAGS.stack}`, Values: [this.#stackName] });
    }
    const out: TaggedSnapshot[] = [];
    for await (const page of paginateDescribeSnapshots(
      { client: this.#client },
      { OwnerIds: ["self"], Filters: filters, MaxResults: 1000 },
    )) {
      for (const s of page.Snapshots ?? []) {
        const generation = Number(tagValue(s, SNAPSHOT_TAGS.generation));
        const run = tagValue(s, SNAPSHOT_TAGS.runId);
        if (!s.SnapshotId || !s.VolumeId || !Number.isSafeInteger(generation) || run === undefined) continue;
        out.push({
          snapshotId: s.SnapshotId,
          volumeId: s.VolumeId,
          group,
          generation,
          runId: run,
          state: (s.State ?? "pending") as SnapshotState,
          ...(s.StartTime ? { startTime: s.StartTime.toISOString() } : {}),
        });
      }
    }
    return out;
  }

  async deleteSnapshot(snapshotId: string): Promise<void> {
    try {
      await this.#client.send(new DeleteSnapshotCommand({ SnapshotId: snapshotId }));
    } catch (error) {
      if (isNotFound(error)) return;
      throw error;
    }
  }
}
