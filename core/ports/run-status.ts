/**
 * The run status port: is the run that holds a group's lock still running? A run id is the Step
 * Functions execution name; `adapters/sfn-execution.ts` answers with DescribeExecution, the local
 * runner from the executions it runs itself (local/runner.ts).
 *
 * AcquireLock takes a live lock over at once when its holder has `ended` (succeeded, failed, timed out
 * or was aborted without releasing it: a Step Functions limit, a timeout, StopExecution). `unknown`
 * (no access, no such execution, a run id that is no execution such as the CLI's repair, a throttled
 * call) keeps the lease: the lock then waits for its expiry as before.
 */

export type RunState = "running" | "ended" | "unknown";

export interface RunStatusPort {
  /** The state of the run with this run id; never throws (what it cannot tell is `unknown`). */
  runState(runId: string): Promise<RunState>;
}
