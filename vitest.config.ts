import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The LocalStack lane runs with its own config (npm run test:localstack).
    exclude: ["test/localstack/**", "**/node_modules/**"],
    globalSetup: ["test/support/global-setup.ts"],
    pool: "forks",
    testTimeout: 120_000,
    hookTimeout: 180_000,
    reporters: ["default"],
  },
});
