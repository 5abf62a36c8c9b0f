/**
 * The FreezePort (core/snapshot-group.ts) over AWS Systems Manager Run Command.
 *
 * Freeze: one `SendCommand` (document AWS-RunShellScript) per instance that first starts a detached
 * safety net — `sleep <max>; fsfreeze -u <each mount>` — and then runs `fsfreeze -f` on each listed
 * mount point (thawing those already frozen if one fails). The port waits (`GetCommandInvocation`)
 * until every instance reports success. Thaw: `fsfreeze -u` on each mount point and stop the safety
 * net. Mount points and run ids are validated by the config/contract schemas to a character set
 * without shell syntax, and are single-quoted as well.
 */
import {
  GetCommandInvocationCommand,
  type GetCommandInvocationCommandOutput,
  SendCommandCommand,
  type SSMClient,
} from "@aws-sdk/client-ssm";
import type { FreezePort, FreezeTarget } from "#core/snapshot-group.ts";

export const RUN_SHELL_SCRIPT = "AWS-RunShellScript";

export interface SsmFreezeProps {
  /** A configured client, created once by the caller. */
  readonly client: SSMClient;
  /**
   * Pause between two `GetCommandInvocation` polls.
   * @default 250
   */
  readonly pollIntervalMs?: number;
  /**
   * How long to wait for a thaw command before giving up (the safety net still thaws).
   * @default 60
   */
  readonly thawWaitSeconds?: number;
  /** @default setTimeout-based sleep */
  readonly sleep?: (ms: number) => Promise<void>;
  /** @default Date.now */
  readonly now?: () => number;
}

const SAFE = /^[A-Za-z0-9._/:-]+$/;

function quote(value: string): string {
  if (!SAFE.test(value)) throw new TypeError(`refusing to put ${JSON.stringify(value)} into a shell script`);
  return `'${value}'`;
}

function pidFile(runId: string): string {
  return `/run/cgmirror-autothaw-${runId.replace(/[^A-Za-z0-9._-]/g, "_")}.pid`;
}

/** The shell lines that freeze `mountPoints` with an auto-thaw after `maxSeconds`. */
export function freezeScript(mountPoints: readonly string[], maxSeconds: number, runId: string): string[] {
  if (!Number.isInteger(maxSeconds) || maxSeconds < 1) {
    throw new TypeError(`expected maxSeconds to be a whole number >= 1, got ${maxSeconds}`);
  }
  const mounts = mountPoints.map(quote).join(" ");
  const pid = quote(pidFile(runId));
  return [
    "#!/bin/bash",
    `# cgmirror freeze, run ${runId}`,
    // Safety net first: whatever happens to this run, every mount point thaws after maxSeconds.
    `setsid nohup bash -c 'sleep ${maxSeconds}; for m in "$@"; do fsfreeze -u "$m" 2>/dev/null; done' cgmirror-autothaw ${mounts} >/dev/null 2>&1 </dev/null &`,
    `echo $! > ${pid}`,
    "frozen=()",
    `for m in ${mounts}; do`,
    '  if ! fsfreeze -f "$m"; then',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: bash syntax, not a template
    '    echo "cgmirror: fsfreeze -f $m failed; thawing ${frozen[*]}" >&2',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: bash syntax, not a template
    '    for f in "${frozen[@]}"; do fsfreeze -u "$f"; done',
    "    exit 1",
    "  fi",
    '  frozen+=("$m")',
    "done",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: bash syntax, not a template
    'echo "cgmirror: frozen ${frozen[*]}"',
  ];
}

/** The shell lines that thaw `mountPoints` and stop the safety net. Thawing a thawed mount succeeds. */
export function thawScript(mountPoints: readonly string[], runId: string): string[] {
  const mounts = mountPoints.map(quote).join(" ");
  const pid = quote(pidFile(runId));
  return [
    "#!/bin/bash",
    `# cgmirror thaw, run ${runId}`,
    "rc=0",
    `for m in ${mounts}; do`,
    '  if ! out=$(fsfreeze -u "$m" 2>&1); then',
    '    case "$out" in *"Invalid argument"*) ;; *) echo "cgmirror: fsfreeze -u $m: $out" >&2; rc=1;; esac',
    "  fi",
    "done",
    `if [ -f ${pid} ]; then kill "$(cat ${pid})" 2>/dev/null; rm -f ${pid}; fi`,
    'echo "cgmirror: thawed"',
    "exit $rc",
  ];
}

const RUNNING = new Set(["Pending", "InProgress", "Delayed"]);

export class SsmFreeze implements FreezePort {
  readonly #client: SSMClient;
  readonly #pollMs: number;
  readonly #thawWaitMs: number;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #now: () => number;

  constructor(props: SsmFreezeProps) {
    this.#client = props.client;
    this.#pollMs = props.pollIntervalMs ?? 250;
    this.#thawWaitMs = (props.thawWaitSeconds ?? 60) * 1000;
    this.#sleep = props.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.#now = props.now ?? Date.now;
  }

  async freeze(targets: readonly FreezeTarget[], maxSeconds: number, runId: string): Promise<void> {
    const results = await Promise.allSettled(
      targets.map((t) =>
        this.#run(t.instanceId, freezeScript(t.mountPoints, maxSeconds, runId), maxSeconds * 1000, "freeze"),
      ),
    );
    const failed = results.flatMap((r) => (r.status === "rejected" ? [(r.reason as Error).message] : []));
    if (failed.length === 0) return;
    // Thaw every target (thawing one that never froze is harmless), then report the freeze failure.
    await this.thaw(targets, runId).catch(() => undefined);
    throw new Error(
      `freeze failed on ${failed.length} of ${targets.length} instance(s): ${failed.join("; ")}`,
    );
  }

  async thaw(targets: readonly FreezeTarget[], runId: string): Promise<void> {
    const results = await Promise.allSettled(
      targets.map((t) => this.#run(t.instanceId, thawScript(t.mountPoints, runId), this.#thawWaitMs, "thaw")),
    );
    const failed = results.flatMap((r) => (r.status === "rejected" ? [(r.reason as Error).message] : []));
    if (failed.length > 0) {
      throw new Error(
        `thaw failed on ${failed.length} of ${targets.length} instance(s): ${failed.join("; ")}`,
      );
    }
  }

  async #run(instanceId: string, commands: string[], waitMs: number, what: string): Promise<void> {
    const sent = await this.#client.send(
      new SendCommandCommand({
        DocumentName: RUN_SHELL_SCRIPT,
        InstanceIds: [instanceId],
        Comment: `cgmirror ${what}`,
        // Delivery timeout (minimum 30 s); the script's own timeout bounds its run.
        TimeoutSeconds: 30,
        Parameters: { commands, executionTimeout: [String(Math.max(30, Math.ceil(waitMs / 1000)))] },
      }),
    );
    const commandId = sent.Command?.CommandId;
    if (!commandId) throw new Error(`${what} on ${instanceId}: SendCommand returned no command id`);
    const deadline = this.#now() + waitMs;
    let last: GetCommandInvocationCommandOutput | undefined;
    for (;;) {
      try {
        last = await this.#client.send(
          new GetCommandInvocationCommand({ CommandId: commandId, InstanceId: instanceId }),
        );
      } catch (error) {
        // The invocation is not visible for a moment after SendCommand.
        if ((error as { name?: string }).name !== "InvocationDoesNotExist") throw error;
      }
      const status = last?.Status;
      if (status === "Success") return;
      if (status !== undefined && !RUNNING.has(status)) {
        const stderr = (last?.StandardErrorContent ?? "").trim().slice(0, 300);
        throw new Error(
          `${what} on ${instanceId} ended ${status}${stderr ? `: ${stderr}` : ""} (command ${commandId})`,
        );
      }
      if (this.#now() >= deadline) {
        throw new Error(
          `${what} on ${instanceId} still ${status ?? "not started"} after ${Math.round(waitMs / 1000)} s (command ${commandId})`,
        );
      }
      await this.#sleep(this.#pollMs);
    }
  }
}
