/**
 * The wire types, as the daemon, the store and the CLI have always imported them. They are
 * defined once, in src/wire/ (TypeBox schemas and their static types); this file only names
 * them for the domain so that 50-odd importers need not change.
 */
import { NIC_MODELS as WIRE_NIC_MODELS, type NicModel } from '../wire/instance.js';

export type {
  DiskRef,
  CloudInit as CloudInitConfig,
  FidelityEntry,
  AgentInterface,
  Image,
  ImageBoot,
  ImageView,
  Instance,
  InstanceAgent,
  InstanceRuntime,
  InstanceState,
  InstanceType,
  InstanceView,
  Nic,
  NicModel,
  Operation,
  OperationProgress,
  OperationStatus,
  PortForward,
  Protocol,
  Snapshot,
  VmkitEvent,
} from '../wire/types.js';

export const NIC_MODELS: readonly NicModel[] = WIRE_NIC_MODELS;
