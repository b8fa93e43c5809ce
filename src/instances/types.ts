// The types other modules import from ./manager.js (re-exported there): the public surface
// of instances, kept apart from the code so every module can share it without cycles.
import type { Instance, InstanceState, Nic, NicModel } from '../domain/types.js';
import type { QmpClient } from '../qemu/qmp.js';
import type { ForwardRequest } from '../network/forwards.js';

export interface CreateInstanceRequest {
  name: string;
  image: string;
  type?: string;
  cpus?: number;
  memoryMiB?: number;
  nics?: NicRequest[];
  forwards?: ForwardRequest[];
  allowPrivileged?: boolean;
  /** `local` keeps the disk in the host's data folder even when shared storage is set. */
  storage?: 'local' | 'shared';
  /** Public keys for the image's default user (cloud-init, NoCloud `public-keys`). */
  sshKeys?: string[];
  /** cloud-init user-data (`#cloud-config` or a script). */
  userData?: string;
  /** Extra NoCloud meta-data keys. */
  meta?: Record<string, string>;
  /** Root disk size in bytes (the overlay is grown; never smaller than the image). */
  diskBytes?: number;
  /** bios or uefi (OVMF with an NVRAM of the instance's own); default: the image's firmware. */
  firmware?: string;
}

export interface NicRequest {
  network?: string;
  model?: NicModel;
  /** A static IPv4 address on a vmkit network (reserved in its DHCP server too). */
  ipv4?: string;
}

/** What instances need from vmkit networks (src/network/manager.ts implements it). */
export interface InstanceNetworking {
  /**
   * Checks the network and picks the NIC's address (static, or a DHCP reservation) for the
   * instance `owner`: the address stays claimed for it until `settle(owner)`, so a create
   * running at the same moment never gets the same one.
   */
  allocate(network: string, requestedIp: string | undefined, pending: readonly Nic[], owner?: string): Promise<{ ipv4?: string; dhcp?: boolean }>;
  /** The instance's row holds its addresses now (or its create failed): its claims end. */
  settle?(owner: string): void;
  addressing(network: string): Promise<{ prefix: number; gateway?: string; dns?: string[] } | undefined>;
  taps(inst: Instance): Record<string, string>;
  /** Before QEMU starts: taps, reservations, rules. */
  plug(inst: Instance): Promise<void>;
  /** After QEMU ended: taps removed, rules updated. */
  unplug(inst: Instance): Promise<void>;
  /** Instances or forwards changed: reservations and rules re-applied. */
  sync(): Promise<void>;
  /** Throws unless port forwards can reach a NIC on this network (nat only). */
  assertForwardable(network: string): Promise<void>;
  /** The guest runs on this host: floating forward addresses move here. */
  announce(inst: Instance, log?: (msg: string) => void): Promise<void>;
  /** A migration's switch-over: floating addresses (and their rules) leave this host. */
  withdraw(inst: Instance, log?: (msg: string) => void): Promise<void>;
}

/** Cluster-wide instance names (src/cluster/cluster.ts implements it). */
export interface InstanceOwnership {
  claim(name: string, summary: { image: string; cpus: number; memoryMiB: number }): Promise<void>;
  released(name: string): Promise<void>;
}

export interface StopOptions {
  force?: boolean;
  /** Seconds to wait for the guest to power off before forcing. */
  timeout?: number;
}

export interface HostEnvironment {
  hostName: string;
  qemuBinary: () => string;
  accel: () => Promise<'kvm' | 'tcg'>;
  /** Storage every cluster host mounts at the same path (a NAS): new disks go there. */
  sharedDir?: string;
  /** QEMU's concrete machine type for `pc` on this host (e.g. pc-i440fx-7.2), fixed per instance. */
  machineType?: () => Promise<string>;
  /** The most bytes of serial console output kept per instance (console.log + console.log.1; default 8 MiB). */
  consoleLogMaxBytes?: number;
}

/** Extra steps of a start: restore saved state before `cont` (suspend/restore), stay paused. */
export interface StartHooks {
  /** Called with QEMU launched paused (-S), before `cont`. */
  beforeCont?: (qmp: QmpClient, inst: Instance) => Promise<void>;
  /** Keep the vCPUs stopped: the instance ends `paused`. */
  leavePaused?: boolean;
  /** Called once the instance runs (or is paused as asked); failures here do not fail the start. */
  afterStart?: (qmp: QmpClient, inst: Instance) => Promise<void>;
  /** Extra QEMU arguments (`-incoming defer` for the target of a migration). */
  extraArgs?: string[];
  /** The state the instance ends in instead of running/paused (`migrating` on a target). */
  finalState?: InstanceState;
}

/** What the snapshot module provides for suspended instances. */
export interface SuspendHandler {
  /** Start steps that resume a suspended instance from its saved state. */
  resumeHooks(inst: Instance): StartHooks;
  /** Drops the saved state of a suspended instance (stop --force). */
  discard(inst: Instance): Promise<void>;
}
