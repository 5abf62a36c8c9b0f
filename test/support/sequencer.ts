/**
 * The order files start in: longest first, so that on a 2-core machine the two workers finish
 * together instead of one running a 60-second file alone at the end. A file's duration is the larger
 * of vitest's own record of its last run on this machine (node_modules/.vite/vitest/…/results.json)
 * and the estimate below (seconds on an idle 2-core machine, docs/performance.md "The test suite");
 * files with neither keep vitest's order (larger files first) after them.
 */
import { relative } from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";

/** Idle seconds of the files that take more than a few (docs/performance.md; a fresh-clone run of 1f42b20). */
export const ESTIMATED_SECONDS: Readonly<Record<string, number>> = {
  "test/unit/infra-app.test.ts": 41,
  "test/e2e/cli-user-path.test.ts": 36,
  "test/workflow/plan-resume.test.ts": 35,
  "test/workflow/scale.test.ts": 30,
  "test/integration/repo-s3.test.ts": 30,
  "test/unit/prune-safety.test.ts": 27,
  "test/e2e/cli-lifecycle.test.ts": 25,
  "test/unit/fault-matrix.test.ts": 23,
  "test/workflow/lock-and-recovery.test.ts": 20,
  "test/unit/core-crash.test.ts": 20,
  "test/e2e/readme.test.ts": 19,
  "test/integration/restore-prune-race.test.ts": 19,
  "test/integration/transfer-emulator.test.ts": 19,
  "local/ebs-emulator/test/conformance.test.ts": 19,
  "test/e2e/cli-repo.test.ts": 14,
  "test/e2e/demo.test.ts": 13,
  "test/workflow/large-snapshot.test.ts": 11,
  "test/unit/core-repo.test.ts": 11,
  "test/e2e/cli-backup.test.ts": 11,
  "test/integration/planner-emulator.test.ts": 10,
  "test/workflow/backup-paths.test.ts": 9,
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
