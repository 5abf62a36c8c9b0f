import { describe, expect, it } from "vitest";
import pkg from "../../package.json" with { type: "json" };

describe("toolchain", () => {
  it("runs the suite on the pinned Node major (the `node` devDependency), not the system Node", () => {
    const pinnedMajor = Number(pkg.devDependencies.node.replace(/^[^\d]*/, "").split(".")[0]);
    expect(pinnedMajor).toBeGreaterThanOrEqual(24);
    expect(Number(process.versions.node.split(".")[0])).toBe(pinnedMajor);
  });
});
