import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from './enum.js';

/** A network a stack declares (made by `apply` when missing, removed with the stack). */
export const StackNetworkSpecSchema = Type.Object({
  name: Type.String(),
  mode: StringEnum(['nat', 'host-only', 'internal'] as const),
  subnet: Type.String(),
});
export type StackNetworkSpec = Static<typeof StackNetworkSpecSchema>;

/** `health:` of a service: GET http://REPLICA:guestPort/PATH from the daemon. */
export const StackHealthSchema = Type.Object({
  http: Type.String(),
  intervalMs: Type.Integer(),
  // Consecutive failed checks that take a replica out of the service address (and replace it).
  failures: Type.Integer(),
  timeoutMs: Type.Integer(),
});
export type StackHealth = Static<typeof StackHealthSchema>;

/** `update:` of a service: how a changed image (or size, networks) rolls over the replicas. */
export const StackUpdateSchema = Type.Object({
  maxUnavailable: Type.Integer(),
  maxSurge: Type.Integer(),
  // How long a new replica may take to become healthy before the roll stops.
  readyTimeoutMs: Type.Integer(),
});
export type StackUpdate = Static<typeof StackUpdateSchema>;

export const StackServiceSpecSchema = Type.Object({
  name: Type.String(),
  image: Type.String(),
  type: Type.Optional(Type.String()),
  cpus: Type.Optional(Type.Integer()),
  memoryMiB: Type.Optional(Type.Integer()),
  replicas: Type.Integer(),
  networks: Type.Array(Type.String()),
  // The host port that load-balances over the healthy replicas (nftables DNAT, in the kernel).
  port: Type.Optional(Type.Integer()),
  // The host address of `port` (default 127.0.0.1, like port forwards; 0.0.0.0 = every address).
  hostAddress: Type.Optional(Type.String()),
  guestPort: Type.Optional(Type.Integer()),
  // IP:PORT on the service's first network that load-balances the same way.
  address: Type.Optional(Type.String()),
  health: Type.Optional(StackHealthSchema),
  update: StackUpdateSchema,
  userData: Type.Optional(Type.String()),
});
export type StackServiceSpec = Static<typeof StackServiceSpecSchema>;

/** A stack file, parsed, checked and with its defaults filled in. */
export const StackSpecSchema = Type.Object({
  name: Type.String(),
  networks: Type.Array(StackNetworkSpecSchema),
  services: Type.Array(StackServiceSpecSchema),
});
export type StackSpec = Static<typeof StackSpecSchema>;

export const ReplicaViewSchema = Type.Object({
  instance: Type.String(),
  image: Type.String(),
  // The template this replica was made from is the service's current one (false: an old one, being rolled away).
  current: Type.Boolean(),
  state: Type.String(),
  ipv4: Type.Optional(Type.String()),
  // In a cluster: the host it runs on, and for one on another host the forward there the service reaches it through.
  host: Type.Optional(Type.String()),
  endpoint: Type.Optional(Type.String()),
  health: StringEnum(['healthy', 'unhealthy', 'starting', 'unknown'] as const),
  // In the service address now.
  serving: Type.Boolean(),
  lastError: Type.Optional(Type.String()),
  createdAt: Type.String(),
});
export type ReplicaView = Static<typeof ReplicaViewSchema>;

export const StackServiceViewSchema = Type.Object({
  name: Type.String(),
  image: Type.String(),
  replicas: Type.Integer(),
  ready: Type.Integer(),
  port: Type.Optional(Type.Integer()),
  address: Type.Optional(Type.String()),
  // steady | scaling | rolling | failed
  phase: StringEnum(['steady', 'scaling', 'rolling', 'failed'] as const),
  message: Type.Optional(Type.String()),
  roll: Type.Optional(Type.Object({ from: Type.Array(Type.String()), to: Type.String(), updated: Type.Integer(), total: Type.Integer() })),
  members: Type.Array(ReplicaViewSchema),
});
export type StackServiceView = Static<typeof StackServiceViewSchema>;

/** GET /1.0/stacks[/{name}]. */
export const StackViewSchema = Type.Object({
  name: Type.String(),
  generation: Type.Integer(),
  ready: Type.Boolean(),
  hasPrevious: Type.Boolean(),
  deleting: Type.Boolean(),
  spec: StackSpecSchema,
  services: Type.Array(StackServiceViewSchema),
  updatedAt: Type.String(),
});
export type StackView = Static<typeof StackViewSchema>;

/** What apply/diff/rollback/delete would do or did: one line per change. */
export const StackPlanSchema = Type.Object({
  stack: Type.String(),
  changed: Type.Boolean(),
  changes: Type.Array(Type.String()),
});
export type StackPlan = Static<typeof StackPlanSchema>;
