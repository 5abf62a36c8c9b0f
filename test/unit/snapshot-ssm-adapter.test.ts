/**
 * adapters/ssm-freeze.ts: the SSM port against a mocked SSM client (aws-sdk-client-mock; SSM has no
 * local emulator), and the freeze/thaw documents' scripts run for real by bash with a fake `fsfreeze`.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CancelCommandCommand,
  GetCommandInvocationCommand,
  SendCommandCommand,
  SSMClient,
} from "@aws-sdk/client-ssm";
import { mockClient } from "aws-sdk-client-mock";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import {
  freezeDocument,
  freezeScript,
  MAX_SECONDS_PATTERN,
  MOUNT_POINTS_PATTERN,
  RUN_ID_PATTERN,
  SsmFreeze,
  thawDocument,
  thawScript,
} from "#adapters/ssm-freeze.ts";

const ssm = mockClient(SSMClient);
const A = "i-0123456789abcdef0";
const B = "i-0123456789abcdef1";
const targets = [
  { instanceId: A, mountPoints: ["/data", "/wal"] },
  { instanceId: B, mountPoints: ["/log"] },
];
const NOW = 1_767_225_600_000; // 2026-01-01T00:00:00Z

function adapter(now: () => number = () => NOW) {
  return new SsmFreeze({
    client: new SSMClient({ region: "us-east-1" }),
    freezeDocument: "Cgmirror-Freeze-ABC",
    thawDocument: "Cgmirror-Thaw-DEF",
    pollIntervalMs: 0,
    sleep: async () => {},
    now,
  });
}

const sends = () => ssm.commandCalls(SendCommandCommand).map((c) => c.args[0].input);

beforeEach(() => {
  ssm.reset();
  ssm.on(SendCommandCommand).callsFake((input: { InstanceIds: string[]; Comment: string }) => ({
    Command: { CommandId: `${input.Comment}-${input.InstanceIds[0]}` },
  }));
  ssm.on(CancelCommandCommand).resolves({});
});

describe("SsmFreeze (aws-sdk-client-mock)", () => {
  it("GIVEN two instances WHEN frozen THEN the stack's freeze document runs on each with its mount points, auto-thaw time, run id and deadline; never AWS-RunShellScript", async () => {
    ssm
      .on(GetCommandInvocationCommand)
      .rejectsOnce(Object.assign(new Error("not yet"), { name: "InvocationDoesNotExist" }))
      .resolvesOnce({ Status: "InProgress" })
      .resolves({ Status: "Success" });
    await adapter().freeze(targets, 30, "run-1");
    expect(sends()).toHaveLength(2);
    for (const s of sends()) expect(s.DocumentName).toBe("Cgmirror-Freeze-ABC");
    const byInstance = Object.fromEntries(sends().map((s) => [s.InstanceIds?.[0], s.Parameters]));
    expect(byInstance[A]).toEqual({
      mountPoints: ["/data /wal"],
      maxSeconds: ["30"],
      runId: ["run-1"],
      notAfter: [String(NOW / 1000 + 30)],
    });
    expect(byInstance[B]?.mountPoints).toEqual(["/log"]);
    expect(JSON.stringify(sends())).not.toContain("AWS-RunShellScript");
    expect(ssm.commandCalls(CancelCommandCommand)).toHaveLength(0);
  });

  it("fails when one instance cannot freeze, after cancelling the other's undelivered freeze and only then thawing both", async () => {
    ssm
      .on(GetCommandInvocationCommand)
      .callsFake((input: { CommandId: string }) =>
        input.CommandId === `cgmirror freeze-${B}`
          ? { Status: "Failed", StandardErrorContent: "fsfreeze: /log: Operation not supported" }
          : { Status: "Pending" },
      );
    let t = NOW;
    await expect(
      adapter(() => {
        t += 1000;
        return t;
      }).freeze(targets, 5, "run-1"),
    ).rejects.toThrow(
      /freeze failed on 2 of 2 instance\(s\): .*freeze on i-0123456789abcdef1 ended Failed: fsfreeze: \/log: Operation not supported/,
    );
    const cancels = ssm.commandCalls(CancelCommandCommand).map((c) => c.args[0].input);
    expect(cancels).toEqual([{ CommandId: `cgmirror freeze-${A}`, InstanceIds: [A] }]);
    const thaws = ssm
      .commandCalls(SendCommandCommand)
      .filter((c) => c.args[0].input.Comment === "cgmirror thaw");
    expect(thaws.map((c) => c.args[0].input.InstanceIds?.[0]).sort()).toEqual([A, B]);
    expect(thaws.every((c) => c.args[0].input.DocumentName === "Cgmirror-Thaw-DEF")).toBe(true);
    // Order: the cancel went out before any thaw.
    const order = ssm.calls().map((c) => {
      const cmd = c.args[0] as { input: { Comment?: string } };
      return cmd instanceof CancelCommandCommand ? "cancel" : (cmd.input.Comment ?? "other");
    });
    expect(order.indexOf("cancel")).toBeGreaterThan(-1);
    expect(order.indexOf("cancel")).toBeLessThan(order.indexOf("cgmirror thaw"));
  });

  it("fails when an instance does not report frozen within the maximum coordination time, cancelling that freeze", async () => {
    let t = NOW;
    ssm.on(GetCommandInvocationCommand).callsFake(() => {
      t += 1000;
      return { Status: "InProgress" };
    });
    await expect(adapter(() => t).freeze([targets[1] as (typeof targets)[1]], 5, "run-1")).rejects.toThrow(
      /still InProgress after 5 s/,
    );
    expect(ssm.commandCalls(CancelCommandCommand)).toHaveLength(1);
  });

  it("GIVEN frozen instances WHEN thawed THEN the thaw document runs on each with its mount points", async () => {
    ssm.on(GetCommandInvocationCommand).resolves({ Status: "Success" });
    await adapter().thaw(targets, "run-1");
    expect(sends().map((s) => [s.DocumentName, s.InstanceIds?.[0], s.Parameters?.mountPoints?.[0]])).toEqual([
      ["Cgmirror-Thaw-DEF", A, "/data /wal"],
      ["Cgmirror-Thaw-DEF", B, "/log"],
    ]);
  });

  it("fails when a thaw fails, naming the instances", async () => {
    ssm.on(GetCommandInvocationCommand).resolves({ Status: "TimedOut" });
    await expect(adapter().thaw(targets, "run-1")).rejects.toThrow(/thaw failed on 2 of 2 instance\(s\)/);
  });

  it("fails before sending anything when a mount point or run id carries shell syntax", async () => {
    await expect(
      adapter().freeze([{ instanceId: A, mountPoints: ["/data; reboot"] }], 30, "run-1"),
    ).rejects.toThrow(TypeError);
    await expect(adapter().thaw(targets, "run-1$(id)")).rejects.toThrow(TypeError);
    expect(sends()).toHaveLength(0);
  });
});

describe("the freeze and thaw documents", () => {
  it("GIVEN both documents THEN every parameter is constrained by allowedPattern and reaches the script as an environment variable", () => {
    const names = {
      freeze: ["mountPoints", "maxSeconds", "runId", "notAfter"],
      thaw: ["mountPoints", "runId"],
    };
    for (const [doc, expected] of [
      [freezeDocument(), names.freeze],
      [thawDocument(), names.thaw],
    ] as const) {
      const parameters = doc.parameters as Record<string, Record<string, unknown>>;
      expect(Object.keys(parameters)).toEqual(expected);
      for (const p of Object.values(parameters)) {
        expect(p).toMatchObject({ type: "String", interpolationType: "ENV_VAR" });
        expect(String(p.allowedPattern)).toMatch(/^\^.*\$$/);
      }
      expect(doc).toMatchObject({ schemaVersion: "2.2" });
    }
  });

  it("fails values with shell syntax or out of range at the document's allowedPattern", () => {
    const mounts = new RegExp(MOUNT_POINTS_PATTERN);
    expect(mounts.test("/data /var/lib/pg-wal")).toBe(true);
    for (const bad of ["/data;reboot", "/d$(id)", "/a\n/b", "/a  /b", "data", "/a /b`x`", "/a'b"]) {
      expect(mounts.test(bad), bad).toBe(false);
    }
    expect(new RegExp(MAX_SECONDS_PATTERN).test("120")).toBe(true);
    for (const bad of ["0", "121", "30s", "1e2"])
      expect(new RegExp(MAX_SECONDS_PATTERN).test(bad), bad).toBe(false);
    expect(new RegExp(RUN_ID_PATTERN).test("orders-20260101T000000-ab12cd34")).toBe(true);
    expect(new RegExp(RUN_ID_PATTERN).test("x;y")).toBe(false);
  });
});

describe("the documents' scripts, run by bash with a fake fsfreeze", () => {
  const dir = mkdtempSync(join(tmpdir(), "cgmirror-fsfreeze-"));
  const log = join(dir, "fsfreeze.log");
  // Records every call; fails -f on a mount point named /fail.
  writeFileSync(
    join(dir, "fsfreeze"),
    `#!/bin/bash\necho "$*" >> ${log}\nif [ "$1" = "-f" ] && [ "$2" = "/fail" ]; then echo "fsfreeze: $2: Operation not supported" >&2; exit 1; fi\n`,
  );
  chmodSync(join(dir, "fsfreeze"), 0o755);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const run = (script: string[], env: Record<string, string>) => {
    writeFileSync(log, "");
    const r = spawnSync("bash", ["-c", script.join("\n")], {
      env: { PATH: `${dir}:${process.env.PATH}`, ...env },
      encoding: "utf8",
    });
    return {
      code: r.status,
      stderr: r.stderr,
      calls: readFileSync(log, "utf8").trim().split("\n").filter(Boolean),
    };
  };
  const epoch = () => Math.floor(Date.now() / 1000);
  const pidfile = (runId: string) => `/run/cgmirror-autothaw-${runId}.pid`;

  it("GIVEN a deadline in the past THEN the freeze script freezes nothing and exits 3 (a late delivery)", () => {
    const r = run(freezeScript(), {
      SSM_mountPoints: "/a /b",
      SSM_maxSeconds: "30",
      SSM_runId: "t-late",
      SSM_notAfter: String(epoch() - 5),
    });
    expect(r.code).toBe(3);
    expect(r.calls).toEqual([]);
    expect(r.stderr).toContain("after its deadline");
  });

  it("GIVEN mount points THEN each is frozen, and the safety net thaws them by itself after maxSeconds", async () => {
    const r = run(freezeScript(), {
      SSM_mountPoints: "/a /b",
      SSM_maxSeconds: "1",
      SSM_runId: "t-net",
      SSM_notAfter: String(epoch() + 60),
    });
    expect(r.code).toBe(0);
    expect(r.calls).toEqual(["-f /a", "-f /b"]);
    // The detached safety net runs on its own: wait (bounded) for its thaw calls.
    for (
      let i = 0;
      i < 100 &&
      readFileSync(log, "utf8")
        .split("\n")
        .filter((l) => l.startsWith("-u")).length < 2;
      i++
    ) {
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(readFileSync(log, "utf8").trim().split("\n").slice(2)).toEqual(["-u /a", "-u /b"]);
    rmSync(pidfile("t-net"), { force: true });
  });

  it("fails when one mount point cannot freeze, after thawing those already frozen", () => {
    const r = run(freezeScript(), {
      SSM_mountPoints: "/a /fail /c",
      SSM_maxSeconds: "120",
      SSM_runId: "t-fail",
      SSM_notAfter: String(epoch() + 60),
    });
    expect(r.code).toBe(1);
    expect(r.calls).toEqual(["-f /a", "-f /fail", "-u /a"]);
    // The thaw stops the safety net the failed freeze left behind.
    const pid = Number(readFileSync(pidfile("t-fail"), "utf8"));
    const t = run(thawScript(), { SSM_mountPoints: "/a /fail /c", SSM_runId: "t-fail" });
    expect(t.code).toBe(0);
    expect(t.calls).toEqual(["-u /a", "-u /fail", "-u /c"]);
    expect(existsSync(pidfile("t-fail"))).toBe(false);
    // The safety net's process group (bash and its sleep) is gone, or a zombie waiting for its reaper.
    const group = spawnSync("ps", ["-o", "stat=", "-g", String(pid)], { encoding: "utf8" }).stdout.trim();
    expect(group.split("\n").filter((st) => st !== "" && !st.startsWith("Z"))).toEqual([]);
  });
});
