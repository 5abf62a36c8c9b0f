/**
 * @cgmirror/ebs-emulator — the package's one entry point. Everything a user needs is exported here and
 * documented in README.md; the other files are internals (a consumer imports "@cgmirror/ebs-emulator",
 * never a file of this folder). "@cgmirror/ebs-emulator/admin-client" is the admin HTTP client alone,
 * for a process that drives an emulator running elsewhere without loading the server.
 *
 * The package imports only Node built-ins and its own files (test/unit/architecture.test.ts checks it).
 */

// The admin API of an emulator running in another process (also "@cgmirror/ebs-emulator/admin-client").
export { type EbsAdminClient, EbsAdminError, ebsAdmin } from "./admin-client.ts";
// The server in this process, its options, knobs, counters and errors.
export {
  type EbsEmulator,
  type EbsEmulatorOptions,
  type EbsStats,
  type KmsGrants,
  startEbsEmulator,
} from "./emulator.ts";
export { EBS_ERROR_STATUS, EbsApiError, type EbsErrorName } from "./errors.ts";
export {
  AWS_DEFAULT_QUOTAS,
  DEFAULT_FAULTS,
  EBS_OPERATIONS,
  EbsFaultConfigError,
  type EbsFaults,
  type EbsOperation,
  FAULT_ENV,
  faultsFromEnv,
} from "./faults.ts";
export { DataDirInUseError, PersistenceFormatError } from "./persistence.ts";
export {
  BLOCK_SIZE,
  BLOCKS_PER_GIB,
  type SnapshotDescription,
  type SyntheticSnapshotOptions,
  type Tag,
} from "./store.ts";
// Synthetic snapshots' block sets, for a test that computes the expected blocks itself.
export { SyntheticBlocks, seedOf } from "./synthetic.ts";
// The token bucket the quotas use (a simulation can throttle itself the same way).
export { TokenBucket } from "./token-bucket.ts";
