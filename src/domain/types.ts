/** Wire and domain types shared by the daemon, the API, the CLI and the store. */

export type InstanceState = 'stopped' | 'starting' | 'running' | 'paused' | 'stopping' | 'suspended' | 'migrating' | 'error' | 'deleting';

export type NicModel = 'virtio-net' | 'e1000' | 'rtl8139';
export const NIC_MODELS: readonly NicModel[] = ['virtio-net', 'e1000', 'rtl8139'];

export type Protocol = 'tcp' | 'udp';

export interface Nic {
  /** Stable id inside the instance (nic0, nic1, …); also the QEMU netdev id. */
  id: string;
  model: NicModel;
  mac: string;
  /** `user` = QEMU user-mode NAT; other values name a vmkit network. */
  network: string;
  ipv4?: string;
  /** The address is a DHCP reservation the guest asks for (not configured statically). */
  dhcp?: boolean;
}

export interface PortForward {
  proto: Protocol;
  hostAddress: string;
  hostPort: number;
  guestPort: number;
  /** The NIC the forward goes to (its netdev). */
  nic: string;
  /** The host address moves with the instance between cluster hosts (see src/network/floating.ts). */
  floating?: boolean;
}

export interface DiskRef {
  /** Role inside the instance: `root` is the boot disk. */
  name: string;
  /** Path relative to the owner's folder. */
  file: string;
  format: 'qcow2' | 'raw';
}

export interface ImageBoot {
  kernel: string;
  initrd?: string;
  cmdline: string;
}

export interface Image {
  name: string;
  version: string;
  description: string;
  arch: 'x86_64';
  /** Direct kernel boot files (relative to the image folder); absent = firmware boots the disk. */
  boot?: ImageBoot;
  defaults: { cpus: number; memoryMiB: number };
  /** `none`: the guest only uses its serial console, so no display device is given. */
  display?: 'vga' | 'none';
  nicModels: NicModel[];
  disks: Array<DiskRef & { virtualSize?: number; actualSize?: number }>;
  source: 'builtin' | 'import' | 'publish' | 'pull';
  createdAt: string;
  /** `sha256:<hex>` of the first disk's file as stored (computed once, then kept). */
  checksum?: string;
  /** Where the image came from: an imported file, a published instance, a repository. */
  origin?: string;
  /** What an import mapped and dropped (see doc/images.md). */
  fidelity?: FidelityEntry[];
}

/** One line of an import/export fidelity report. */
export interface FidelityEntry {
  item: string;
  value?: string;
  status: 'mapped' | 'defaulted' | 'dropped';
  reason?: string;
}

/** An image and what depends on it (instances created from it). */
export interface ImageView extends Image {
  users: { instances: string[] };
}

export interface Instance {
  id: string;
  name: string;
  image: string;
  imageVersion: string;
  type?: string;
  cpus: number;
  memoryMiB: number;
  nics: Nic[];
  forwards: PortForward[];
  disks: DiskRef[];
  state: InstanceState;
  /** Why the instance is in its state when that is not obvious (error, forced stop …). */
  stateReason?: string;
  createdAt: string;
  updatedAt: string;
  lastStartedAt?: string;
  /** The snapshot the instance's state descends from (parent of the next snapshot). */
  currentSnapshot?: string;
  /** The host that owns the instance (cluster); the local host name when alone. */
  host: string;
  /** A linked clone: the instance whose frozen disk layer this one's disk is backed by. */
  linkedFrom?: string;
  /** QEMU's concrete machine type (e.g. pc-i440fx-7.2), fixed at creation: live migration needs the same on both ends. */
  machine?: string;
}

/** What the API adds to an instance while it runs. */
export interface InstanceRuntime {
  pid?: number;
  accel?: 'kvm' | 'tcg';
  qemuStatus?: string;
  uptimeSeconds?: number;
  consoleLog?: string;
}

export interface InstanceView extends Instance {
  runtime: InstanceRuntime;
}

export interface InstanceType {
  name: string;
  cpus: number;
  memoryMiB: number;
  description: string;
}

export type OperationStatus = 'pending' | 'running' | 'success' | 'failure' | 'cancelled';

export interface OperationProgress {
  phase: string;
  percent?: number;
  bytesDone?: number;
  bytesTotal?: number;
  /** Live migration: pages the guest dirties per second, QEMU's expected downtime, the measured one. */
  dirtyRatePagesPerSec?: number;
  expectedDowntimeMs?: number;
  downtimeMs?: number;
}

export interface Operation {
  id: string;
  kind: string;
  description: string;
  target?: string;
  status: OperationStatus;
  progress: OperationProgress;
  mayCancel: boolean;
  createdAt: string;
  updatedAt: string;
  result?: unknown;
  error?: { code: string; message: string; hint?: string };
}

export interface VmkitEvent {
  type: 'lifecycle' | 'operation' | 'log' | 'cluster';
  timestamp: string;
  /** e.g. instance-started, instance-stopped, instance-crashed, operation-updated. */
  action: string;
  target?: string;
  metadata?: unknown;
}

/** A checkpoint of an instance: an internal qcow2 snapshot of its root disk (+ vmstate). */
export interface Snapshot {
  instance: string;
  /** The instance's id: a row whose id does not match belongs to a deleted namesake. */
  instanceId: string;
  name: string;
  description?: string;
  /** The snapshot the instance descended from when this one was taken. */
  parent?: string;
  createdAt: string;
  /** Memory and device state are included: a restore resumes at that instant. */
  withMemory: boolean;
  /** Run state at save time (memory snapshots); null for disk-only ones. */
  vmState: 'running' | 'paused' | null;
  /** How long the guest was paused (or its I/O held) while the snapshot was taken. */
  pausedMs: number;
  /** Bytes of saved VM state (qcow2 keeps disk clusters shared, so this is the memory part). */
  size?: number;
}
