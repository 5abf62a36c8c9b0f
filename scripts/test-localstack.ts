/**
 * `npm run test:localstack` (not part of `npm test`): installs the pinned LocalStack into the cache,
 * starts it in host mode on 127.0.0.1, runs the S3 conformance suite against its S3 and the
 * workflow-parity suite against its Step Functions (vitest.localstack.config.ts), then stops it.
 * docs/localstack.md says what this covers and what it does not.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureLocalStack, startLocalStack } from "../local/localstack.ts";
import { PrerequisiteError } from "../local/s3-server/install.ts";

const log = (line: string) => process.stderr.write(`test:localstack: ${line}\n`);

async function main(): Promise<number> {
  const python = await ensureLocalStack(log);
  const work = await mkdtemp(join(tmpdir(), "cgmirror-lslane-"));
  const mockConfig = join(work, "sfn-mock-config.json");
  await writeFile(mockConfig, JSON.stringify({ StateMachines: {}, MockedResponses: {} }));
  const ls = await startLocalStack({ python, sfnMockConfig: mockConfig, log });
  try {
    const env = {
      ...process.env,
      CGM_S3_ENDPOINT: ls.endpoint,
      CGM_S3_REGION: ls.region,
      CGM_S3_ACCESS_KEY_ID: ls.accessKeyId,
      CGM_S3_SECRET_ACCESS_KEY: ls.secretAccessKey,
      CGM_S3_FORCE_PATH_STYLE: "true",
      CGM_LOCALSTACK_ENDPOINT: ls.endpoint,
      CGM_SFN_MOCK_CONFIG: mockConfig,
    };
    const vitest = spawn(
      process.execPath,
      [
        "node_modules/vitest/vitest.mjs",
        "run",
        "--config",
        "vitest.localstack.config.ts",
        ...process.argv.slice(2),
      ],
      { env, stdio: "inherit" },
    );
    return await new Promise<number>((r) => vitest.once("exit", (code) => r(code ?? 1)));
  } finally {
    await ls.stop();
    await rm(work, { recursive: true, force: true });
    log("LocalStack stopped");
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof PrerequisiteError) {
      log(err.message);
      process.exitCode = 2;
      return;
    }
    throw err;
  },
);
