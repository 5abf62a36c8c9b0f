/**
 * The README's "The CLI, locally" sequence, run as written through the real bin: every line's exit
 * code is what its comment says (exit 1 where it says so, else 0), the backups end as their comments
 * say, and the images it restores are there. If the README changes, this test runs the new text.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cgmirror } from "../support/cli.ts";

const readme = readFileSync(join(import.meta.dirname, "..", "..", "README.md"), "utf8");

/** The commands of the sh block under "## The CLI, locally", with their trailing comments. */
function sequence(): { args: string[]; comment: string; line: string }[] {
  const section = readme.slice(readme.indexOf("## The CLI, locally"));
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error("README.md has no sh block under 'The CLI, locally'");
  return block
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.startsWith("npx cgmirror "))
    .map((line) => {
      const [command, ...rest] = line.split(/\s+#\s+/);
      return { line, args: command!.replace(/^npx cgmirror\s+/, "").split(/\s+/), comment: rest.join(" # ") };
    });
}

let cwd: string | undefined;
afterAll(async () => {
  if (!cwd) return;
  await cgmirror(["local", "down"], { cwd });
  await rm(cwd, { recursive: true, force: true });
});

describe("the README's local sequence", () => {
  it("GIVEN the commands of 'The CLI, locally' WHEN run in order THEN each ends as its comment says", async () => {
    const steps = sequence();
    expect(steps.length).toBeGreaterThan(8);
    expect(readme).toMatch(/mkdir -p try && cd try/);
    cwd = await mkdtemp(join(tmpdir(), "cgm-readme-"));
    const outcomes: string[] = [];
    for (const step of steps) {
      const r = await cgmirror(step.args, { cwd });
      const expected = /exit (\d+)/.exec(step.comment)?.[1];
      expect(r.code, `${step.line}\n${r.stderr}`).toBe(expected ? Number(expected) : 0);
      if (step.args[0] === "backup") {
        const want = /^(committed|reverted)/.exec(step.comment)?.[1];
        expect(want, `${step.line}: the comment says how the backup ends`).toBeDefined();
        expect(`${r.stdout}${r.stderr}`, step.line).toMatch(new RegExp(want!));
        outcomes.push(want!);
      }
    }
    expect(outcomes).toEqual(["committed", "reverted"]);
    expect(existsSync(join(cwd, "restored", "vol-a.img"))).toBe(true);
    expect(existsSync(join(cwd, "restored", "vol-b.img"))).toBe(true);
    expect(existsSync(join(cwd, "report.html"))).toBe(true);
  });
});
