import { randomBytes, randomUUID } from 'node:crypto';
import { vmkitError, asVmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import type { Store } from '../store/store.js';
import type { EventBus } from '../operations/events.js';
import { PeerClient, splitAddress } from './peer.js';
import type { ClusterBackend, ClusterConfig, ClusterInfo, HostRecord, HostView, LeaseHandle, OwnerRecord } from './types.js';

/** What the cluster needs from the rest of the daemon. */
export interface ClusterDeps {
  local: Store;
  events: EventBus;
  /** Opens the cluster store (etcd) at these endpoints. */
  connect(endpoints: string[]): Promise<ClusterBackend>;
  /** The facts this host publishes (everything but name/address/hostId/updatedAt). */
  hostFacts(): Promise<Omit<HostRecord, 'name' | 'address' | 'hostId' | 'updatedAt'>>;
  /** The instances this host has: claimed in etcd when the host joins. */
  localInstances(): Promise<Array<{ name: string; image: string; cpus: number; memoryMiB: number }>>;
  /** Starts (or re-keys) the TCP listener peers call. */
  listenPeer(address: string, token: string): Promise<void>;
  stopPeer(): Promise<void>;
  log(line: string): void;
}

export interface JoinRequest {
  etcd: string[];
  name: string;
  address: string;
  /** true: create the cluster when etcd holds none (init); false: it must exist (join). */
  create: boolean;
}

/** Seconds a host's lease lives without keep-alive: after that, the cluster sees it dead. */
export function leaseTtlSeconds(): number {
  const n = Number(process.env.VMKIT_CLUSTER_TTL ?? '');
  return Number.isInteger(n) && n >= 2 && n <= 300 ? n : 10;
}

/**
 * This host's membership in a cluster. etcd holds, under /vmkit/: `cluster/config` (id and
 * the token hosts use with each other), `hosts/<name>` (what each host publishes; kept when
 * the host dies so it is listed as dead), `alive/<name>` (on the host's lease: it disappears
 * when the host stops renewing it) and `owners/<instance>` (which host owns each instance,
 * changed only by compare-and-swap so two hosts never both own one).
 */
export class ClusterManager {
  private config?: ClusterConfig;
  private backend?: ClusterBackend;
  private lease?: LeaseHandle;
  private hostId = randomUUID();
  private refreshTimer?: NodeJS.Timeout;
  private watchers: Array<{ close(): Promise<void> }> = [];
  private hosts = new Map<string, HostRecord>();
  private alive = new Set<string>();
  private closed = false;
  private reconnecting?: Promise<void>;

  constructor(private readonly deps: ClusterDeps) {}

  get joined(): boolean {
    return this.config !== undefined;
  }

  get name(): string | undefined {
    return this.config?.name;
  }

  get etcd(): string[] | undefined {
    return this.config?.etcd;
  }

  get clusterId(): string | undefined {
    return this.config?.clusterId;
  }

  get address(): string | undefined {
    return this.config?.address;
  }

  get token(): string | undefined {
    return this.config?.token;
  }

  /** Daemon start: rejoin the cluster this host was in (in the background if etcd is down). */
  async start(): Promise<void> {
    const saved = await this.deps.local.get<ClusterConfig>('meta', 'cluster');
    if (!saved) return;
    this.config = saved.value;
    await this.deps.listenPeer(saved.value.address, saved.value.token);
    try {
      await this.connect();
    } catch (err) {
      this.deps.log(`warning: cluster store unreachable, retrying: ${(err as Error).message}`);
      this.scheduleReconnect();
    }
  }

  private scheduleReconnect(): void {
    if (this.reconnecting || this.closed) return;
    this.reconnecting = (async () => {
      while (!this.closed && this.config) {
        await new Promise((r) => setTimeout(r, 2_000));
        try {
          await this.connect();
          this.deps.log('cluster store reachable again: host re-registered');
          break;
        } catch {
          /* keep trying */
        }
      }
      this.reconnecting = undefined;
    })();
  }

  /** Throws VMKIT_CLUSTER_NOT_JOINED unless this host is in a cluster. */
  requireJoined(): void {
    if (!this.config) {
      throw vmkitError('VMKIT_CLUSTER_NOT_JOINED', 'This host is not in a cluster.', {
        hint: 'Create or join one with "vmkit cluster init --etcd URL --name NAME --address ADDR:PORT".',
      });
    }
  }

  private requireBackend(): ClusterBackend {
    this.requireJoined();
    if (!this.backend) {
      throw vmkitError('VMKIT_CLUSTER_UNAVAILABLE', `The cluster store (etcd at ${this.config!.etcd.join(', ')}) is not reachable right now.`, {
        hint: 'Check that etcd runs and that this host reaches it; the daemon keeps retrying.',
      });
    }
    return this.backend;
  }

  /** `vmkit cluster init` / `join`. */
  async join(req: JoinRequest): Promise<ClusterConfig> {
    validateName(req.name, 'host name');
    splitAddress(req.address);
    if (req.etcd.length === 0 || req.etcd.some((e) => !/^https?:\/\/[^/]+$/.test(e))) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `--etcd wants http://HOST:PORT URLs, got "${req.etcd.join(',')}".`, { hint: 'Example: --etcd http://10.0.0.10:2379' });
    }
    if (this.config) {
      if (this.config.name === req.name && this.config.address === req.address && this.config.etcd.join() === req.etcd.join()) return this.config;
      throw vmkitError('VMKIT_CLUSTER_NOT_JOINED', `This host is already in a cluster as "${this.config.name}".`, {
        hint: 'Leave it first with "vmkit cluster leave".',
      });
    }
    const backend = await this.deps.connect(req.etcd);
    try {
      let info = await backend.get<ClusterInfo>('cluster', 'config');
      if (!info) {
        if (!req.create) {
          throw vmkitError('VMKIT_CLUSTER_NOT_JOINED', `etcd at ${req.etcd.join(', ')} holds no vmkit cluster yet.`, {
            hint: 'Create it on the first host with "vmkit cluster init".',
          });
        }
        const fresh: ClusterInfo = { id: randomUUID(), token: randomBytes(24).toString('base64url'), createdAt: new Date().toISOString(), createdBy: req.name };
        try {
          await backend.put('cluster', 'config', fresh, { expectRevision: 0 });
        } catch {
          /* another host created it at the same moment: use theirs */
        }
        info = await backend.get<ClusterInfo>('cluster', 'config');
      }
      const existing = await backend.get<HostRecord>('hosts', req.name);
      if (existing && (await backend.get('alive', req.name))) {
        throw vmkitError('VMKIT_ALREADY_EXISTS', `A live host named "${req.name}" is already in the cluster (${existing.value.address}).`, {
          hint: 'Choose another --name.',
        });
      }
      // Instances this host already has become its own; a name another host owns blocks the join.
      const clashes: string[] = [];
      for (const inst of await this.deps.localInstances()) {
        const owner = await backend.get<OwnerRecord>('owners', inst.name);
        if (owner && owner.value.host !== req.name) clashes.push(`${inst.name} (owned by ${owner.value.host})`);
      }
      if (clashes.length > 0) {
        throw vmkitError('VMKIT_ALREADY_EXISTS', `Instance names already used in the cluster: ${clashes.join(', ')}.`, {
          hint: 'Rename or delete those instances on this host, then join again.',
        });
      }
      const config: ClusterConfig = {
        etcd: req.etcd,
        name: req.name,
        address: req.address,
        clusterId: info!.value.id,
        token: info!.value.token,
        joinedAt: new Date().toISOString(),
      };
      await this.deps.listenPeer(config.address, config.token);
      this.config = config;
      this.backend = backend;
      await this.deps.local.put('meta', 'cluster', config);
      await this.register();
      this.deps.events.emit({ type: 'cluster', action: 'host-joined', target: config.name });
      return config;
    } catch (err) {
      // The join's error is what the caller sees; closing the unused connection is tidying only.
      if (this.backend !== backend) await backend.close().catch(() => undefined);
      throw err;
    }
  }

  /** `vmkit cluster leave`: only a host that owns no instance. */
  async leave(): Promise<void> {
    const backend = this.requireBackend();
    const name = this.config!.name;
    const owned = (await backend.list<OwnerRecord>('owners')).filter((o) => o.value.host === name).map((o) => o.key);
    if (owned.length > 0) {
      throw vmkitError('VMKIT_INVALID_STATE', `Host "${name}" still owns ${owned.join(', ')}.`, {
        hint: `Move them first ("vmkit cluster evacuate ${name}") or delete them.`,
      });
    }
    await this.stopTimers();
    // Leaving regardless: an unrevoked lease expires on its own; a host record left behind is
    // logged (another host can remove it with "vmkit cluster forget").
    await this.lease?.revoke().catch(() => undefined);
    await backend.delete('hosts', name).catch((err: Error) => this.deps.log(`warning: leaving: removing the record of host ${name} failed: ${err.message}`));
    // The connection is dropped either way.
    await backend.close().catch(() => undefined);
    this.backend = undefined;
    this.lease = undefined;
    this.config = undefined;
    await this.deps.local.delete('meta', 'cluster');
    await this.deps.stopPeer();
    this.deps.events.emit({ type: 'cluster', action: 'host-left', target: name });
  }

  /** Removes a dead host's record (after it is gone for good). Its instances stay listed as lost. */
  async forget(host: string): Promise<void> {
    const backend = this.requireBackend();
    if (!(await backend.get('hosts', host))) throw hostNotFound(host);
    if (this.alive.has(host) || (await backend.get('alive', host))) {
      throw vmkitError('VMKIT_INVALID_STATE', `Host "${host}" is alive.`, { hint: 'A live host leaves with "vmkit cluster leave" on that host.' });
    }
    await backend.delete('hosts', host);
  }

  private async connect(): Promise<void> {
    const config = this.config!;
    const backend = this.backend ?? (await this.deps.connect(config.etcd));
    this.backend = backend;
    await this.register();
  }

  /** Publishes this host and puts its liveness key on a fresh lease; watches the others. */
  private async register(): Promise<void> {
    const backend = this.backend!;
    const config = this.config!;
    await this.stopTimers();
    this.hostId = randomUUID();
    await this.publish();
    const lease = await backend.grantLease(leaseTtlSeconds());
    await lease.put('alive', config.name, { hostId: this.hostId, since: new Date().toISOString() });
    lease.onLost(() => {
      if (this.lease !== lease || this.closed) return;
      this.deps.log('warning: the cluster lease was lost; re-registering');
      this.lease = undefined;
      this.backend = undefined;
      // The lost connection is replaced below; its close has nothing to report.
      void backend.close().catch(() => undefined);
      this.scheduleReconnect();
    });
    this.lease = lease;
    // Instances this host runs are its own (after a restart, or after it was seen dead).
    for (const inst of await this.deps.localInstances()) {
      const owner = await backend.get<OwnerRecord>('owners', inst.name);
      if (!owner) await this.claim(inst.name, inst).catch((err: Error) => this.deps.log(`warning: claiming instance ${inst.name} failed: ${err.message}`));
    }
    for (const h of await backend.list<HostRecord>('hosts')) this.hosts.set(h.key, h.value);
    for (const a of await backend.list('alive')) this.alive.add(a.key);
    this.watchers.push(
      await backend.watch('alive', (ev) => {
        const was = this.alive.has(ev.key);
        if (ev.type === 'put') this.alive.add(ev.key);
        else this.alive.delete(ev.key);
        if (was !== (ev.type === 'put')) this.deps.events.emit({ type: 'cluster', action: ev.type === 'put' ? 'host-alive' : 'host-dead', target: ev.key });
      }),
      await backend.watch('hosts', (ev) => {
        if (ev.type === 'put' && ev.value) this.hosts.set(ev.key, ev.value as HostRecord);
        else this.hosts.delete(ev.key);
      }),
    );
    // A failed refresh is retried on the next tick; an unreachable store is reported by the lease.
    this.refreshTimer = setInterval(() => void this.publish().catch(() => undefined), 3_000);
    this.refreshTimer.unref();
  }

  /** Writes this host's record (free memory, instances …) now. */
  async publish(): Promise<void> {
    if (!this.backend || !this.config) return;
    const facts = await this.deps.hostFacts();
    const record: HostRecord = { ...facts, name: this.config.name, address: this.config.address, hostId: this.hostId, updatedAt: new Date().toISOString() };
    await this.backend.put('hosts', this.config.name, record);
    this.hosts.set(record.name, record);
  }

  private async stopTimers(): Promise<void> {
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    this.refreshTimer = undefined;
    const ws = this.watchers;
    this.watchers = [];
    // A watch that fails to close ends with its connection.
    for (const w of ws) await w.close().catch(() => undefined);
  }

  /** Daemon shutdown: the lease is left to expire (VMs keep running; a restart re-registers). */
  async close(): Promise<void> {
    this.closed = true;
    await this.stopTimers();
    // Shutting down: the connection goes either way, and the lease expires on its own.
    await this.backend?.close().catch(() => undefined);
    this.backend = undefined;
  }

  // ---- hosts ----------------------------------------------------------------------------

  async listHosts(): Promise<HostView[]> {
    const backend = this.requireBackend();
    const alive = new Set((await backend.list('alive')).map((a) => a.key));
    return (await backend.list<HostRecord>('hosts')).map((h) => ({ ...h.value, state: alive.has(h.key) ? 'alive' : 'dead', self: h.key === this.config!.name }));
  }

  async host(name: string): Promise<HostView> {
    const found = (await this.listHosts()).find((h) => h.name === name);
    if (!found) throw hostNotFound(name);
    return found;
  }

  /** A client for another host's API (throws when it is dead). */
  async peer(name: string): Promise<PeerClient> {
    const h = await this.host(name);
    if (h.state !== 'alive') {
      throw vmkitError('VMKIT_HOST_UNREACHABLE', `Cluster host "${name}" is dead (its lease expired).`, {
        hint: 'Start its daemon again; its instances are still listed and come back with it.',
      });
    }
    return new PeerClient(h.address, this.config!.token, name);
  }

  /** The host an instance without --target goes to: alive, has the image, most free memory. */
  async place(image: string, memoryMiB: number): Promise<string> {
    return this.placeExcept(image, memoryMiB);
  }

  /** Placement that avoids one host (evacuation). */
  async placeExcept(image: string, memoryMiB: number, except?: string): Promise<string> {
    const fits = await this.candidates(image, memoryMiB, except);
    if (fits.length === 0) {
      throw vmkitError('VMKIT_RESOURCES_EXCEEDED', `No live host with image "${image}" has ${memoryMiB} MiB free.`, {
        hint: '"vmkit cluster list" shows each host\'s free memory; pick one with --target.',
      });
    }
    return fits[0]!.name;
  }

  /** Live hosts with the image and room for the memory, the emptiest first. */
  async candidates(image: string, memoryMiB: number, except?: string): Promise<HostView[]> {
    const hosts = (await this.listHosts()).filter((h) => h.state === 'alive' && h.name !== except && h.images.some((i) => i.name === image));
    const room = (h: HostView) => Math.min(h.memoryFreeMiB, h.memoryTotalMiB - h.memoryAssignedMiB);
    return hosts.filter((h) => room(h) >= memoryMiB).sort((a, b) => room(b) - room(a) || a.name.localeCompare(b.name));
  }

  // ---- ownership ---------------------------------------------------------------------------

  async owner(name: string): Promise<{ record: OwnerRecord; revision: number } | undefined> {
    const found = await this.requireBackend().get<OwnerRecord>('owners', name);
    return found ? { record: found.value, revision: found.revision } : undefined;
  }

  async owners(): Promise<Array<{ name: string; record: OwnerRecord }>> {
    return (await this.requireBackend().list<OwnerRecord>('owners')).map((o) => ({ name: o.key, record: o.value }));
  }

  /** Makes this host the owner of a new instance name (fails if any host owns it). */
  async claim(name: string, summary: { image?: string; cpus?: number; memoryMiB?: number }): Promise<void> {
    const backend = this.requireBackend();
    const record: OwnerRecord = { host: this.config!.name, since: new Date().toISOString(), image: summary.image, cpus: summary.cpus, memoryMiB: summary.memoryMiB };
    try {
      await backend.put('owners', name, record, { expectRevision: 0 });
    } catch (err) {
      const e = asVmkitError(err);
      if (e.code !== 'VMKIT_ALREADY_EXISTS') throw e;
      const other = await backend.get<OwnerRecord>('owners', name);
      if (other?.value.host === this.config!.name) return;
      throw vmkitError('VMKIT_ALREADY_EXISTS', `An instance named "${name}" already exists on cluster host "${other?.value.host}".`, {
        hint: 'Instance names are unique in the whole cluster; choose another.',
      });
    }
  }

  /** The instance was deleted here: its name is free again (only if this host owns it). */
  async released(name: string): Promise<void> {
    if (!this.backend || !this.config) return;
    const found = await this.backend.get<OwnerRecord>('owners', name);
    if (found?.value.host === this.config.name) {
      const host = this.config.name;
      await this.backend
        .delete('owners', name, { expectRevision: found.revision })
        .catch((err: Error) => this.deps.log(`warning: freeing the name ${name} (owned by ${host}) failed: ${err.message}`));
    }
  }

  /** Moves ownership from → to, only if nobody changed it since `revision` (compare-and-swap). */
  async transfer(name: string, from: string, to: string, revision: number, summary: Partial<OwnerRecord>): Promise<boolean> {
    const backend = this.requireBackend();
    const current = await backend.get<OwnerRecord>('owners', name);
    if (!current || current.revision !== revision || current.value.host !== from) return false;
    return backend.txn(
      [{ kind: 'owners', key: name, expectRevision: revision }],
      [{ kind: 'owners', key: name, value: { ...current.value, ...summary, host: to, since: new Date().toISOString() } }],
      [],
    );
  }
}

export function hostNotFound(name: string): Error {
  return vmkitError('VMKIT_HOST_NOT_FOUND', `There is no cluster host "${name}".`, { hint: '"vmkit cluster list" shows the hosts.' });
}
