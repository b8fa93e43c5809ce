/**
 * The wire types of the REST API, one import for the daemon, the CLI, the client and the web
 * console. Each is the static type of a TypeBox schema (instance.ts, image.ts, network.ts,
 * operation.ts, envelope.ts), so the JSON schema the API documents and the TypeScript type
 * cannot drift apart. Nothing here may import a Node module: the console bundles these.
 */
export type { Answer, AsyncAnswer, ErrorAnswer, SyncAnswer } from './envelope.js';
export type { FidelityEntry, Image, ImageBoot, ImageView } from './image.js';
export type {
  AgentInterface,
  ExecResult,
  CloudInit,
  DiskRef,
  Instance,
  InstanceAgent,
  InstanceRuntime,
  InstanceState,
  InstanceType,
  InstanceView,
  Nic,
  NicModel,
  PortForward,
  Protocol,
  Snapshot,
} from './instance.js';
export type { HostAccess, Lease, Network, NetworkMode, NetworkNicView, NetworkView } from './network.js';
export type { ErrorObject, Operation, OperationProgress, OperationStatus, VmkitEvent } from './operation.js';
