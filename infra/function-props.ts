/**
 * What every cgmirror function shares: Node.js 24 on arm64, X-Ray tracing, its own log group, the
 * Powertools service and metrics namespace, and one ESM bundle that includes the AWS SDK (the SDK
 * versions tested are the versions deployed).
 */
import { fileURLToPath } from "node:url";
import { Duration, RemovalPolicy, Stack } from "aws-cdk-lib";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as nodejs from "aws-cdk-lib/aws-lambda-nodejs";
import * as logs from "aws-cdk-lib/aws-logs";
import * as sfn from "aws-cdk-lib/aws-stepfunctions";
import type { Construct } from "constructs";

/** The repository root: function entries and the lock file are resolved against it. */
export const PROJECT_ROOT = fileURLToPath(new URL("..", import.meta.url));

/** CloudWatch namespace and Powertools service name of every function. */
export const METRICS_NAMESPACE = "cgmirror";
export const SERVICE_NAME = "cgmirror";

/** A task's handler file (relative to the repository root), memory and timeout. */
export interface FunctionSpec {
  readonly entry: string;
  readonly memoryMiB: number;
  readonly timeoutSeconds: number;
}

export interface CgmirrorFunctionOptions {
  readonly description: string;
  readonly spec: FunctionSpec;
  readonly logGroup: logs.ILogGroup;
  /**
   * Variables on top of the Powertools ones.
   * @default none
   */
  readonly environment?: Readonly<Record<string, string>>;
}

/** The props of one cgmirror function. */
export function cgmirrorFunctionProps(o: CgmirrorFunctionOptions): nodejs.NodejsFunctionProps {
  return {
    description: o.description,
    entry: `${PROJECT_ROOT}${o.spec.entry}`,
    handler: "handler",
    projectRoot: PROJECT_ROOT,
    depsLockFilePath: `${PROJECT_ROOT}package-lock.json`,
    runtime: lambda.Runtime.NODEJS_24_X,
    architecture: lambda.Architecture.ARM_64,
    memorySize: o.spec.memoryMiB,
    timeout: Duration.seconds(o.spec.timeoutSeconds),
    tracing: lambda.Tracing.ACTIVE,
    logGroup: o.logGroup,
    environment: {
      POWERTOOLS_SERVICE_NAME: SERVICE_NAME,
      POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
      POWERTOOLS_LOG_LEVEL: "INFO",
      NODE_OPTIONS: "--enable-source-maps",
      ...o.environment,
    },
    bundling: {
      forceDockerBundling: false,
      format: nodejs.OutputFormat.ESM,
      target: "node24",
      minify: true,
      keepNames: true,
      sourceMap: true,
      sourcesContent: false,
      // esbuild prints only errors (no per-bundle size lines on every synth).
      logLevel: nodejs.LogLevel.ERROR,
      // Bundle the AWS SDK too: the versions tested are the versions deployed.
      externalModules: [],
      // The bundle is ESM; some SDK dependencies still call require().
      banner:
        "import { createRequire as __cgmCreateRequire } from 'node:module'; const require = __cgmCreateRequire(import.meta.url);",
    },
  };
}

/** A function's log group: three months, deleted with the stack. */
export function functionLogGroup(scope: Construct, id: string): logs.LogGroup {
  return new logs.LogGroup(scope, id, {
    retention: logs.RetentionDays.THREE_MONTHS,
    removalPolicy: RemovalPolicy.DESTROY,
  });
}

/**
 * A state machine's logging: every event with its data, to a vended log group
 * `/aws/vendedlogs/states/<stack>-<suffix>` kept three months.
 */
export function stateMachineLogs(scope: Construct, id: string, suffix: string): sfn.LogOptions {
  return {
    destination: new logs.LogGroup(scope, id, {
      logGroupName: `/aws/vendedlogs/states/${Stack.of(scope).stackName}-${suffix}`,
      retention: logs.RetentionDays.THREE_MONTHS,
      removalPolicy: RemovalPolicy.DESTROY,
    }),
    level: sfn.LogLevel.ALL,
    includeExecutionData: true,
  };
}
