import { MIGRATION_MODES } from '../wire/requests.js';
import type { Store, StoreKind } from '../store/store.js';
import type { EventBus } from '../operations/events.js';
import type { ClusterPki, TlsMaterial } from './pki.js';

/** What each host publishes about itself in etcd (`hosts/<name>`), refreshed every few seconds. */
export interface HostRecord {
  name: string;
  /** host:port of the host's peer listener (HTTPS, mutual TLS with the cluster CA's certificates). */
  address: string;
  /** Changes each time the daemon starts: tells a re-registration from a name clash. */
  hostId: string;
  version: string;
  cpus: number;
  memoryTotalMiB: number;
  memoryFreeMiB: number;
  /** Memory of the instances this host runs (or keeps starting). */
  memoryAssignedMiB: number;
  qemuVersion: string;
  machines: string[];
  accel: 'kvm' | 'tcg';
  /** The guest CPU model QEMU gets here (`host` under KVM names the physical CPU). */
  cpuModel: string;
  networks: Array<{ name: string; mode: string; subnet?: string }>;
  images: Array<{ name: string; checksum?: string }>;
  /** Shared storage (a NAS) this host mounts: same id = same storage. */
  sharedStorage?: { id: string; path: string };
  instances: number;
  updatedAt: string;
}

export type HostState = 'alive' | 'dead';

/**
 * `revoked/<name>` in etcd: every certificate issued for host `name` until `at` is refused by
 * the peer listeners (a host forgotten, left, or revoked by hand). A certificate issued later
 * — the host joins again with a new token — is not.
 */
/** `certs/<serial>`: a host certificate the cluster CA signed (recorded by the signer), so a CRL can list it. */
export interface CertRecord {
  name: string;
  notBefore: string;
  notAfter: string;
}

export interface RevokedRecord {
  at: string;
  by: string;
  why: string;
}

export interface HostView extends HostRecord {
  state: HostState;
  /** This is the host that answered. */
  self: boolean;
}

/** Who owns an instance (`owners/<name>`): changed only by compare-and-swap. */
export interface OwnerRecord {
  host: string;
  since: string;
  image?: string;
  cpus?: number;
  memoryMiB?: number;
}

/** Kept in the local store (`meta/cluster`): how this host rejoins after a restart. */
export interface ClusterConfig {
  etcd: string[];
  name: string;
  address: string;
  clusterId: string;
  /** etcd is reached over plain http (`--insecure-etcd`), not with this host's certificate. */
  insecureEtcd?: boolean;
  joinedAt: string;
}

/** Cluster-wide facts in etcd (`cluster/config`). */
export interface ClusterInfo {
  id: string;
  /** SHA-256 fingerprint of the cluster CA (public: the CA itself stays on the hosts). */
  caFingerprint?: string;
  createdAt: string;
  createdBy: string;
}

/** A pending join (`joins/<host name>`): only the hash of the one-time secret. */
export interface JoinRecord {
  hash: string;
  expiresAt: string;
  createdBy: string;
  createdAt: string;
}

/** What a member gives a joiner that proved the secret (over TLS, to the joiner only). */
export interface JoinAnswer {
  clusterId: string;
  etcd: string[];
  insecureEtcd: boolean;
  caCert: string;
  caKey: string;
  hostCert: string;
}

export interface LeaseHandle {
  put(kind: StoreKind, key: string, value: unknown): Promise<unknown>;
  revoke(): Promise<void>;
  onLost(cb: (err: Error) => void): unknown;
}

export interface WatchEvent {
  type: 'put' | 'delete';
  key: string;
  value?: unknown;
  revision: number;
}

/** The store operations a cluster needs beyond the plain Store: leases, watches, transactions. */
export interface ClusterBackend extends Store {
  grantLease(ttlSeconds: number): Promise<LeaseHandle>;
  watch(kind: StoreKind, onChange: (ev: WatchEvent) => void): Promise<{ close(): Promise<void> }>;
  txn(
    compares: Array<{ kind: StoreKind; key: string; expectRevision: number }>,
    puts: Array<{ kind: StoreKind; key: string; value: unknown }>,
    deletes: Array<{ kind: StoreKind; key: string }>,
  ): Promise<boolean>;
}

// The modes are part of the migrate request (src/wire/requests.ts).
export { MIGRATION_MODES };
export type MigrationMode = (typeof MIGRATION_MODES)[number];

export interface Blocker {
  /** Stable: qemu-version, machine-type, accelerator, cpu-model, memory, network, address, storage, image, state, host, name, port, snapshots. */
  check: string;
  message: string;
}

export interface MigrationPlan {
  instance: string;
  from: string;
  to: string;
  mode: MigrationMode;
  sharedStorage: boolean;
  blockers: Blocker[];
  ok: boolean;
}

/** What the cluster needs from the rest of the daemon. */
export interface ClusterDeps {
  local: Store;
  events: EventBus;
  /** Opens the cluster store (etcd) at these endpoints, with this host's certificate unless plain http. */
  connect(endpoints: string[], tls: TlsMaterial | undefined): Promise<ClusterBackend>;
  /** The cluster CA and this host's certificate, in the data folder. */
  pki: ClusterPki;
  /** The facts this host publishes (everything but name/address/hostId/updatedAt). */
  hostFacts(): Promise<Omit<HostRecord, 'name' | 'address' | 'hostId' | 'updatedAt'>>;
  /** The instances this host has: claimed in etcd when the host joins. */
  localInstances(): Promise<Array<{ name: string; image: string; cpus: number; memoryMiB: number }>>;
  /** Starts (or re-keys) the mutual-TLS listener peers call (with the pki's certificate). */
  listenPeer(address: string): Promise<void>;
  stopPeer(): Promise<void>;
  log(line: string): void;
}
