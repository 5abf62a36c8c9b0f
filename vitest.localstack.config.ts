/**
 * The LocalStack lane (`npm run test:localstack`, scripts/test-localstack.ts starts LocalStack and sets
 * CGM_S3_ENDPOINT / CGM_LOCALSTACK_ENDPOINT): the S3 conformance suite against LocalStack's S3 and the
 * workflow-parity suite against LocalStack's Step Functions. Not part of `npm test`.
 */
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/localstack/**/*.test.ts", "test/integration/s3-conformance.test.ts"],
    globalSetup: ["test/support/global-setup.ts"],
    pool: "forks",
    testTimeout: 180_000,
    hookTimeout: 180_000,
    reporters: ["default"],
  },
});
