import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // The EBS emulator package's own suite runs here too (local/ebs-emulator/test/).
    include: ["test/**/*.test.ts", "local/ebs-emulator/test/**/*.test.ts"],
    // The LocalStack lane runs with its own config (npm run test:localstack).
    exclude: ["test/localstack/**", "**/node_modules/**"],
    globalSetup: ["test/support/global-setup.ts"],
    pool: "forks",
    // Far above any test's idle duration (the slowest take 1–2 min on an idle 2-core machine): the
    // machines are shared, and a test must not fail because another process took the CPU.
    testTimeout: 600_000,
    hookTimeout: 600_000,
    reporters: ["default"],
  },
});
