import { Type, type Static } from '@sinclair/typebox';
import { NullableStringEnum, StringEnum } from './enum.js';

export const INSTANCE_STATES = ['stopped', 'starting', 'running', 'paused', 'stopping', 'suspended', 'migrating', 'error', 'deleting'] as const;
export type InstanceState = (typeof INSTANCE_STATES)[number];

export const NIC_MODELS = ['virtio-net', 'e1000', 'rtl8139'] as const;
export type NicModel = (typeof NIC_MODELS)[number];

export type Protocol = 'tcp' | 'udp';

export const NicSchema = Type.Object({
  // Stable id inside the instance (nic0, nic1, …); also the QEMU netdev id.
  id: Type.String(),
  model: StringEnum(NIC_MODELS),
  mac: Type.String(),
  // `user` = QEMU user-mode NAT; other values name a vmkit network.
  network: Type.String(),
  ipv4: Type.Optional(Type.String()),
  // The address is a DHCP reservation the guest asks for (not configured statically).
  dhcp: Type.Optional(Type.Boolean()),
  // Views only: where ipv4 comes from — `agent` (the guest agent reported it), `assumed`
  // (user-mode NAT always leases 10.0.2.15), `configured` (vmkit's static address or reservation).
  ipv4Source: Type.Optional(StringEnum(['agent', 'assumed', 'configured'])),
});
export type Nic = Static<typeof NicSchema>;

export const PortForwardSchema = Type.Object({
  proto: StringEnum(['tcp', 'udp']),
  hostAddress: Type.String(),
  hostPort: Type.Integer(),
  guestPort: Type.Integer(),
  // The NIC the forward goes to (its netdev).
  nic: Type.String(),
  // The host address moves with the instance between cluster hosts (see src/network/floating.ts).
  floating: Type.Optional(Type.Boolean()),
});
export type PortForward = Static<typeof PortForwardSchema>;

/** What cloud-init reads from the instance's NoCloud drive besides hostname and network. */
export const CloudInitSchema = Type.Object({
  // User-data as given (`#cloud-config`, a script, any format cloud-init reads).
  userData: Type.Optional(Type.String()),
  // Public keys for the image's default user (NoCloud meta-data `public-keys`).
  sshKeys: Type.Optional(Type.Array(Type.String())),
  // Extra meta-data keys (instance-id, local-hostname and public-keys are vmkit's).
  meta: Type.Optional(Type.Record(Type.String(), Type.String())),
  // Bumped when NICs or user-data change: cloud-init's instance-id becomes <id>-g<N>.
  generation: Type.Optional(Type.Integer()),
});
export type CloudInit = Static<typeof CloudInitSchema>;

export const diskRefFields = {
  // Role inside the instance: `root` is the boot disk.
  name: Type.String(),
  // Path relative to the owner's folder.
  file: Type.String(),
  format: StringEnum(['qcow2', 'raw']),
};
export const DiskRefSchema = Type.Object(diskRefFields);
export type DiskRef = Static<typeof DiskRefSchema>;

const instanceFields = {
  id: Type.String(),
  name: Type.String(),
  image: Type.String(),
  imageVersion: Type.String(),
  type: Type.Optional(Type.String()),
  cpus: Type.Integer(),
  memoryMiB: Type.Integer(),
  state: StringEnum(INSTANCE_STATES),
  // Why the instance is in its state when that is not obvious (error, forced stop …).
  stateReason: Type.Optional(Type.String()),
  // The host that owns the instance (cluster); the local host name when alone.
  host: Type.String(),
  nics: Type.Array(NicSchema),
  forwards: Type.Array(PortForwardSchema),
  disks: Type.Array(DiskRefSchema),
  createdAt: Type.String(),
  updatedAt: Type.String(),
  lastStartedAt: Type.Optional(Type.String()),
  currentSnapshot: Type.Optional(Type.String({ description: 'the snapshot the instance descends from (parent of the next one)' })),
  // A linked clone: the instance whose frozen disk layer this one's disk is backed by.
  linkedFrom: Type.Optional(Type.String()),
  // QEMU's concrete machine type (e.g. pc-i440fx-7.2), fixed at creation: live migration needs the same on both ends.
  machine: Type.Optional(Type.String()),
  // uefi: OVMF with the instance's own NVRAM (nvram.fd in its folder); absent or bios: SeaBIOS.
  firmware: Type.Optional(StringEnum(['bios', 'uefi'])),
  // The uid (and gid) its QEMU runs as, unique on the host (src/host/guest-uids.ts); allocated at creation.
  uid: Type.Optional(Type.Integer()),
  cloudInit: Type.Optional(CloudInitSchema),
};

/** An instance as stored; the API answers with InstanceView. */
export const InstanceSchema = Type.Object(instanceFields);
export type Instance = Static<typeof InstanceSchema>;

/** One interface as the guest agent reported it (validated and capped: src/qemu/guest-agent.ts). */
export const AgentInterfaceSchema = Type.Object({
  name: Type.String(),
  mac: Type.Optional(Type.String()),
  ipv4: Type.Array(Type.String()),
  ipv6: Type.Array(Type.String()),
});
export type AgentInterface = Static<typeof AgentInterfaceSchema>;

/** The guest agent's last answer about a running instance (doc/guest-agent.md). */
export const InstanceAgentSchema = Type.Object({
  available: Type.Boolean(),
  checkedAt: Type.String(),
  interfaces: Type.Optional(Type.Array(AgentInterfaceSchema)),
  // Who the guest says it is (guest-get-host-name, guest-get-osinfo), when its agent has those commands.
  hostname: Type.Optional(Type.String()),
  os: Type.Optional(Type.String()),
  kernel: Type.Optional(Type.String()),
  // Why no agent answered.
  reason: Type.Optional(Type.String()),
});
export type InstanceAgent = Static<typeof InstanceAgentSchema>;

/** POST /1.0/instances/{name}/exec: how the guest command ended, its output in base64. */
export const ExecResultSchema = Type.Object({
  exitCode: Type.Integer({ description: "the command's exit status (128+N when killed by signal N)" }),
  signal: Type.Optional(Type.Integer()),
  stdout: Type.String({ description: 'base64' }),
  stderr: Type.String({ description: 'base64' }),
  truncated: Type.Boolean({ description: 'the guest agent kept only the first 16 MiB of a stream' }),
  durationMs: Type.Integer(),
});
export type ExecResult = Static<typeof ExecResultSchema>;

/** What the API adds to an instance while it runs. */
export const InstanceRuntimeSchema = Type.Object({
  pid: Type.Optional(Type.Integer()),
  accel: Type.Optional(StringEnum(['kvm', 'tcg'])),
  qemuStatus: Type.Optional(Type.String()),
  uptimeSeconds: Type.Optional(Type.Number()),
  consoleLog: Type.Optional(Type.String()),
  // The uid the QEMU process runs as (read from /proc) and its cgroup (`/vmkit/<id>`).
  uid: Type.Optional(Type.Integer()),
  cgroup: Type.Optional(Type.String()),
  agent: Type.Optional(InstanceAgentSchema),
});
export type InstanceRuntime = Static<typeof InstanceRuntimeSchema>;

/** GET /1.0/instances[/{name}]. */
export const InstanceViewSchema = Type.Object({ ...instanceFields, runtime: InstanceRuntimeSchema });
export type InstanceView = Static<typeof InstanceViewSchema>;

/** GET /1.0/types: the sizes `--type` accepts. */
export const InstanceTypeSchema = Type.Object({
  name: Type.String(),
  cpus: Type.Integer(),
  memoryMiB: Type.Integer(),
  description: Type.String(),
});
export type InstanceType = Static<typeof InstanceTypeSchema>;

/** A checkpoint of an instance: an internal qcow2 snapshot of its root disk (+ vmstate). */
export const SnapshotSchema = Type.Object({
  instance: Type.String(),
  // The instance's id: a row whose id does not match belongs to a deleted namesake.
  instanceId: Type.String(),
  name: Type.String(),
  description: Type.Optional(Type.String()),
  // The snapshot the instance descended from when this one was taken.
  parent: Type.Optional(Type.String()),
  createdAt: Type.String(),
  // Memory and device state are included: a restore resumes at that instant.
  withMemory: Type.Boolean(),
  // Run state at save time (memory snapshots); null for disk-only ones.
  vmState: NullableStringEnum(['running', 'paused']),
  // How long the guest was paused (or its I/O held) while the snapshot was taken.
  pausedMs: Type.Number(),
  // The guest's filesystems were frozen by its agent while it was taken (application-consistent disk).
  quiesced: Type.Optional(Type.Boolean()),
  // Why a snapshot that could have been quiesced was not (no agent, freeze failed).
  quiesceNote: Type.Optional(Type.String()),
  // Bytes of saved VM state (qcow2 keeps disk clusters shared, so this is the memory part).
  size: Type.Optional(Type.Integer()),
});
export type Snapshot = Static<typeof SnapshotSchema>;
