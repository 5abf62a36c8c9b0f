import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  cycles,
  type ImportEdge,
  importGraph,
  LAYERS,
  type LayerRule,
  layerOf,
  packageBreaks,
  ROOT,
  ruleBreaks,
  sourceFiles,
  type WorkspacePackage,
  workspacePackages,
} from "../../scripts/import-graph.ts";

/*
 * The layers of docs/architecture.md as a test: which folder may import which (the table LAYERS in
 * scripts/import-graph.ts), no AWS SDK or CDK in core/, and no import circle among core/ files.
 */
const edges = importGraph();

const edge = (from: string, to: string): ImportEdge => ({ from, to, specifier: to, line: 1 });

describe("architecture: import directions", () => {
  it("reads every layer's files and resolves every relative import to a file that exists", () => {
    const files = sourceFiles();
    for (const layer of LAYERS) {
      expect(files.filter((f) => layerOf(f)?.name === layer.name).length, layer.name).toBeGreaterThan(0);
    }
    const dangling = edges
      .filter((e) => !e.to.startsWith("package:") && !e.to.startsWith("node:"))
      .filter((e) => !existsSync(join(ROOT, e.to)))
      .map((e) => `${e.from}:${e.line} ${e.specifier}`);
    expect(dangling).toEqual([]);
    // The graph sees type-only and dynamic imports too.
    expect(
      edges.some((e) => e.from === "core/format/dedup-index.ts" && e.to === "core/format/segment.ts"),
    ).toBe(true);
  });

  it("keeps every layer rule: core/ pure, adapters/ below lambdas/, lambdas/ below infra/, cli/, local/", () => {
    expect(ruleBreaks(edges)).toEqual([]);
  });

  it("has no import circle among core/ files", () => {
    expect(cycles(edges, "core/")).toEqual([]);
  });
});

describe("architecture: the EBS emulator is a package of its own", () => {
  it("is the workspace @cgmirror/ebs-emulator in local/ebs-emulator/, consumed by its name", () => {
    const packages = workspacePackages();
    expect(packages.map((p) => [p.dir, p.name])).toContainEqual([
      "local/ebs-emulator/",
      "@cgmirror/ebs-emulator",
    ]);
    const consumers = edges.filter(
      (e) => !e.from.startsWith("local/ebs-emulator/") && e.to.startsWith("package:@cgmirror/ebs-emulator"),
    );
    expect(consumers.map((e) => e.from)).toEqual(
      expect.arrayContaining(["local/stack.ts", "cli/commands/restore-snapshots.ts"]),
    );
  });

  it("no file outside a workspace package imports its files by path, and the package imports nothing of the project", () => {
    expect(packageBreaks(edges, workspacePackages())).toEqual([]);
  });
});

describe("architecture: the map in docs/architecture.md", () => {
  it("names every core/ file in its table of concerns", () => {
    const doc = readFileSync(join(ROOT, "docs", "architecture.md"), "utf8");
    const unnamed = sourceFiles()
      .filter((f) => f.startsWith("core/"))
      .map((f) => f.slice("core/".length))
      .filter((f) => !doc.includes(`\`${f}\``));
    expect(unnamed).toEqual([]);
  });
});

describe("architecture: the checker itself", () => {
  it("GIVEN a core file importing an adapter, a lambda, the CLI or the AWS SDK THEN each import is reported", () => {
    const bad = [
      edge("core/protocol/commit.ts", "adapters/s3-store.ts"),
      edge("core/protocol/commit.ts", "lambdas/commit.ts"),
      edge("core/protocol/commit.ts", "workflows/errors.ts"),
      edge("core/protocol/commit.ts", "infra/stack.ts"),
      edge("core/protocol/commit.ts", "local/runner.ts"),
      edge("core/protocol/commit.ts", "cli/main.ts"),
      edge("core/protocol/commit.ts", "package:@aws-sdk/client-s3"),
      edge("core/protocol/commit.ts", "package:aws-cdk-lib/aws-s3"),
      edge("adapters/s3-store.ts", "lambdas/shared.ts"),
      edge("adapters/s3-store.ts", "local/runner.ts"),
      edge("lambdas/commit.ts", "infra/stack.ts"),
      edge("lambdas/commit.ts", "cli/main.ts"),
      edge("lambdas/commit.ts", "local/runner.ts"),
      edge("lambdas/commit.ts", "test/support/blocks.ts"),
    ];
    expect(ruleBreaks(bad)).toHaveLength(bad.length);
    expect(ruleBreaks(bad)[0]).toMatch(
      /^core\/protocol\/commit\.ts:1 imports adapters\/s3-store\.ts \(adapters\): core\/ is pure/,
    );
  });

  it("GIVEN allowed directions THEN nothing is reported", () => {
    const good = [
      edge("core/protocol/commit.ts", "core/protocol/lock.ts"),
      edge("core/protocol/commit.ts", "package:zod"),
      edge("core/protocol/commit.ts", "node:crypto"),
      edge("adapters/s3-store.ts", "core/ports/object-store.ts"),
      edge("adapters/s3-store.ts", "package:@aws-sdk/client-s3"),
      edge("lambdas/commit.ts", "adapters/s3-store.ts"),
      edge("lambdas/commit.ts", "workflows/errors.ts"),
      edge("infra/stack.ts", "lambdas/commit.ts"),
      edge("test/unit/x.test.ts", "local/runner.ts"),
    ];
    expect(ruleBreaks(good)).toEqual([]);
  });

  it("GIVEN core/ sub-domain rows added to the table THEN the parent allows them and each row's own directions hold", () => {
    const table: LayerRule[] = [
      ...LAYERS,
      {
        name: "core/format",
        paths: ["core/format/"],
        mayImport: ["core/format", "core/ports"],
        because: "format is the bottom",
      },
      {
        name: "core/ports",
        paths: ["core/ports/"],
        mayImport: ["core/ports"],
        because: "ports are interfaces",
      },
      {
        name: "core/protocol",
        paths: ["core/protocol/"],
        mayImport: ["core/protocol", "core/format", "core/ports"],
        because: "protocol sits on format",
      },
    ];
    expect(layerOf("core/format/segment.ts", table)?.name).toBe("core/format");
    expect(layerOf("core/errors.ts", table)?.name).toBe("core");
    expect(
      ruleBreaks(
        [
          edge("core/protocol/commit.ts", "core/format/segment.ts"),
          edge("lambdas/commit.ts", "core/protocol/commit.ts"),
          edge("core/format/segment.ts", "core/ports/object-store.ts"),
        ],
        table,
      ),
    ).toEqual([]);
    expect(ruleBreaks([edge("core/format/segment.ts", "core/protocol/commit.ts")], table)).toEqual([
      "core/format/segment.ts:1 imports core/protocol/commit.ts (core/protocol): format is the bottom",
    ]);
  });

  it("GIVEN a circle of three core files THEN it is found, and an acyclic graph has none", () => {
    const loop = [
      edge("core/a.ts", "core/b.ts"),
      edge("core/b.ts", "core/c.ts"),
      edge("core/c.ts", "core/a.ts"),
    ];
    expect(cycles([...loop, edge("core/c.ts", "core/d.ts")], "core/")).toEqual([
      ["core/a.ts", "core/b.ts", "core/c.ts"],
    ]);
    expect(cycles(loop.slice(0, 2), "core/")).toEqual([]);
  });

  it("GIVEN imports across a workspace package's boundary THEN each is reported; the allowed ones are not", () => {
    const emu: WorkspacePackage = {
      dir: "local/ebs-emulator/",
      name: "@cgmirror/ebs-emulator",
      dependencies: [],
      devDependencies: ["vitest", "@aws-sdk/client-ebs"],
    };
    const bad = [
      edge("local/stack.ts", "local/ebs-emulator/store.ts"),
      edge("test/unit/x.test.ts", "local/ebs-emulator/index.ts"),
      edge("local/ebs-emulator/store.ts", "core/format/segment.ts"),
      edge("local/ebs-emulator/emulator.ts", "local/s3-server/server.ts"),
      edge("local/ebs-emulator/emulator.ts", "package:zod"),
      edge("local/ebs-emulator/emulator.ts", "package:vitest"),
      edge("local/ebs-emulator/test/conformance.test.ts", "test/support/blocks.ts"),
      edge("local/ebs-emulator/test/conformance.test.ts", "package:fast-check"),
    ];
    expect(packageBreaks(bad, [emu])).toHaveLength(bad.length);
    expect(packageBreaks(bad, [emu])[0]).toBe(
      'local/stack.ts:1 imports local/ebs-emulator/store.ts by path: import "@cgmirror/ebs-emulator" (its public entry point) instead',
    );
    const good = [
      edge("local/stack.ts", "package:@cgmirror/ebs-emulator"),
      edge("cli/commands/restore-snapshots.ts", "package:@cgmirror/ebs-emulator/admin-client"),
      edge("local/ebs-emulator/emulator.ts", "node:http"),
      edge("local/ebs-emulator/index.ts", "local/ebs-emulator/store.ts"),
      edge("local/ebs-emulator/test/quotas.test.ts", "package:@aws-sdk/client-ebs"),
      edge("local/ebs-emulator/test/quotas.test.ts", "local/ebs-emulator/index.ts"),
      edge("local/ebs-emulator/vitest.config.ts", "package:vitest/config"),
    ];
    expect(packageBreaks(good, [emu])).toEqual([]);
  });
});
