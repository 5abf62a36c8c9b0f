export { type EbsAdminClient, EbsAdminError, ebsAdmin } from "./admin-client.ts";
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
export { SyntheticBlocks, seedOf } from "./synthetic.ts";
