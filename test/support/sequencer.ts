/**
 * The order files start in: longest first, so that on a 2-core machine the two workers finish
 * together instead of one running a 60-second file alone at the end. A file's duration is the larger
 * of vitest's own record of its last run on this machine (node_modules/.vite/vitest/…/results.json)
 * and the estimate below (seconds on an idle 2-core machine, docs/performance.md "The test suite");
 * files with neither keep vitest's order (larger files first) after them.
 */
import { relative } from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";

/** Idle seconds of the files that take more than a few (docs/performance.md). */
export const ESTIMATED_SECONDS: Readonly<Record<string, number>> = {
  "test/unit/prune-safety.test.ts": 66,
  "test/e2e/cli-user-path.test.ts": 52,
  "test/unit/fault-matrix.test.ts": 46,
  "test/unit/infra-app.test.ts": 31,
  "test/unit/core-crash.test.ts": 27,
  "test/integration/repo-s3.test.ts": 26,
  "test/workflow/scale.test.ts": 26,
  "test/e2e/demo.test.ts": 24,
  "test/e2e/readme.test.ts": 18,
  "test/integration/transfer-emulator.test.ts": 18,
  "test/unit/transfer-worker.test.ts": 17,
  "test/workflow/lock-and-recovery.test.ts": 16,
  "test/e2e/cli-repo.test.ts": 15,
  "test/e2e/cli-lifecycle.test.ts": 14,
  "test/workflow/backup-paths.test.ts": 12,
  "test/workflow/large-snapshot.test.ts": 11,
};

export default class LongestFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const base = await super.sort(files);
    const root = this.ctx.config.root;
    const seconds = (spec: TestSpecification): number => {
      const path = relative(root, spec.moduleId).replaceAll("\\", "/");
      const cached = this.ctx.cache.getFileTestResults(`${spec.project.name}:${path}`)?.duration;
      // The larger: a run filtered to a few tests (-t) records a short duration for a long file.
      return Math.max(cached !== undefined ? cached / 1000 : -1, ESTIMATED_SECONDS[path] ?? -1);
    };
    const order = new Map(base.map((spec, i) => [spec, i]));
    return [...base].sort((a, b) => seconds(b) - seconds(a) || order.get(a)! - order.get(b)!);
  }
}
