import net from 'node:net';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { vmkitError } from '../../errors.js';
import { confineGuests } from '../../host/guest-uids.js';
import type { InstanceManager } from '../../instances/manager.js';
import type { InstanceRegistry } from '../../instances/registry.js';
import type { Lifecycle } from '../../instances/lifecycle.js';
import type { Instance } from '../../domain/types.js';
import { addTlsCreds, type StreamTls } from '../../qemu/migrate.js';
import type { SnapshotManager } from '../../snapshots/snapshots.js';
import type { ImageStore } from '../../images/image-store.js';
import type { NetworkManager } from '../../network/manager.js';
import type { Store } from '../../store/store.js';
import type { EventBus } from '../../operations/events.js';
import type { QmpClient } from '../../qemu/qmp.js';
import type { ClusterManager } from '../cluster.js';
import { splitAddress } from '../peer.js';
import type { HostRecord } from '../types.js';
import type { MigrationRecord } from './protocol.js';

/** What a host's own facts say about it (memory, CPUs, QEMU), for the pre-flight. */
export type SelfFacts = () => Promise<Omit<HostRecord, 'name' | 'address' | 'hostId' | 'updatedAt'>>;

/** A migration in progress here; `abort` and `watchdog` live only as long as the daemon does. */
export interface ActiveMigration {
  record: MigrationRecord;
  abort?: AbortController;
  watchdog?: NodeJS.Timeout;
}

/**
 * What the source, target and recovery halves share: the daemon's services and the table of
 * migrations in progress (one table, so GET /1.0/internal/migrations/:id answers for both roles).
 */
export class MigrationContext {
  readonly active = new Map<string, ActiveMigration>();
  /** The instances' locks, rows, QEMUs and state writer (every step holds the instance's lock). */
  readonly registry: InstanceRegistry;
  /** Start/stop steps of an instance whose lock the caller holds. */
  readonly lifecycle: Lifecycle;

  constructor(
    readonly cluster: ClusterManager,
    readonly instances: InstanceManager,
    readonly snapshots: SnapshotManager,
    readonly images: ImageStore,
    readonly networks: NetworkManager | undefined,
    readonly local: Store,
    readonly events: EventBus,
    readonly self: SelfFacts,
  ) {
    this.registry = instances.registry;
    this.lifecycle = instances.lifecycle;
  }

  myIp(): string {
    return splitAddress(this.cluster.address!)[0];
  }

  qmpOf(name: string): QmpClient {
    const q = this.registry.qmp(name);
    if (!q) throw vmkitError('VMKIT_INVALID_STATE', `"${name}" has no QEMU attached.`, { hint: 'Start it first.' });
    return q;
  }

  /**
   * Gives the instance's QEMU this host's cluster certificate for the migration and NBD
   * streams (`tls-creds-x509`, peer verified against the cluster CA). QEMU reads a
   * per-migration copy of the files, removed once it has loaded them.
   */
  async qemuTls(inst: Instance, qmp: QmpClient, migrationId: string, endpoint: 'client' | 'server', hostname?: string): Promise<StreamTls> {
    const creds = `mig-tls-${migrationId.slice(0, 8)}`;
    const dir = join(this.registry.instanceDir(inst), `migration-tls-${migrationId.slice(0, 8)}`);
    try {
      // QEMU runs under the guest's own uid (src/host/guest-uids.ts): the copy is its to read.
      const owner = confineGuests() && inst.uid !== undefined ? { uid: inst.uid, gid: inst.uid } : undefined;
      await this.cluster.pki.qemuCredsDir(dir, owner);
      await addTlsCreds(qmp, { id: creds, dir, endpoint });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    return { creds, hostname };
  }

  /** Ends the peer watch of a migration (either role); the entry itself stays. */
  stopWatch(id: string): void {
    const entry = this.active.get(id);
    if (entry?.watchdog) clearInterval(entry.watchdog);
    if (entry) entry.watchdog = undefined;
  }
}

/** A free TCP port on an address (bound and released: QEMU takes it right after). */
export async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}
