/**
 * Object Lock (`target.objectLock`, core/protocol/object-lock.ts): the REAL task handlers over an in-memory
 * store that enforces retention against a controlled clock. Commit locks exactly what committed
 * generations reach; a failed run's objects are never locked, so Revert still deletes them; prune
 * keeps garbage under retention and deletes it once the retention has passed; forget keeps a
 * generation whose commit record is still locked.
 */
import { StateMachine } from "aws-local-stepfunctions";
import { beforeAll, describe, expect, it } from "vitest";
import { MemoryObjectStore } from "#adapters/memory-store.ts";
import { GroupConfigError, parseGroupConfig } from "#core/config/group-config.ts";
import { readHead } from "#core/format/generation.ts";
import { createRepo, keys } from "#core/format/layout.ts";
import { ObjectLockedError, type ObjectVersionRef } from "#core/ports/object-store.ts";
import { generationObjects, lockGeneration, ObjectLockUnsupportedError } from "#core/protocol/object-lock.ts";
import { HANDLER_MAKERS } from "#lambdas/makers.ts";
import { pruneTask } from "#lambdas/prune.ts";
import type { TaskDeps } from "#lambdas/runtime.ts";
import { type AslDefinition, localDefinition } from "#workflows/definition.ts";
import { TASK_NAMES, TASKS, type TaskName } from "#workflows/tasks.ts";
import { twoGenerations } from "../support/repo-scenarios.ts";
import { memoryDeps } from "./lambda-fixtures.ts";
import { FakeBlockSource } from "./transfer-fixtures.ts";

type Json = Parameters<StateMachine["run"]>[0];
const DAY = 86_400_000;

const base = {
  group: "orders",
  volumes: [{ id: "vol-0123456789abcdef0" }, { id: "vol-0123456789abcdef1" }],
  schedule: { expression: "rate(1 hour)" },
  transfer: { shardBlocks: 64 },
};

describe("target.objectLock in the config", () => {
  it.each([
    [
      { mode: "governance", retentionDays: 7 },
      'target.objectLock.mode: expected "GOVERNANCE" or "COMPLIANCE"',
    ],
    [
      { mode: "LEGAL_HOLD", retentionDays: 7 },
      'target.objectLock.mode: expected "GOVERNANCE" or "COMPLIANCE"',
    ],
    [{ mode: "COMPLIANCE", retentionDays: 0 }, "target.objectLock.retentionDays: expected the days"],
    [{ mode: "COMPLIANCE", retentionDays: 1.5 }, "target.objectLock.retentionDays: expected the days"],
    [{ mode: "COMPLIANCE" }, "target.objectLock.retentionDays"],
    [{ mode: "GOVERNANCE", retentionDays: 7, days: 7 }, "target.objectLock"],
  ])("GIVEN objectLock %j THEN the config is refused naming the field (%s)", (objectLock, message) => {
    const parse = () => parseGroupConfig({ ...base, target: { bucket: "acme-backups", objectLock } });
    expect(parse).toThrow(GroupConfigError);
    expect(parse).toThrow(message);
  });

  it("GIVEN a valid objectLock THEN it is kept; without it there is none", () => {
    const on = parseGroupConfig({
      ...base,
      target: { bucket: "acme-backups", objectLock: { mode: "COMPLIANCE", retentionDays: 30 } },
    });
    expect(on.target.objectLock).toEqual({ mode: "COMPLIANCE", retentionDays: 30 });
    expect(
      parseGroupConfig({ ...base, target: { bucket: "acme-backups" } }).target.objectLock,
    ).toBeUndefined();
  });
});

describe("the memory store enforces Object Lock like S3", () => {
  it("GIVEN a locked version THEN it cannot be deleted or shortened before its retention passes, and can after", async () => {
    let now = Date.parse("2026-01-01T00:00:00Z");
    const store = new MemoryObjectStore({ objectLock: true, now: () => now });
    const a = await store.put("a", new Uint8Array([1]));
    const b = await store.put("b", new Uint8Array([2]));
    const refA = { key: "a", versionId: a.versionId! };
    const refB = { key: "b", versionId: b.versionId! };
    await store.putRetention(refA, { mode: "COMPLIANCE", retainUntil: new Date(now + DAY) });
    await expect(store.delete("a", { versionId: refA.versionId })).rejects.toThrow(ObjectLockedError);
    await expect(
      store.putRetention(refA, { mode: "COMPLIANCE", retainUntil: new Date(now + DAY / 2) }),
    ).rejects.toThrow(/cannot be shortened/);
    await expect(
      store.putRetention(refA, { mode: "GOVERNANCE", retainUntil: new Date(now + 2 * DAY) }),
    ).rejects.toThrow(/cannot be shortened or weakened/);
    // deleteVersions deletes what it may and names what it kept.
    const kept = await store.deleteVersions([refA, refB]).then(
      () => [] as readonly ObjectVersionRef[],
      (e: unknown) => (e instanceof ObjectLockedError ? e.refs : []),
    );
    expect(kept).toEqual([refA]);
    expect(await store.head("b")).toBeUndefined();
    now += DAY;
    await store.delete("a", { versionId: refA.versionId });
    expect(await store.head("a")).toBeUndefined();
    // A bucket without Object Lock refuses retention.
    await expect(
      new MemoryObjectStore().putRetention(refB, { mode: "GOVERNANCE", retainUntil: new Date(now) }),
    ).rejects.toThrow(/Object Lock Configuration/);
  });
});

describe("a bucket without Object Lock", () => {
  it("GIVEN target.objectLock on a bucket created without Object Lock WHEN a generation is locked THEN a clear error says what to do", async () => {
    const repo = createRepo({ store: new MemoryObjectStore(), prefix: "r", group: "g1" });
    await twoGenerations(repo);
    const lock = lockGeneration(repo, 1, { mode: "GOVERNANCE", retentionDays: 1 });
    await expect(lock).rejects.toThrow(ObjectLockUnsupportedError);
    await expect(lockGeneration(repo, 1, { mode: "GOVERNANCE", retentionDays: 1 })).rejects.toThrow(
      /the bucket has no Object Lock.*committed but not locked/,
    );
  });
});

let definition: AslDefinition;
beforeAll(() => {
  definition = localDefinition();
});

function bind(
  deps: TaskDeps,
  wrap: (task: TaskName, fn: (e: unknown) => Promise<unknown>) => typeof fn = (_t, f) => f,
) {
  const handlers: Record<string, (input: Json) => Promise<Json>> = {};
  for (const task of TASK_NAMES) {
    const fn = wrap(
      task,
      HANDLER_MAKERS[task](() => deps),
    );
    for (const state of TASKS[task].states) handlers[state] = async (input) => (await fn(input)) as Json;
  }
  return handlers;
}

function run(name: string, handlers: Record<string, (input: Json) => Promise<Json>>, config: unknown) {
  const input = { config } as unknown as Json;
  return new StateMachine(definition as never).run(input, {
    overrides: {
      taskResourceLocalHandlers: handlers,
      waitTimeOverrides: { WaitForSnapshots: 0 },
      retryIntervalOverrides: Object.fromEntries(
        Object.values(TASKS)
          .flatMap((t) => t.states)
          .map((s) => [s, 0]),
      ),
    },
    context: {
      Execution: { Name: name, Input: input, StartTime: new Date().toISOString() },
      StateMachine: {
        Id: "arn:aws:states:us-east-1:000000000000:stateMachine:cgmirror-orders",
        Name: "cgmirror-orders",
      },
    },
  }).result;
}

/** Every version under the repository, with its retention. */
async function versions(store: MemoryObjectStore, prefix: string) {
  const out: Array<{ key: string; versionId: string; retainUntil: number | undefined }> = [];
  for await (const v of store.listVersions(prefix)) {
    if (v.isDeleteMarker) continue;
    const r = await store.getRetention({ key: v.key, versionId: v.versionId });
    out.push({ key: v.key, versionId: v.versionId, retainUntil: r?.retainUntil.getTime() });
  }
  return out;
}
const id = (r: { key: string; versionId: string }) => `${r.key}@${r.versionId}`;

describe("Object Lock through backup, revert, forget and prune", () => {
  it("GIVEN objectLock WHEN runs commit, fail and prune over 3 weeks THEN only committed objects are locked, revert deletes the failed run's, prune keeps locked garbage until its retention passes", async () => {
    const config = parseGroupConfig({
      ...base,
      target: { bucket: "my-backups", objectLock: { mode: "COMPLIANCE", retentionDays: 10 } },
      retention: { keepLast: 1 },
    });
    let epoch = "a";
    const source = new FakeBlockSource({
      volumeBlocks: 200,
      has: (i) => i % 4 !== 3,
      contentKey: (i) => `${epoch}-${i}`,
    });
    const deps = memoryDeps(source, { objectLock: true });
    const store = deps.store("my-backups") as MemoryObjectStore;
    const repo = createRepo({ store, prefix: "groups/orders", group: "orders" });
    const prefix = "groups/orders/";
    const committedAreas = ["commits/", "generations/", "volumes/", "segments/"].map((a) => prefix + a);
    const t0 = Date.parse("2026-03-01T00:00:00Z");
    deps.setTime(t0);

    // 1. Generation 1: everything a committed generation consists of is locked, nothing else.
    await run("run-1", bind(deps), config);
    const all1 = await versions(store, prefix);
    const inCommitted = (key: string) => committedAreas.some((a) => key.startsWith(a));
    expect(all1.filter((v) => inCommitted(v.key)).length).toBeGreaterThan(4);
    for (const v of all1) {
      expect(v.retainUntil !== undefined, `${id(v)} locked`).toBe(inCommitted(v.key));
      // committedAt + 10 days, plus a day of slack (a tenth of the retention, at least a day).
      if (v.retainUntil !== undefined) expect(v.retainUntil).toBe(t0 + 11 * DAY);
    }
    expect(all1.some((v) => v.key === keys.head(repo) && v.retainUntil === undefined)).toBe(true);
    const gen1 = new Set((await generationObjects(repo, 1)).map(id));
    expect(new Set(all1.filter((v) => v.retainUntil !== undefined).map(id))).toEqual(gen1);

    // 2. A run that fails just before its commit (after Prepare wrote index versions and a manifest
    //    could be written): Revert deletes its uncommitted versions — none of them was locked.
    epoch = "b";
    deps.setTime(t0 + 3_600_000);
    const failing = bind(deps, (task, fn) =>
      task === "Commit"
        ? async () => {
            throw Object.assign(new Error("injected"), { name: "SourceAccessError" });
          }
        : fn,
    );
    await expect(run("run-2", failing, config)).rejects.toThrow();
    expect((await readHead(repo))?.head.generation).toBe(1);
    const afterRevert = await versions(store, prefix);
    // Its index root versions and manifest are gone (index runs no root names are prune's garbage)...
    const roots = afterRevert.filter(
      (v) => /\/index$/.test(v.key) || v.key.startsWith(`${prefix}generations/`),
    );
    expect(roots.length).toBeGreaterThan(0);
    for (const v of roots) expect(gen1.has(id(v)), `${id(v)} is generation 1's`).toBe(true);
    // ...and nothing the failed run wrote is locked.
    for (const v of afterRevert.filter((x) => !gen1.has(id(x)))) {
      expect(v.retainUntil, `${id(v)} is not locked`).toBeUndefined();
    }

    // 3. Generation 2 (other contents): locks are exactly generation 1's and 2's objects.
    deps.setTime(t0 + 2 * 3_600_000);
    await run("run-3", bind(deps), config);
    const gen2 = new Set((await generationObjects(repo, 2)).map(id));
    const locked3 = (await versions(store, prefix)).filter((v) => v.retainUntil !== undefined).map(id);
    expect(new Set(locked3)).toEqual(new Set([...gen1, ...gen2]));

    // 4. Prune a day later: keepLast 1 would forget generation 1, but its commit record is locked.
    const prune = (executionName: string) => pruneTask({ config, executionName, iteration: 0 }, deps);
    deps.setTime(t0 + DAY);
    const early = await prune("prune-1");
    expect(early.forgotten).toEqual([]);
    expect(await store.head(keys.commit(repo, 1))).toBeDefined();
    for (const v of gen1) {
      const [key, versionId] = v.split("@") as [string, string];
      expect((await store.head(key, { versionId }))?.versionId, `${v} kept`).toBe(versionId);
    }

    // 5. One of generation 1's own segments is locked beyond its generation (e.g. by an earlier,
    //    longer retention): after generation 1's locks pass, forget and prune delete the rest of it
    //    and keep that segment, without failing.
    const gen1Only = [...gen1].filter((v) => !gen2.has(v) && v.includes("/segments/"));
    expect(gen1Only.length).toBeGreaterThan(0);
    const [stickyKey, stickyVersion] = gen1Only[0]!.split("@") as [string, string];
    await store.putRetention(
      { key: stickyKey, versionId: stickyVersion },
      { mode: "COMPLIANCE", retainUntil: new Date(t0 + 20 * DAY) },
    );
    deps.setTime(t0 + 11 * DAY + 60_000);
    const later = await prune("prune-2");
    expect(later.forgotten).toEqual([1]);
    expect(later.objectsDeleted).toBeGreaterThan(0);
    expect(await store.head(keys.commit(repo, 1))).toBeUndefined();
    const survivors = new Set((await versions(store, prefix)).map(id));
    expect(survivors.has(`${stickyKey}@${stickyVersion}`)).toBe(true);
    for (const v of gen1Only.slice(1)) expect(survivors.has(v), `${v} deleted`).toBe(false);
    for (const v of gen2) expect(survivors.has(v), `${v} (generation 2) kept`).toBe(true);

    // 6. After its retention passes, the next prune deletes it.
    deps.setTime(t0 + 20 * DAY + 60_000);
    await prune("prune-3");
    expect(await store.head(stickyKey, { versionId: stickyVersion })).toBeUndefined();
    for (const v of gen2) {
      const [key, versionId] = v.split("@") as [string, string];
      expect((await store.head(key, { versionId }))?.versionId, `${v} (generation 2) kept`).toBe(versionId);
    }
  });
});
