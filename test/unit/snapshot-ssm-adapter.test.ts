/** adapters/ssm-freeze.ts against a mocked SSM client (aws-sdk-client-mock; SSM has no local emulator). */
import { GetCommandInvocationCommand, SendCommandCommand, SSMClient } from "@aws-sdk/client-ssm";
import { mockClient } from "aws-sdk-client-mock";
import { beforeEach, describe, expect, it } from "vitest";
import { freezeScript, SsmFreeze, thawScript } from "#adapters/ssm-freeze.ts";

const ssm = mockClient(SSMClient);
const A = "i-0123456789abcdef0";
const B = "i-0123456789abcdef1";
const targets = [
  { instanceId: A, mountPoints: ["/data", "/wal"] },
  { instanceId: B, mountPoints: ["/log"] },
];

function adapter(now?: () => number) {
  return new SsmFreeze({
    client: new SSMClient({ region: "us-east-1" }),
    pollIntervalMs: 0,
    sleep: async () => {},
    ...(now ? { now } : {}),
  });
}

function commandsSentTo(instanceId: string): string[][] {
  return ssm
    .commandCalls(SendCommandCommand)
    .filter((c) => c.args[0].input.InstanceIds?.[0] === instanceId)
    .map((c) => c.args[0].input.Parameters?.commands ?? []);
}

beforeEach(() => {
  ssm.reset();
  ssm.on(SendCommandCommand).callsFake((input: { InstanceIds: string[]; Comment: string }) => ({
    Command: { CommandId: `${input.Comment}-${input.InstanceIds[0]}` },
  }));
});

describe("freezeScript / thawScript", () => {
  it("GIVEN mount points THEN the freeze script starts the auto-thaw safety net before freezing", () => {
    const lines = freezeScript(["/data", "/wal"], 30, "run-1");
    const text = lines.join("\n");
    const net = lines.findIndex((l) => l.includes("sleep 30"));
    const freeze = lines.findIndex((l) => l.includes("fsfreeze -f"));
    expect(net).toBeGreaterThan(-1);
    expect(net).toBeLessThan(freeze);
    expect(text).toContain("'/data' '/wal'");
    expect(text).toContain("setsid nohup");
  });

  it("GIVEN mount points THEN the thaw script thaws each and stops the safety net", () => {
    const text = thawScript(["/data"], "run-1").join("\n");
    expect(text).toContain('fsfreeze -u "$m"');
    expect(text).toContain("'/data'");
    expect(text).toContain("kill");
  });

  it("fails to build a script around a mount point with shell syntax", () => {
    expect(() => freezeScript(["/data; reboot"], 30, "run-1")).toThrow(TypeError);
    expect(() => thawScript(["/$(id)"], "run-1")).toThrow(TypeError);
  });
});

describe("SsmFreeze (aws-sdk-client-mock)", () => {
  it("GIVEN two instances WHEN frozen THEN one AWS-RunShellScript command per instance with its own mount points, awaited until Success", async () => {
    ssm
      .on(GetCommandInvocationCommand)
      .rejectsOnce(Object.assign(new Error("not yet"), { name: "InvocationDoesNotExist" }))
      .resolvesOnce({ Status: "InProgress" })
      .resolves({ Status: "Success" });
    await adapter().freeze(targets, 30, "run-1");
    const sends = ssm.commandCalls(SendCommandCommand).map((c) => c.args[0].input);
    expect(sends).toHaveLength(2);
    expect(sends.every((s) => s.DocumentName === "AWS-RunShellScript")).toBe(true);
    expect(commandsSentTo(A)[0]?.join("\n")).toContain("'/data' '/wal'");
    expect(commandsSentTo(B)[0]?.join("\n")).toContain("'/log'");
    expect(commandsSentTo(B)[0]?.join("\n")).not.toContain("/data");
  });

  it("fails when one instance cannot freeze, after sending a thaw to every instance", async () => {
    ssm
      .on(GetCommandInvocationCommand)
      .callsFake((input: { CommandId: string }) =>
        input.CommandId === `cgmirror freeze-${B}`
          ? { Status: "Failed", StandardErrorContent: "fsfreeze: /log: Operation not supported" }
          : { Status: "Success" },
      );
    await expect(adapter().freeze(targets, 30, "run-1")).rejects.toThrow(
      /freeze failed on 1 of 2 instance\(s\): freeze on i-0123456789abcdef1 ended Failed: fsfreeze: \/log: Operation not supported/,
    );
    const thaws = ssm
      .commandCalls(SendCommandCommand)
      .filter((c) => c.args[0].input.Comment === "cgmirror thaw");
    expect(thaws.map((c) => c.args[0].input.InstanceIds?.[0]).sort()).toEqual([A, B]);
  });

  it("fails when an instance does not report frozen within the maximum coordination time", async () => {
    let t = 0;
    ssm.on(GetCommandInvocationCommand).callsFake(() => {
      t += 1000;
      return { Status: "InProgress" };
    });
    await expect(adapter(() => t).freeze([targets[1] as (typeof targets)[1]], 5, "run-1")).rejects.toThrow(
      /still InProgress after 5 s/,
    );
  });

  it("GIVEN frozen instances WHEN thawed THEN each gets fsfreeze -u for its mount points", async () => {
    ssm.on(GetCommandInvocationCommand).resolves({ Status: "Success" });
    await adapter().thaw(targets, "run-1");
    expect(commandsSentTo(A)[0]?.join("\n")).toContain("fsfreeze -u");
    expect(commandsSentTo(A)[0]?.join("\n")).toContain("'/data' '/wal'");
  });

  it("fails when a thaw fails, naming the instance", async () => {
    ssm.on(GetCommandInvocationCommand).resolves({ Status: "TimedOut" });
    await expect(adapter().thaw(targets, "run-1")).rejects.toThrow(/thaw failed on 2 of 2 instance\(s\)/);
  });
});
