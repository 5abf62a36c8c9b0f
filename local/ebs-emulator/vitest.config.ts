import { defineConfig } from "vitest/config";

// The emulator's own suite (`npm test` in this folder). cgmirror's root config runs these files too.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    exclude: ["**/node_modules/**"],
    pool: "forks",
    // Far above any test's idle duration: a shared machine must not fail a test by being busy.
    testTimeout: 600_000,
    hookTimeout: 600_000,
  },
});
