import type { EbsStats, KmsGrants } from "./emulator.ts";
import type { EbsFaults } from "./faults.ts";
import type { SnapshotDescription, SyntheticSnapshotOptions } from "./store.ts";

/** Drives a running emulator's admin API (`/_cgm/...`) from another process. */
export interface EbsAdminClient {
  setFaults(faults: Partial<EbsFaults>): Promise<EbsFaults>;
  resetFaults(): Promise<EbsFaults>;
  faults(): Promise<EbsFaults>;
  /** Replaces the KMS grants (key ARN -> access key ids allowed to use it). */
  setKmsGrants(grants: KmsGrants): Promise<KmsGrants>;
  stats(): Promise<EbsStats>;
  resetStats(): Promise<EbsStats>;
  createSyntheticSnapshot(opts: SyntheticSnapshotOptions): Promise<SnapshotDescription>;
  describeSnapshot(snapshotId: string): Promise<SnapshotDescription | undefined>;
  listSnapshots(): Promise<SnapshotDescription[]>;
  deleteSnapshot(snapshotId: string): Promise<void>;
}

export class EbsAdminError extends Error {
  override readonly name = "EbsAdminError";
}

/** JSON carries startTime as an ISO string; give callers the Date the type promises. */
function revive(d: SnapshotDescription): SnapshotDescription {
  return { ...d, startTime: new Date(d.startTime) };
}

export function ebsAdmin(endpoint: string): EbsAdminClient {
  const base = endpoint.replace(/\/+$/, "");
  const call = async <T>(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; value: T }> => {
    const res = await fetch(`${base}/_cgm/${path}`, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? null : JSON.stringify(body),
    });
    const value = (await res.json()) as T & { error?: string };
    if (res.status >= 400 && res.status !== 404) {
      throw new EbsAdminError(
        `${method} /_cgm/${path} answered ${res.status}: ${value?.error ?? "no message"}`,
      );
    }
    return { status: res.status, value };
  };
  const ok = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const { status, value } = await call<T>(method, path, body);
    if (status === 404) throw new EbsAdminError(`${method} /_cgm/${path} answered 404`);
    return value;
  };
  return {
    setFaults: (f) => ok("POST", "faults", f),
    resetFaults: () => ok("POST", "faults/reset"),
    faults: () => ok("GET", "faults"),
    setKmsGrants: (g) => ok("POST", "kms-grants", g),
    stats: () => ok("GET", "stats"),
    resetStats: () => ok("POST", "stats/reset"),
    createSyntheticSnapshot: async (o) =>
      revive(await ok<SnapshotDescription>("POST", "synthetic-snapshots", o)),
    async describeSnapshot(id) {
      const { status, value } = await call<SnapshotDescription>("GET", `snapshots/${encodeURIComponent(id)}`);
      return status === 404 ? undefined : revive(value);
    },
    listSnapshots: async () => (await ok<SnapshotDescription[]>("GET", "snapshots")).map(revive),
    async deleteSnapshot(id) {
      await ok("DELETE", `snapshots/${encodeURIComponent(id)}`);
    },
  };
}
