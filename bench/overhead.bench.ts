/**
 * `npm run bench:overhead` — the non-transfer time of a backup run, measured through the local runner
 * (the synthesized state machine, the real handlers, the local S3 server and EBS emulator). Prints
 * ONE JSON line.
 *
 * One volume of 1 GiB with a few changed blocks per run, so the transfer is small and what remains is
 * the run's fixed cost: lock, recover, snapshot, the snapshot check, plan, prepare, commit, release.
 * Three runs after a warm-up run (the first synthesizes the definition and opens the stack). Per state:
 * the handler's own wall time (measured around the bound handler), and the interpreter's time between
 * states (the run's wall time minus the handlers'). The snapshot wait (Wait states, the local snapshot
 * completing) is reported apart, as bench:aws leaves it out.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseGroupConfig } from "#core/config/group-config.ts";
import { localClients } from "#local/clients.ts";
import { createLocalDeps, runLocalBackup } from "#local/runner.ts";
import { startLocalStack } from "#local/stack.ts";

const BLOCK = 524_288;
const RUNS = 3;

const dir = await mkdtemp(join(tmpdir(), "cgm-overhead-"));
const stack = await startLocalStack({ stateDir: join(dir, "state") });
const clients = localClients(stack);
const local = createLocalDeps({ endpoints: stack, simulator: clients.simulator });
/** Which state a call belongs to (Map items run concurrently). */
const current = new AsyncLocalStorage<string>();
/** Calls per state and port: S3 requests (store), EC2 snapshot calls, freeze (SSM) calls. */
const portCalls: Record<string, Record<string, number>> = {};
function counted<T extends object>(port: string, target: T): T {
  return new Proxy(target, {
    get(t, prop, receiver) {
      const v = Reflect.get(t, prop, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        const state = current.getStore() ?? "(none)";
        const byPort = portCalls[state] ?? {};
        portCalls[state] = byPort;
        byPort[port] = (byPort[port] ?? 0) + 1;
        return (v as (...a: unknown[]) => unknown).apply(t, args);
      };
    },
  });
}
const stores = new Map<string, ReturnType<typeof local.store>>();
const deps = {
  ...local,
  store: (bucket: string) => {
    let s = stores.get(bucket);
    if (!s) {
      s = counted("s3", local.store(bucket));
      stores.set(bucket, s);
    }
    return s;
  },
  snapshots: () => counted("ec2", local.snapshots()),
  freeze: () => counted("ssm", local.freeze()),
};
try {
  const volume = { id: "vol-0000000e", instanceId: "i-0000000e", mountPoint: "/data" };
  await clients.simulator.create({ id: volume.id, sizeGiB: 1, instanceId: volume.instanceId });
  const config = parseGroupConfig({
    group: "overhead",
    volumes: [volume],
    target: { bucket: stack.bucket },
    schedule: { expression: "rate(1 hour)" },
    freeze: { enabled: true, maxCoordinationSeconds: 30 },
    snapshots: { keep: 2, completionTimeoutMinutes: 5 },
  });
  const runs: Record<string, number>[] = [];
  const requests: Record<string, Record<string, number>>[] = [];
  for (let r = 0; r <= RUNS; r++) {
    for (let b = 0; b < 8; b++) {
      await clients.simulator.write(volume.id, (r * 8 + b) * 7 * BLOCK, randomBytes(BLOCK));
    }
    const handlerMs: Record<string, number> = {};
    for (const k of Object.keys(portCalls)) delete portCalls[k];
    const calls: Record<string, number> = {};
    const started = performance.now();
    const run = await runLocalBackup({
      config,
      deps,
      wrap: (_task, state, fn) => async (event) => {
        const t0 = performance.now();
        try {
          return await current.run(state, () => fn(event));
        } finally {
          handlerMs[state] = (handlerMs[state] ?? 0) + performance.now() - t0;
          calls[state] = (calls[state] ?? 0) + 1;
        }
      },
    });
    const wallMs = performance.now() - started;
    if (run.outcome !== "committed")
      throw new Error(`run ${r} ended ${run.outcome}: ${run.error} ${run.cause}`);
    if (r === 0) continue; // warm-up: synth, stack connections, JIT
    const handlers = Object.values(handlerMs).reduce((a, b) => a + b, 0);
    const transfer = handlerMs.TransferShard ?? 0;
    const snapshotCheck = handlerMs.CheckSnapshots ?? 0;
    runs.push({
      wallMs: Math.round(wallMs),
      ...Object.fromEntries(Object.entries(handlerMs).map(([k, v]) => [`${k}Ms`, Math.round(v)])),
      checkSnapshotsCalls: calls.CheckSnapshots ?? 0,
      handlersMs: Math.round(handlers),
      // Between the states: the interpreter, shortened waits (WaitForSnapshots), payload checks.
      betweenStatesMs: Math.round(wallMs - handlers),
      transferMs: Math.round(transfer),
      nonTransferHandlersMs: Math.round(handlers - transfer - snapshotCheck),
      historyEvents: run.historyEvents,
    });
    requests.push(JSON.parse(JSON.stringify(portCalls)));
  }
  const median = (k: string) => {
    const v = runs.map((r) => r[k] ?? 0).sort((a, b) => a - b);
    return v[Math.floor(v.length / 2)]!;
  };
  const keys = [...new Set(runs.flatMap((r) => Object.keys(r)))];
  console.log(
    JSON.stringify({
      bench: "overhead",
      runs: runs.length,
      median: Object.fromEntries(keys.map((k) => [k, median(k)])),
      all: runs,
      // Port calls per state of the last run (s3: ObjectStore calls, one request each but multipart).
      calls: requests.at(-1),
      loadavg1: Number(loadavg()[0]!.toFixed(2)),
      cores: (await import("node:os")).cpus().length,
    }),
  );
} finally {
  local.close();
  clients.destroy();
  await stack.stop();
  await rm(dir, { recursive: true, force: true });
}
