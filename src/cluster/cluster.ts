import { randomUUID } from 'node:crypto';
import { vmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import { PeerClient, splitAddress } from './peer.js';
import type { ClusterPki } from './pki.js';
import {
  JOIN_TOKEN_TTL_S,
  acceptJoin,
  alreadyJoined,
  checkEtcdUrls,
  createJoinToken,
  joinWithToken,
  recordOwnCertificate,
  tlsWanted,
  type JoinAsk,
  type JoinMember,
  type JoinRequest,
} from './join.js';
import type { ClusterBackend, ClusterConfig, ClusterDeps, ClusterInfo, HostRecord, HostView, JoinAnswer, LeaseHandle, OwnerRecord, RevokedRecord } from './types.js';
import { claimOwnership, releaseOwnership, transferOwnership } from './ownership.js';
import { noHostFits, placementOrder } from './placement.js';
import { Revocations, revocationList, type RevokedCertificateView } from './revocation.js';

export type { ClusterDeps } from './types.js';

/** Seconds a host's lease lives without keep-alive: after that, the cluster sees it dead. */
export function leaseTtlSeconds(): number {
  const n = Number(process.env.VMKIT_CLUSTER_TTL ?? '');
  return Number.isInteger(n) && n >= 2 && n <= 300 ? n : 10;
}

/**
 * This host's membership in a cluster. etcd holds, under /vmkit/: `cluster/config` (id and
 * the CA's fingerprint; no secret), `joins/<name>` (the hash of a pending join token), `hosts/<name>` (what each host publishes; kept when
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
  private readonly revocations = new Revocations();
  private closed = false;
  private reconnecting?: Promise<void>;

  constructor(private readonly deps: ClusterDeps) {}

  /** The cluster CA and this host's certificate (migration streams use them too). */
  get pki(): ClusterPki {
    return this.deps.pki;
  }

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

  /** Daemon start: rejoin the cluster this host was in (in the background if etcd is down). */
  async start(): Promise<void> {
    const saved = await this.deps.local.get<ClusterConfig>('meta', 'cluster');
    if (!saved) return;
    if (!this.deps.pki.hasHost()) {
      // A membership from before the cluster PKI (a token in etcd, no certificates): it cannot
      // be resumed. The host goes on alone (its VMs keep running) until it joins a new cluster.
      this.deps.log(
        `warning: this host was in cluster ${saved.value.clusterId} as "${saved.value.name}" without a host certificate (made by an older vmkit); ` +
          'it now runs alone: create the cluster again with "vmkit cluster init" and "vmkit cluster add"/"join" (doc/cluster.md)',
      );
      await this.deps.local.delete('meta', 'cluster');
      return;
    }
    this.config = saved.value;
    await this.deps.listenPeer(saved.value.address);
    try {
      await this.connect();
    } catch (err) {
      this.deps.log(`warning: cluster store unreachable, retrying: ${(err as Error).message}`);
      this.scheduleReconnect();
    }
  }

  /**
   * Registers again until it works. The connection in hand (if any) keeps serving meanwhile:
   * a lost lease is this host's liveness key, not the cluster store — dropping the connection
   * with it made every request answer VMKIT_CLUSTER_UNAVAILABLE for seconds whenever a busy host
   * renewed its lease late. The first attempt is immediate, on the same connection; after a
   * failed one, a fresh connection is tried (the old one may be wedged), and swapped in only
   * once the host registered on it.
   */
  private scheduleReconnect(): void {
    if (this.reconnecting || this.closed) return;
    this.reconnecting = (async () => {
      let attempt = 0;
      while (!this.closed && this.config) {
        if (attempt++ > 0) await new Promise((r) => setTimeout(r, Math.min(2_000, 250 * attempt)));
        if (this.closed || !this.config) break;
        try {
          if (attempt === 1 && this.backend) await this.register();
          else await this.connectFresh();
          this.deps.log('cluster store reachable again: host re-registered');
          break;
        } catch (err) {
          if (attempt === 1 || attempt % 10 === 0) this.deps.log(`warning: re-registering in the cluster failed (attempt ${attempt}): ${(err as Error).message}`);
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

  /** `vmkit cluster init` (create) / `vmkit cluster join TOKEN`. */
  async join(req: JoinRequest): Promise<ClusterConfig> {
    splitAddress(req.address);
    if (!req.create) return joinWithToken(req, { pki: this.deps.pki, joinedAs: () => this.config?.name, enter: (c, idOf) => this.enter(c, idOf) });
    const name = req.name ?? '';
    validateName(name, 'host name');
    const etcd = req.etcd ?? [];
    checkEtcdUrls(etcd, req.insecureEtcd);
    if (this.config) {
      if (this.config.name === name && this.config.address === req.address && this.config.etcd.join() === etcd.join()) return this.config;
      throw alreadyJoined(this.config.name);
    }
    const { pki } = this.deps;
    await pki.ensureCa(req.ca);
    await pki.issueHost(name, req.address);
    const fp = await pki.caFingerprint();
    return this.enter({ name, address: req.address, etcd, insecureEtcd: !tlsWanted(etcd) }, async (backend) => {
      let info = await backend.get<ClusterInfo>('cluster', 'config');
      if (!info) {
        const fresh: ClusterInfo = { id: randomUUID(), caFingerprint: fp, createdAt: new Date().toISOString(), createdBy: name };
        try {
          await backend.put('cluster', 'config', fresh, { expectRevision: 0 });
        } catch {
          /* another host created it at the same moment: theirs is checked below */
        }
        info = await backend.get<ClusterInfo>('cluster', 'config');
      }
      if (info!.value.caFingerprint !== fp) {
        throw vmkitError('VMKIT_ALREADY_EXISTS', `etcd at ${etcd.join(', ')} already holds a vmkit cluster (made by ${info!.value.createdBy}) with another CA.`, {
          hint: 'Join it instead: "vmkit cluster add HOST" on a member prints a token for "vmkit cluster join TOKEN" here.',
        });
      }
      return info!.value.id;
    });
  }

  /** The joiner's side: check the member against the token, prove the secret, get a certificate. */
  /** The common end of init and join: etcd reachable with this host's certificate, name free, instances claimed. */
  private async enter(
    c: { name: string; address: string; etcd: string[]; insecureEtcd: boolean },
    clusterIdOf: (backend: ClusterBackend) => Promise<string>,
  ): Promise<ClusterConfig> {
    const backend = await this.deps.connect(c.etcd, c.insecureEtcd ? undefined : await this.deps.pki.tls());
    try {
      const clusterId = await clusterIdOf(backend);
      const existing = await backend.get<HostRecord>('hosts', c.name);
      if (existing && (await backend.get('alive', c.name))) {
        throw vmkitError('VMKIT_ALREADY_EXISTS', `A live host named "${c.name}" is already in the cluster (${existing.value.address}).`, {
          hint: 'Choose another --name.',
        });
      }
      // Instances this host already has become its own; a name another host owns blocks the join.
      const clashes: string[] = [];
      for (const inst of await this.deps.localInstances()) {
        const owner = await backend.get<OwnerRecord>('owners', inst.name);
        if (owner && owner.value.host !== c.name) clashes.push(`${inst.name} (owned by ${owner.value.host})`);
      }
      if (clashes.length > 0) {
        throw vmkitError('VMKIT_ALREADY_EXISTS', `Instance names already used in the cluster: ${clashes.join(', ')}.`, {
          hint: 'Rename or delete those instances on this host, then join again.',
        });
      }
      const config: ClusterConfig = {
        etcd: c.etcd,
        name: c.name,
        address: c.address,
        clusterId,
        ...(c.insecureEtcd ? { insecureEtcd: true } : {}),
        joinedAt: new Date().toISOString(),
      };
      await this.deps.listenPeer(config.address);
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

  /** `vmkit cluster add HOST`: a one-time join token (join.ts). */
  async createJoinToken(name: string, ttlSeconds = JOIN_TOKEN_TTL_S): Promise<{ token: string; name: string; expiresAt: string }> {
    const backend = this.requireBackend();
    const others = async () => (await this.listHosts()).filter((h) => h.state === 'alive' && !h.self).map((h) => h.address);
    return createJoinToken(this.memberSide(backend), name, ttlSeconds, others);
  }

  /** The member's side of a join (join.ts). */
  async acceptJoin(req: JoinAsk, from: string): Promise<JoinAnswer> {
    return acceptJoin(this.memberSide(this.requireBackend()), req, from);
  }

  private memberSide(backend: ClusterBackend): JoinMember {
    return { backend, config: this.config!, pki: this.deps.pki, log: (l) => this.deps.log(l) };
  }

  /** `vmkit cluster etcd-cert`: etcd's certificate from the cluster CA (made now if absent). */
  async etcdCertificate(names: string[]): Promise<{ caCert: string; cert: string; key: string }> {
    for (const n of names) {
      if (!/^[A-Za-z0-9.:-]{1,253}$/.test(n)) throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${n}" is not an address or DNS name.`, { hint: 'Example: --names 10.0.0.10,etcd1' });
    }
    return this.deps.pki.issueEtcd(names);
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
    // The certificate this host leaves with opens no peer listener any more.
    await this.putRevoked(backend, name, 'the host left the cluster');
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
    await this.deps.pki.forgetHost();
    this.deps.events.emit({ type: 'cluster', action: 'host-left', target: name });
  }

  /**
   * Removes a dead host's record (after it is gone for good) and revokes its certificates.
   * Its instances stay listed as lost.
   */
  async forget(host: string): Promise<void> {
    const backend = this.requireBackend();
    if (!(await backend.get('hosts', host))) throw hostNotFound(host);
    await this.assertNotAlive(backend, host, 'A live host leaves with "vmkit cluster leave" on that host.');
    await this.putRevoked(backend, host, 'the host was forgotten');
    await backend.delete('hosts', host);
  }

  /**
   * `vmkit cluster revoke NAME`: every certificate issued for NAME until now is refused by
   * every peer listener (a lost or stolen host key, a join answer that leaked). NAME may have
   * joined or not (a token's certificate that was never used); a live host must leave first.
   */
  async revoke(name: string): Promise<RevokedRecord> {
    validateName(name, 'host name');
    const backend = this.requireBackend();
    await this.assertNotAlive(backend, name, `Take it out first: "vmkit cluster leave" on ${name}, or stop its daemon and "vmkit cluster forget ${name}".`);
    return this.putRevoked(backend, name, 'revoked by an administrator');
  }

  /** Whether a peer's certificate (its CN and issue time) was revoked. */
  certificateRevoked(commonName: string, notBefore: Date): boolean {
    return this.revocations.has(commonName, notBefore);
  }

  /** `vmkit cluster crl` (revocation.ts). */
  async crl(days = 30): Promise<{ crl: string; revoked: RevokedCertificateView[] }> {
    return revocationList(this.requireBackend(), this.deps.pki.ca, days);
  }

  private async assertNotAlive(backend: ClusterBackend, host: string, hint: string): Promise<void> {
    if (this.alive.has(host) || (await backend.get('alive', host))) throw vmkitError('VMKIT_INVALID_STATE', `Host "${host}" is alive.`, { hint });
  }

  private putRevoked(backend: ClusterBackend, name: string, why: string): Promise<RevokedRecord> {
    return this.revocations.revoke(backend, this.config!.name, name, why, (l) => this.deps.log(l));
  }

  private async connect(): Promise<void> {
    if (this.backend) return this.register();
    return this.connectFresh();
  }

  /** A new connection to the store; it replaces the current one once this host registered on it. */
  private async connectFresh(): Promise<void> {
    const config = this.config!;
    const fresh = await this.deps.connect(config.etcd, config.insecureEtcd ? undefined : await this.deps.pki.tls());
    const old = this.backend;
    this.backend = fresh;
    try {
      await this.register();
    } catch (err) {
      // Back to the old connection (still serving reads); the unused new one has nothing to say on close.
      if (this.backend === fresh) this.backend = old;
      await fresh.close().catch(() => undefined);
      throw err;
    }
    // The old connection's watches were closed by register(); closing it has nothing to report.
    if (old && old !== fresh) void old.close().catch(() => undefined);
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
    // A lease from an earlier, half-done registration holds nothing now (the key moved to the
    // new one): it goes, rather than being kept alive for ever.
    const prev = this.lease;
    if (prev && prev !== lease) void prev.revoke().catch(() => undefined);
    lease.onLost(() => {
      if (this.lease !== lease || this.closed) return;
      this.deps.log('warning: the cluster lease was lost; re-registering (the cluster connection keeps serving)');
      this.lease = undefined;
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
    await recordOwnCertificate(backend, this.deps.pki, (l) => this.deps.log(l));
    this.watchers.push(
      await this.revocations.follow(backend),
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
    return new PeerClient(h.address, await this.deps.pki.tls(), name);
  }

  /** The host an instance without --target goes to: alive, has the image, most free memory. */
  async place(image: string, memoryMiB: number): Promise<string> {
    return this.placeExcept(image, memoryMiB);
  }

  /** Placement that avoids one host (evacuation). */
  async placeExcept(image: string, memoryMiB: number, except?: string): Promise<string> {
    const best = (await this.candidates(image, memoryMiB, except))[0];
    if (!best) throw noHostFits(image, memoryMiB);
    return best.name;
  }

  /** Live hosts with the image and room for the memory, the emptiest first (placement.ts). */
  async candidates(image: string, memoryMiB: number, except?: string): Promise<HostView[]> {
    return placementOrder(await this.listHosts(), image, memoryMiB, except);
  }

  // ---- ownership ---------------------------------------------------------------------------

  async owner(name: string): Promise<{ record: OwnerRecord; revision: number } | undefined> {
    const found = await this.requireBackend().get<OwnerRecord>('owners', name);
    return found ? { record: found.value, revision: found.revision } : undefined;
  }

  async owners(): Promise<Array<{ name: string; record: OwnerRecord }>> {
    return (await this.requireBackend().list<OwnerRecord>('owners')).map((o) => ({ name: o.key, record: o.value }));
  }

  /** Makes this host the owner of a new instance name (fails if any host owns it; ownership.ts). */
  async claim(name: string, summary: { image?: string; cpus?: number; memoryMiB?: number }): Promise<void> {
    return claimOwnership(this.requireBackend(), this.config!.name, name, summary);
  }

  /** The instance was deleted here: its name is free again (only if this host owns it). */
  async released(name: string): Promise<void> {
    if (this.backend && this.config) await releaseOwnership(this.backend, this.config.name, name, (l) => this.deps.log(l));
  }

  /** Moves ownership from → to, only if nobody changed it since `revision` (compare-and-swap). */
  async transfer(name: string, from: string, to: string, revision: number, summary: Partial<OwnerRecord>): Promise<boolean> {
    return transferOwnership(this.requireBackend(), name, from, to, revision, summary);
  }
}

export function hostNotFound(name: string): Error {
  return vmkitError('VMKIT_HOST_NOT_FOUND', `There is no cluster host "${name}".`, { hint: '"vmkit cluster list" shows the hosts.' });
}
