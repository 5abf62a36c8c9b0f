/**
 * The FreezePort (core/protocol/snapshot-group.ts) over AWS Systems Manager Run Command, with cgmirror's own
 * SSM documents (never AWS-RunShellScript: the Snapshot role can run exactly these two scripts).
 *
 * - `freezeDocument()`: refuses to start after `notAfter` (a command delivered late must not freeze
 *   anything), starts a detached safety net — `sleep maxSeconds; fsfreeze -u <each mount>` — and then
 *   runs `fsfreeze -f` on each mount point (thawing those already frozen if one fails).
 * - `thawDocument()`: `fsfreeze -u` on each mount point and stops the safety net.
 *
 * Parameters reach the script as environment variables (`interpolationType: ENV_VAR`, SSM Agent >=
 * 3.3.2746.0; older agents get the documented `{{ }}` fallback) and are constrained by `allowedPattern`,
 * so no value can carry shell syntax. The stack creates both documents (infra/freeze-documents.ts)
 * and passes their names to the Snapshot function.
 *
 * The port sends one command per instance and waits (`GetCommandInvocation`) until every instance
 * reports success. When a freeze fails, every freeze command that has not finished is cancelled
 * (`CancelCommand`) before the thaw is sent, so an undelivered freeze cannot arrive after the thaw.
 */
import {
  CancelCommandCommand,
  GetCommandInvocationCommand,
  type GetCommandInvocationCommandOutput,
  SendCommandCommand,
  type SSMClient,
} from "@aws-sdk/client-ssm";
import type { FreezePort, FreezeTarget } from "#core/protocol/snapshot-group.ts";

/** Mount points joined by single spaces; each as the group config allows (core/config/group-config.ts). */
export const MOUNT_POINTS_PATTERN = "^/[A-Za-z0-9._/-]*( /[A-Za-z0-9._/-]*){0,99}$";
/** 1..120 seconds (freeze.maxCoordinationSeconds). */
export const MAX_SECONDS_PATTERN = "^([1-9]|[1-9][0-9]|1[01][0-9]|120)$";
/** The run id (the execution name), as the repository accepts it. */
export const RUN_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$";
/** Seconds since the epoch. */
export const EPOCH_SECONDS_PATTERN = "^[0-9]{10}$";

type Parameter = {
  type: "String";
  description: string;
  allowedPattern: string;
  interpolationType: "ENV_VAR";
};

const param = (description: string, allowedPattern: string): Parameter => ({
  type: "String",
  description,
  allowedPattern,
  interpolationType: "ENV_VAR",
});

/** Older agents do not set SSM_<name>: take the (pattern-checked) interpolated value instead. */
function fallback(names: readonly string[]): string[] {
  return names.map((n) => `if [ -z "\${SSM_${n}+x}" ]; then SSM_${n}='{{${n}}}'; fi`);
}

// biome-ignore lint/suspicious/noTemplateCurlyInString: bash parameter expansion, not a template
const PIDFILE = '"/run/cgmirror-autothaw-${SSM_runId//[^A-Za-z0-9._-]/_}.pid"';

/** The freeze script, as run on the instance (each line one runCommand entry). */
export function freezeScript(): string[] {
  return [
    "#!/bin/bash",
    "set -u",
    ...fallback(["mountPoints", "maxSeconds", "runId", "notAfter"]),
    "now=$(date +%s)",
    'if [ "$now" -gt "$SSM_notAfter" ]; then',
    '  echo "cgmirror: the freeze of run $SSM_runId arrived at $now, after its deadline $SSM_notAfter; nothing frozen" >&2',
    "  exit 3",
    "fi",
    // Safety net first: whatever happens to this run, every mount point thaws after maxSeconds.
    // $SSM_mountPoints is split on spaces on purpose (allowedPattern: no other separators, no globs).
    `setsid nohup bash -c 'sleep "$1"; shift; for m in "$@"; do fsfreeze -u "$m" 2>/dev/null; done' cgmirror-autothaw "$SSM_maxSeconds" $SSM_mountPoints >/dev/null 2>&1 </dev/null &`,
    `echo $! > ${PIDFILE}`,
    "frozen=()",
    "for m in $SSM_mountPoints; do",
    '  if ! fsfreeze -f "$m"; then',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: bash syntax, not a template
    '    echo "cgmirror: fsfreeze -f $m failed; thawing ${frozen[*]:-nothing}" >&2',
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

/** The thaw script: thaws each mount point (thawing a thawed one succeeds) and stops the safety net. */
export function thawScript(): string[] {
  return [
    "#!/bin/bash",
    "set -u",
    ...fallback(["mountPoints", "runId"]),
    "rc=0",
    "for m in $SSM_mountPoints; do",
    '  if ! out=$(fsfreeze -u "$m" 2>&1); then',
    '    case "$out" in *"Invalid argument"*) ;; *) echo "cgmirror: fsfreeze -u $m: $out" >&2; rc=1;; esac',
    "  fi",
    "done",
    // The safety net leads its own process group (setsid): end it together with its sleep.
    `if [ -f ${PIDFILE} ]; then pid=$(cat ${PIDFILE}); kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null; rm -f ${PIDFILE}; fi`,
    'echo "cgmirror: thawed"',
    "exit $rc",
  ];
}

function commandDocument(description: string, parameters: Record<string, Parameter>, script: string[]) {
  return {
    schemaVersion: "2.2",
    description,
    parameters,
    mainSteps: [
      {
        action: "aws:runShellScript",
        name: "run",
        precondition: { StringEquals: ["platformType", "Linux"] },
        inputs: { runCommand: script, timeoutSeconds: "150" },
      },
    ],
  };
}

/** Content of the freeze Command document (schema 2.2). */
export function freezeDocument(): Record<string, unknown> {
  return commandDocument(
    "cgmirror: freeze the listed file systems (fsfreeze -f), with an auto-thaw after maxSeconds",
    {
      mountPoints: param("Mount points, separated by single spaces.", MOUNT_POINTS_PATTERN),
      maxSeconds: param(
        "The safety net thaws every mount point after this many seconds.",
        MAX_SECONDS_PATTERN,
      ),
      runId: param("The cgmirror run (execution name).", RUN_ID_PATTERN),
      notAfter: param("Do not freeze after this time (seconds since the epoch).", EPOCH_SECONDS_PATTERN),
    },
    freezeScript(),
  );
}

/** Content of the thaw Command document (schema 2.2). */
export function thawDocument(): Record<string, unknown> {
  return commandDocument(
    "cgmirror: thaw the listed file systems (fsfreeze -u) and stop the auto-thaw",
    {
      mountPoints: param("Mount points, separated by single spaces.", MOUNT_POINTS_PATTERN),
      runId: param("The cgmirror run (execution name).", RUN_ID_PATTERN),
    },
    thawScript(),
  );
}

export interface SsmFreezeProps {
  /** A configured client, created once by the caller. */
  readonly client: SSMClient;
  /** Name of the stack's freeze document (freezeDocument()). */
  readonly freezeDocument: string;
  /** Name of the stack's thaw document (thawDocument()). */
  readonly thawDocument: string;
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

const RUNNING = new Set(["Pending", "InProgress", "Delayed"]);

function check(value: string, pattern: string, what: string): string {
  if (!new RegExp(pattern).test(value)) {
    throw new TypeError(`expected ${what} matching ${pattern}, got ${JSON.stringify(value)}`);
  }
  return value;
}

interface Sent {
  readonly instanceId: string;
  commandId?: string;
  /** The last status seen; undefined while the invocation is not visible yet. */
  status?: string;
}

export class SsmFreeze implements FreezePort {
  readonly #client: SSMClient;
  readonly #freezeDoc: string;
  readonly #thawDoc: string;
  readonly #pollMs: number;
  readonly #thawWaitMs: number;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #now: () => number;

  constructor(props: SsmFreezeProps) {
    if (!props.freezeDocument || !props.thawDocument) {
      throw new TypeError("expected the names of the stack's freeze and thaw SSM documents, got none");
    }
    this.#client = props.client;
    this.#freezeDoc = props.freezeDocument;
    this.#thawDoc = props.thawDocument;
    this.#pollMs = props.pollIntervalMs ?? 250;
    this.#thawWaitMs = (props.thawWaitSeconds ?? 60) * 1000;
    this.#sleep = props.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.#now = props.now ?? Date.now;
  }

  async freeze(targets: readonly FreezeTarget[], maxSeconds: number, runId: string): Promise<void> {
    check(String(maxSeconds), MAX_SECONDS_PATTERN, "maxSeconds");
    check(runId, RUN_ID_PATTERN, "a run id");
    const notAfter = String(Math.floor((this.#now() + maxSeconds * 1000) / 1000));
    const sent: Sent[] = targets.map((t) => ({ instanceId: t.instanceId }));
    const results = await Promise.allSettled(
      targets.map((t, i) =>
        this.#run(
          sent[i] as Sent,
          this.#freezeDoc,
          {
            mountPoints: [check(t.mountPoints.join(" "), MOUNT_POINTS_PATTERN, "mount points")],
            maxSeconds: [String(maxSeconds)],
            runId: [runId],
            notAfter: [notAfter],
          },
          maxSeconds * 1000,
          "freeze",
        ),
      ),
    );
    const failed = results.flatMap((r) => (r.status === "rejected" ? [(r.reason as Error).message] : []));
    if (failed.length === 0) return;
    // A freeze still pending or running must never land after the thaw: cancel it first.
    await Promise.allSettled(
      sent
        .filter((s) => s.commandId !== undefined && (s.status === undefined || RUNNING.has(s.status)))
        .map((s) =>
          this.#client.send(
            new CancelCommandCommand({ CommandId: s.commandId, InstanceIds: [s.instanceId] }),
          ),
        ),
    );
    // Thaw every target (thawing one that never froze is harmless), then report the freeze failure.
    await this.thaw(targets, runId).catch(() => undefined);
    throw new Error(
      `freeze failed on ${failed.length} of ${targets.length} instance(s): ${failed.join("; ")}`,
    );
  }

  async thaw(targets: readonly FreezeTarget[], runId: string): Promise<void> {
    check(runId, RUN_ID_PATTERN, "a run id");
    const results = await Promise.allSettled(
      targets.map((t) =>
        this.#run(
          { instanceId: t.instanceId },
          this.#thawDoc,
          {
            mountPoints: [check(t.mountPoints.join(" "), MOUNT_POINTS_PATTERN, "mount points")],
            runId: [runId],
          },
          this.#thawWaitMs,
          "thaw",
        ),
      ),
    );
    const failed = results.flatMap((r) => (r.status === "rejected" ? [(r.reason as Error).message] : []));
    if (failed.length > 0) {
      throw new Error(
        `thaw failed on ${failed.length} of ${targets.length} instance(s): ${failed.join("; ")}`,
      );
    }
  }

  async #run(
    sent: Sent,
    document: string,
    parameters: Record<string, string[]>,
    waitMs: number,
    what: string,
  ): Promise<void> {
    const { instanceId } = sent;
    const out = await this.#client.send(
      new SendCommandCommand({
        DocumentName: document,
        InstanceIds: [instanceId],
        Comment: `cgmirror ${what}`,
        // Delivery timeout (minimum 30 s); the document's own timeout bounds its run.
        TimeoutSeconds: 30,
        Parameters: parameters,
      }),
    );
    const commandId = out.Command?.CommandId;
    if (!commandId) throw new Error(`${what} on ${instanceId}: SendCommand returned no command id`);
    sent.commandId = commandId;
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
      if (status !== undefined) sent.status = status;
      if (status === "Success") return;
      if (status !== undefined && !RUNNING.has(status)) {
        const stderr = (last?.StandardErrorContent ?? "").trim().slice(0, 300);
        throw new Error(
          `${what} on ${instanceId} ended ${status}${stderr ? `: ${stderr}` : ""} (command ${commandId})`,
        );
      }
      if (this.#now() >= deadline) {
        throw new Error(
          `${what} on ${instanceId} still ${status ?? "not delivered"} after ${Math.round(waitMs / 1000)} s (command ${commandId})`,
        );
      }
      await this.#sleep(this.#pollMs);
    }
  }
}
