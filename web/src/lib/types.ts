/** The wire types the console reads (see doc/api.md); only the fields it shows. */
export type InstanceState = 'stopped' | 'starting' | 'running' | 'paused' | 'stopping' | 'suspended' | 'migrating' | 'error' | 'deleting';

export interface Forward {
  proto: 'tcp' | 'udp';
  hostAddress: string;
  hostPort: number;
  guestPort: number;
  nic?: string;
}

export interface Nic {
  id: string;
  model: string;
  mac: string;
  network: string;
  ipv4?: string;
}

export interface Instance {
  id: string;
  name: string;
  image: string;
  imageVersion?: string;
  type?: string;
  cpus: number;
  memoryMiB: number;
  state: InstanceState;
  stateReason?: string | null;
  host?: string;
  nics: Nic[];
  forwards: Forward[];
  disks?: Array<{ name: string; file: string; format: string }>;
  createdAt?: string;
  updatedAt?: string;
  lastStartedAt?: string;
  /** The snapshot the instance descends from (parent of the next one). */
  currentSnapshot?: string;
  runtime?: { pid?: number; accel?: string; qemuStatus?: string; uptimeSeconds?: number };
}

export interface Operation {
  id: string;
  kind: string;
  description: string;
  target?: string;
  status: 'pending' | 'running' | 'success' | 'failure' | 'cancelled';
  progress?: { phase?: string; percent?: number; bytesDone?: number; bytesTotal?: number };
  mayCancel?: boolean;
  createdAt: string;
  updatedAt: string;
  result?: unknown;
  error?: { code: string; message: string; hint?: string };
}

export interface Image {
  name: string;
  version?: string;
  description?: string;
  arch?: string;
  defaults?: { cpus?: number; memoryMiB?: number };
  nicModels?: string[];
  disks?: Array<{ name: string; file: string; format: string; virtualSize?: number; actualSize?: number }>;
  source?: string;
  createdAt?: string;
}

export interface InstanceType {
  name: string;
  cpus: number;
  memoryMiB: number;
  description: string;
}

export interface VmkitEvent {
  type: 'lifecycle' | 'operation';
  action: string;
  target?: string;
  timestamp: string;
  metadata?: unknown;
}

export interface Snapshot {
  instance: string;
  name: string;
  description?: string;
  parent?: string;
  createdAt: string;
  withMemory: boolean;
  /** Run state at save time (a restore ends in it); null for disk-only. */
  vmState?: 'running' | 'paused' | null;
  /** How long the guest was paused (memory) or its disk I/O held (disk only). */
  pausedMs?: number;
  /** The saved VM state in bytes. */
  size?: number;
}

/** The result of a snapshot.create operation. */
export interface SnapshotCreateResult {
  snapshot: Snapshot;
  durationMs: number;
}

export type NetworkMode = 'nat' | 'host-only' | 'internal' | 'bridged';

export interface Network {
  name: string;
  mode: NetworkMode;
  bridge: string;
  subnet?: string;
  hostAddress?: string;
  dhcp: boolean;
  dhcpRange?: { start: string; end: string };
  dns: boolean;
  uplink?: string;
  createdAt?: string;
  nics: Array<{ instance: string; nic: string; mac: string; model: string; ipv4?: string; tap: string; state: string }>;
  /** dnsmasq's leases; expires is seconds since the epoch (0 = infinite). */
  leases: Array<{ expires: number; mac: string; ipv4: string; hostname?: string }>;
  forwards: Array<Forward & { instance: string; guestIp?: string }>;
}
