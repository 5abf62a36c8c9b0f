import { availableParallelism } from "node:os";
import { defineConfig } from "vitest/config";
import LongestFirstSequencer from "./test/support/sequencer.ts";

export default defineConfig({
  test: {
    // The EBS emulator package's own suite runs here too (local/ebs-emulator/test/).
    include: ["test/**/*.test.ts", "local/ebs-emulator/test/**/*.test.ts"],
    // The LocalStack lane runs with its own config (npm run test:localstack).
    exclude: ["test/localstack/**", "**/node_modules/**"],
    globalSetup: ["test/support/global-setup.ts"],
    pool: "forks",
    // vitest's default for `run` is one worker less than the cores: ONE worker on a 2-core machine,
    // which ran the whole suite file after file. Every core gets a worker (the main process only
    // collects results; the heavy files wait on the S3 server and CLI processes part of the time).
    maxWorkers: Math.max(2, availableParallelism()),
    // Longest files first, so the workers finish together (test/support/sequencer.ts).
    sequence: { sequencer: LongestFirstSequencer },
    // Far above any test's idle duration (the slowest take 1–2 min on an idle 2-core machine): the
    // machines are shared, and a test must not fail because another process took the CPU.
    testTimeout: 600_000,
    hookTimeout: 600_000,
    reporters: ["default"],
  },
});
