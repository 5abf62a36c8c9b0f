/** local/localstack.ts: which Python the LocalStack lane installs with (fake interpreters, no network). */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { findPython } from "#local/localstack.ts";
import { PrerequisiteError } from "#local/s3-server/install.ts";

const dir = mkdtempSync(join(tmpdir(), "cgmirror-python-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fake interpreter that reports `version` for `-c "...version_info..."`. */
function fake(path: string, version: string): string {
  writeFileSync(path, `#!/bin/sh\necho "${version}"\n`);
  chmodSync(path, 0o755);
  return path;
}

describe("findPython", () => {
  it("fails with one message naming every interpreter tried when none is 3.12 or newer", () => {
    const bin = join(dir, "old");
    mkdirSync(bin);
    fake(join(bin, "python3"), "3 11");
    const env = { PATH: bin, PYENV_ROOT: join(dir, "no-pyenv") };
    let error: unknown;
    try {
      findPython(env);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(PrerequisiteError);
    expect((error as Error).message).toMatch(/needs Python 3\.12 or newer.*python3 \(3\.11\).*CGM_PYTHON/);
  });

  it("GIVEN pyenv versions THEN the newest 3.12+ one is used", () => {
    const root = join(dir, "pyenv");
    for (const [v, out] of [
      ["3.11.7", "3 11"],
      ["3.12.1", "3 12"],
      ["3.13.0", "3 13"],
    ]) {
      mkdirSync(join(root, "versions", v as string, "bin"), { recursive: true });
      fake(join(root, "versions", v as string, "bin", "python3"), out as string);
    }
    const env = { PATH: join(dir, "empty"), PYENV_ROOT: root };
    expect(findPython(env)).toBe(join(root, "versions", "3.13.0", "bin", "python3"));
    expect(findPython({ ...env, CGM_PYTHON: join(root, "versions", "3.12.1", "bin", "python3") })).toBe(
      join(root, "versions", "3.12.1", "bin", "python3"),
    );
  });
});
