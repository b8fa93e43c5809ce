import { asVmkitError, vmkitError } from '../errors.js';
import { findInstanceType } from '../domain/instance-types.js';
import { addHostAddress, deleteHostAddress } from '../network/bridge.js';
import { applyServices, type RulesetService } from '../network/nftables.js';
import type { InstanceView, VmkitEvent } from '../domain/types.js';
import type { Network } from '../wire/network.js';
import type { CreateInstanceRequest } from '../instances/types.js';
import type { CreateNetworkRequest } from '../network/network.js';
import type { EventBus } from '../operations/events.js';
import type { Store } from '../store/store.js';
import type { StackServiceSpec, StackView } from '../wire/stack.js';
import { ReplicaProbe } from './health.js';
import type { StackCluster, StackHost } from './hosts.js';
import { templateKey } from './spec.js';
import { stackView } from './view.js';
import { REPLICA_HOME_META_KEY, REPLICA_META_KEY, type ReplicaRecord, type ServiceState, type StackRecord } from './types.js';

/** What the controller needs of instances (InstanceManager has it). */
export interface StackInstances {
  list(): Promise<InstanceView[]>;
  create(req: CreateInstanceRequest): Promise<InstanceView>;
  start(name: string): Promise<InstanceView>;
  delete(name: string, opts?: { force?: boolean }): Promise<void>;
}

/** What the controller needs of networks (NetworkManager has it). */
export interface StackNetworks {
  exists(name: string): Promise<boolean>;
  load(name: string): Promise<Network>;
  create(req: CreateNetworkRequest): Promise<Network>;
  delete(name: string): Promise<void>;
  /** Addresses no NIC may be given (the service addresses): asked at every NIC allocation. */
  setAddressReservations?(fn: (network: string) => ReadonlyMap<string, string>): void;
}

export interface StackDeps {
  store: Store;
  instances: StackInstances;
  networks: StackNetworks;
  images: { get(name: string): Promise<unknown> };
  events: EventBus;
  log: (line: string) => void;
  /** The cluster (placement on other hosts, their instances); absent or alone: everything stays here. */
  cluster?: StackCluster;
}

/** Where a replica is, as far as this pass knows. */
type Whereabouts = 'local' | 'alive' | 'dead' | 'unknown';

/** Ports the forwards of replicas on other hosts are taken from (below Linux's ephemeral range). */
const FORWARD_PORTS = { first: 20000, count: 10000 };
const FORWARD_TRIES = 5;
/** Every this many passes, instances of this host's stacks that no row lists are deleted (see sweep()). */
const SWEEP_EVERY = 5;

/** How long a replica leaving the service address keeps running (requests in flight finish). */
export const DRAIN_MS = 1000;
const TICK_MS = 1000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A port for a remote replica's forward (a clash on that host is retried with another). */
function forwardPort(): number {
  return FORWARD_PORTS.first + Math.floor(Math.random() * FORWARD_PORTS.count);
}

/**
 * The stacks' controller: makes every stack's replicas match its spec, in the daemon. It is
 * level-triggered — each pass compares the stored row, the instances and the health checks
 * and takes the next step (replace a dead replica, scale, one step of a roll) — so a daemon
 * that died half-way simply carries on from the stored row at its next start. Every step is
 * written to the row before and after it is done (see createReplica/removeReplica).
 */
export class StackController {
  private readonly records = new Map<string, StackRecord>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly busy = new Set<string>();
  private readonly probes = new Map<string, { probe: ReplicaProbe; key: string }>();
  private readonly draining = new Set<string>();
  private insts = new Map<string, InstanceView>();
  /** Cluster hosts by the lease in etcd (last survey), hosts that did not answer it, and whether it came in. */
  private hostState = new Map<string, 'alive' | 'dead'>();
  private silent = new Set<string>();
  private clusterKnown = false;
  private passes = 0;
  private sweeping = false;
  private rules: Promise<unknown> = Promise.resolve();
  private addresses = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private closed = false;

  constructor(readonly deps: StackDeps) {
    deps.networks.setAddressReservations?.((network) => this.serviceAddresses(network));
  }

  /**
   * The service addresses on a network (address → "stack service STACK/SERVICE"): reserved
   * for as long as a stack's spec names them, so no NIC (DHCP pool or static) is given one.
   */
  serviceAddresses(network: string): Map<string, string> {
    const out = new Map<string, string>();
    for (const rec of this.all())
      for (const s of rec.spec.services) if (s.address !== undefined && s.networks[0] === network) out.set(s.address.split(':')[0]!, `stack service ${rec.name}/${s.name}`);
    return out;
  }

  /** Loads every stack, rewrites the same rules as before a restart, and starts the loop. */
  async start(): Promise<void> {
    for (const v of await this.deps.store.list<StackRecord>('stacks')) this.records.set(v.key, v.value);
    await this.refreshInstances();
    for (const rec of this.records.values()) for (const svc of rec.spec.services) for (const r of rec.services[svc.name]?.replicas ?? []) this.ensureProbe(rec, svc, r);
    await this.applyRules().catch((err: Error) => this.deps.log(`warning: stack service rules not applied: ${err.message}`));
    this.unsubscribe = this.deps.events.subscribe((e) => this.onEvent(e));
    this.timer = setInterval(() => this.tickAll(), TICK_MS);
    this.timer.unref();
    this.tickAll();
  }

  /** Stops the loop and the health checks; replicas and rules stay (the daemon only lets go). */
  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.unsubscribe?.();
    for (const p of this.probes.values()) p.probe.stop();
    this.probes.clear();
  }

  // ---- rows ---------------------------------------------------------------------------------

  record(name: string): StackRecord | undefined {
    return this.records.get(name);
  }

  all(): StackRecord[] {
    return [...this.records.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  async save(rec: StackRecord): Promise<void> {
    rec.updatedAt = new Date().toISOString();
    await this.deps.store.put('stacks', rec.name, rec);
    this.records.set(rec.name, rec);
    this.deps.events.lifecycle('stack-updated', rec.name, { generation: rec.generation });
  }

  async forget(name: string): Promise<void> {
    await this.deps.store.delete('stacks', name);
    this.records.delete(name);
    this.deps.events.lifecycle('stack-deleted', name);
  }

  /** One change to a stack at a time (apply, rollback, delete and the loop's passes). */
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const next = (this.locks.get(name) ?? Promise.resolve()).catch(() => undefined).then(fn);
    this.locks.set(name, next);
    return next;
  }

  kick(name: string): void {
    if (this.closed || this.busy.has(name)) return;
    this.busy.add(name);
    void this.withLock(name, () => this.tick(name))
      .catch((err: Error) => this.deps.log(`stack ${name}: ${err.message}`))
      .finally(() => this.busy.delete(name));
  }

  private tickAll(): void {
    for (const name of this.records.keys()) this.kick(name);
    if (++this.passes % SWEEP_EVERY === 0) void this.sweep().catch((err: Error) => this.deps.log(`stacks: clean-up: ${err.message}`));
  }

  /**
   * In a cluster: replicas this host made that no row lists any more — left on a host that was
   * dead when they were replaced (or when their stack was deleted), or made by a create whose
   * answer never came — are deleted once their host is alive and answering. Only instances
   * that carry this stack's marker and name this host as their home are ever touched.
   */
  private async sweep(): Promise<void> {
    const self = this.deps.cluster?.self();
    if (!self || !this.clusterKnown || this.closed || this.sweeping) return;
    this.sweeping = true;
    try {
      for (const inst of [...this.insts.values()]) await this.sweepOne(inst, self);
    } finally {
      this.sweeping = false;
    }
  }

  private async sweepOne(inst: InstanceView, self: string): Promise<void> {
    const mark = inst.cloudInit?.meta?.[REPLICA_META_KEY];
    if (!mark || inst.cloudInit?.meta?.[REPLICA_HOME_META_KEY] !== self || !inst.host) return;
    if (this.hostState.get(inst.host) !== 'alive' || this.silent.has(inst.host)) return;
    const [stackName = '', svcName = ''] = mark.split('/');
    // And a replica's name (a clone of a replica, which may carry its meta-data, has another).
    if (!inst.name.startsWith(`${stackName}-${svcName}-`) || !/^\d+$/.test(inst.name.slice(stackName.length + svcName.length + 2))) return;
    await this.withLock(stackName, async () => {
      // Still there and still in no row (a replica removed meanwhile is gone already).
      if (this.findReplica(inst.name) || !this.insts.has(inst.name) || this.closed) return;
      this.deps.log(`stack ${stackName}: deleting ${inst.name} on ${inst.host}: a replica of this host's stack that no longer belongs to it`);
      try {
        if (inst.host === self) await this.deps.instances.delete(inst.name, { force: true });
        else await this.deps.cluster!.delete(inst.host!, inst.name);
        this.insts.delete(inst.name);
      } catch (err) {
        if (asVmkitError(err).code !== 'VMKIT_INSTANCE_NOT_FOUND') this.deps.log(`stack ${stackName}: deleting ${inst.name}: ${(err as Error).message}`);
      }
    });
  }

  // ---- events and health --------------------------------------------------------------------

  private findReplica(instance: string): { rec: StackRecord; svc?: StackServiceSpec; r: ReplicaRecord } | undefined {
    for (const rec of this.records.values()) {
      for (const [svcName, st] of Object.entries(rec.services)) {
        const r = st.replicas.find((x) => x.instance === instance);
        if (r) return { rec, svc: rec.spec.services.find((s) => s.name === svcName), r };
      }
    }
    return undefined;
  }

  /** A replica's QEMU ended (crash, kill, stop): out of the service address at once. */
  private onEvent(e: VmkitEvent): void {
    if (e.type === 'cluster' && e.action === 'host-dead' && typeof e.target === 'string') return this.onHostDead(e.target);
    if (e.type !== 'lifecycle' || typeof e.target !== 'string') return;
    if (!['instance-crashed', 'instance-stopped', 'instance-stopping', 'instance-paused', 'instance-deleted'].includes(e.action)) return;
    const found = this.findReplica(e.target);
    if (!found) return;
    const p = this.probes.get(found.r.instance);
    if (p) p.probe.markDead(e.action.replace('instance-', ''));
    if (found.r.serving) {
      found.r.serving = false;
      void this.applyRules().catch((err: Error) => this.deps.log(`stack ${found.rec.name}: rules: ${err.message}`));
    }
    this.kick(found.rec.name);
  }

  /** A cluster host's lease expired: its replicas leave the service addresses at once and are replaced. */
  private onHostDead(host: string): void {
    this.hostState.set(host, 'dead');
    let changed = false;
    for (const rec of this.records.values()) {
      for (const st of Object.values(rec.services)) {
        for (const r of st.replicas) {
          if (!r.endpoint || r.host !== host) continue;
          this.probes.get(r.instance)?.probe.markDead(`host ${host} is dead`);
          if (r.serving) changed = true;
          r.serving = false;
        }
      }
    }
    if (changed) void this.applyRules().catch((err: Error) => this.deps.log(`stacks: rules: ${err.message}`));
    this.tickAll();
  }

  private ensureProbe(rec: StackRecord, svc: StackServiceSpec, r: ReplicaRecord): void {
    if (!svc.health) return;
    const key = JSON.stringify([svc.health, svc.guestPort, svc.networks[0]]);
    const have = this.probes.get(r.instance);
    if (have?.key === key) return;
    have?.probe.stop();
    const stackName = rec.name;
    const probe = new ReplicaProbe(
      // The same endpoint the service rules use: a remote replica's forward, or its own address.
      () => r.endpoint ?? { ip: this.ipOf(r.instance, svc.networks[0]), port: svc.guestPort ?? 80 },
      svc.health,
      (healthy) => {
        const cur = this.records.get(stackName);
        if (!cur) return;
        if (healthy) r.everHealthy = true;
        r.serving = healthy && this.insts.get(r.instance)?.state === 'running';
        void this.applyRules().catch((err: Error) => this.deps.log(`stack ${stackName}: rules: ${err.message}`));
        void this.deps.store.put('stacks', cur.name, cur).catch(() => undefined);
        this.deps.events.lifecycle('stack-updated', stackName, { replica: r.instance, healthy });
        this.kick(stackName);
      },
      r.serving,
    );
    this.probes.set(r.instance, { probe, key });
    probe.start();
  }

  private dropProbe(instance: string): void {
    this.probes.get(instance)?.probe.stop();
    this.probes.delete(instance);
  }

  private ipOf(instance: string, network: string | undefined): string | undefined {
    return this.insts.get(instance)?.nics.find((n) => n.network === network)?.ipv4;
  }

  private isServing(r: ReplicaRecord): boolean {
    return r.serving && !this.draining.has(r.instance);
  }

  /**
   * The instances this pass works with. In a cluster: every host's (the cluster-wide listing)
   * and the hosts' states from etcd; an alive host that did not answer keeps its instances'
   * last view, and when etcd itself is out of reach only this host's are refreshed — a
   * moment of silence neither kills nor replaces anything.
   */
  private async refreshInstances(): Promise<void> {
    const self = this.deps.cluster?.self();
    if (!self || !this.deps.cluster) {
      this.insts = new Map((await this.deps.instances.list()).map((i) => [i.name, i]));
      this.clusterKnown = false;
      return;
    }
    try {
      const s = await this.deps.cluster.survey();
      const next = new Map<string, InstanceView>();
      for (const i of s.instances) {
        const prev = this.insts.get(i.name);
        next.set(i.name, i.host && s.silent.has(i.host) && prev?.host === i.host ? prev : i);
      }
      this.insts = next;
      this.hostState = s.hosts;
      this.silent = s.silent;
      this.clusterKnown = true;
    } catch {
      const next = new Map([...this.insts].filter(([, v]) => v.host !== undefined && v.host !== self));
      for (const i of await this.deps.instances.list()) next.set(i.name, { ...i, host: self });
      this.insts = next;
      this.clusterKnown = false;
    }
  }

  /** local: on this host; alive/dead: on another host whose lease is (not) alive; unknown: not known now. */
  private where(r: ReplicaRecord): Whereabouts {
    if (!r.endpoint) return 'local';
    if (!this.clusterKnown || !r.host) return 'unknown';
    const state = this.hostState.get(r.host);
    // A host whose record is gone ("cluster forget") is as dead as one whose lease expired.
    if (state !== 'alive') return 'dead';
    return this.silent.has(r.host) ? 'unknown' : 'alive';
  }

  // ---- the service address (nftables + the address on the bridge) ------------------------------

  /** Rewrites the services' table from the rows: healthy replicas only. Serialized. */
  applyRules(): Promise<void> {
    const next = this.rules.catch(() => undefined).then(() => this.writeRules());
    this.rules = next;
    return next;
  }

  private async writeRules(): Promise<void> {
    const services: RulesetService[] = [];
    const wantAddresses = new Map<string, string>();
    for (const rec of this.records.values()) {
      if (rec.deleting) continue;
      for (const svc of rec.spec.services) {
        if (svc.port === undefined && svc.address === undefined) continue;
        const st = rec.services[svc.name];
        const endpoints = (st?.replicas ?? [])
          .filter((r) => this.isServing(r))
          .sort((a, b) => a.index - b.index)
          .map((r) => (r.endpoint ? { ...r.endpoint, remote: true } : { ip: this.ipOf(r.instance, svc.networks[0]) ?? '', port: svc.guestPort ?? 80 }))
          .filter((e) => e.ip);
        const address = svc.address ? { ip: svc.address.split(':')[0]!, port: Number(svc.address.split(':')[1]) } : undefined;
        services.push({
          id: `${rec.name}/${svc.name}`,
          host: svc.port !== undefined ? { address: svc.hostAddress ?? '127.0.0.1', port: svc.port } : undefined,
          address,
          endpoints,
        });
        if (address) {
          const net = await this.deps.networks.load(svc.networks[0]!).catch(() => undefined);
          if (net) wantAddresses.set(address.ip, net.bridge);
        }
      }
    }
    for (const [ip, bridge] of wantAddresses) if (this.addresses.get(ip) !== bridge) await addHostAddress(bridge, ip);
    for (const [ip, bridge] of this.addresses) if (!wantAddresses.has(ip)) await deleteHostAddress(bridge, ip).catch(() => undefined);
    this.addresses = wantAddresses;
    await applyServices(services);
  }

  // ---- one pass over a stack -----------------------------------------------------------------

  private async tick(name: string): Promise<void> {
    const rec = this.records.get(name);
    if (!rec) return;
    await this.refreshInstances();
    if (rec.deleting) return this.finishDelete(rec);
    for (const [svcName, st] of Object.entries(rec.services)) {
      if (rec.spec.services.some((s) => s.name === svcName)) continue;
      for (const r of [...st.replicas]) await this.removeReplica(rec, st, r, 'its service left the stack', true);
      delete rec.services[svcName];
      await this.save(rec);
    }
    for (const svc of rec.spec.services) await this.reconcileService(rec, svc);
    for (const net of [...rec.ownedNetworks]) {
      if (rec.spec.networks.some((n) => n.name === net)) continue;
      if ([...this.insts.values()].some((i) => i.nics.some((n) => n.network === net))) continue;
      await this.deps.networks.delete(net).catch((err: Error) => this.deps.log(`stack ${rec.name}: network ${net}: ${err.message}`));
      rec.ownedNetworks = rec.ownedNetworks.filter((n) => n !== net);
      await this.save(rec);
    }
  }

  /** The instance is this stack's replica: its marker, and (in a cluster) no other home than this host. */
  private owned(inst: InstanceView, rec: StackRecord, svcName: string): boolean {
    const meta = inst.cloudInit?.meta;
    const home = meta?.[REPLICA_HOME_META_KEY];
    const self = this.deps.cluster?.self();
    return meta?.[REPLICA_META_KEY] === `${rec.name}/${svcName}` && (home === undefined || self === undefined || home === self);
  }

  /** In a cluster: other hosts whose replicas of a stack with this name run (it was applied there). */
  async otherHomes(stack: string): Promise<string[]> {
    const self = this.deps.cluster?.self();
    if (!self) return [];
    await this.refreshInstances();
    const homes = new Set<string>();
    for (const i of this.insts.values()) {
      const home = i.cloudInit?.meta?.[REPLICA_HOME_META_KEY];
      if (i.cloudInit?.meta?.[REPLICA_META_KEY]?.split('/')[0] === stack && home && home !== self) homes.add(home);
    }
    return [...homes].sort();
  }

  private async reconcileService(rec: StackRecord, svc: StackServiceSpec): Promise<void> {
    const st = (rec.services[svc.name] ??= { replicas: [], nextIndex: 1 });
    const wantKey = templateKey(svc);
    let changed = false;
    // 1. Replicas that are gone, dead, failing or never became healthy are removed.
    for (const r of [...st.replicas]) {
      const inst = this.insts.get(r.instance);
      const where = this.where(r);
      // On a host that is silent for now (or before the cluster is reached): left as it is.
      if (where === 'unknown') {
        this.ensureProbe(rec, svc, r);
        continue;
      }
      if (!r.created) {
        // A create the daemon did not see finish: the instance is ours only if it says so.
        if (inst && this.owned(inst, rec, svc.name)) r.created = true;
        else {
          st.replicas = st.replicas.filter((x) => x !== r);
          changed = true;
          continue;
        }
      }
      this.ensureProbe(rec, svc, r);
      if (!svc.health && inst) {
        const up = inst.state === 'running';
        if (up !== r.serving) {
          r.serving = up;
          if (up) r.everHealthy = true;
          changed = true;
          await this.applyRules();
        }
      }
      const dead = where === 'dead' || !inst || inst.state === 'error' || inst.state === 'stopped';
      const failing = svc.health !== undefined && r.everHealthy && this.probes.get(r.instance)?.probe.state.healthy === false;
      const neverReady = !r.everHealthy && Date.now() - Date.parse(r.createdAt) > svc.update.readyTimeoutMs;
      if (!dead && !failing && !neverReady) continue;
      if (neverReady && !dead && (!st.stable || templateKey(st.stable) !== r.template)) {
        st.failedTemplate = r.template;
        st.message = `${r.instance} (${r.image}) was not healthy within ${svc.update.readyTimeoutMs} ms: the roll stopped${st.stable ? `, the ${st.stable.image} replicas keep serving` : ''} ("vmkit stack rollback ${rec.name}" returns to the previous spec)`;
        this.deps.log(`stack ${rec.name}: ${st.message}`);
      }
      const why = dead
        ? where === 'dead'
          ? `its host ${r.host} is dead`
          : `its instance is ${inst ? inst.state : 'gone'}`
        : failing
          ? `its health check failed (${this.probes.get(r.instance)?.probe.state.lastError ?? ''})`
          : 'it never became healthy';
      this.deps.log(`stack ${rec.name}: replacing ${r.instance}: ${why}`);
      await this.removeReplica(rec, st, r, why, !dead);
      changed = true;
    }
    // 2. What to run: the spec, or — when a roll to it failed — the last good template.
    const target = st.failedTemplate === wantKey ? (st.stable && templateKey(st.stable) !== wantKey ? st.stable : undefined) : svc;
    if (target) {
      const tKey = templateKey(target);
      const cur = st.replicas.filter((r) => r.template === tKey);
      const old = st.replicas.filter((r) => r.template !== tKey);
      const want = svc.replicas;
      if (old.length === 0) {
        for (let n = cur.length; n < want; n++) {
          changed = true;
          if (!(await this.createReplica(rec, svc, target, st))) break;
        }
        if (cur.length > want) {
          const victims = [...cur].sort((a, b) => b.index - a.index).slice(0, cur.length - want);
          for (const v of victims) await this.removeReplica(rec, st, v, 'scaled down', true);
          changed = true;
        }
      } else {
        // A roll: surge new replicas (maxSurge over `want`), take an old one out only when the
        // replicas still serving stay at least want - maxUnavailable.
        const { maxSurge, maxUnavailable } = svc.update;
        let curCount = cur.length;
        while (curCount < want && st.replicas.length < want + maxSurge) {
          if (!(await this.createReplica(rec, svc, target, st))) break;
          curCount++;
          changed = true;
        }
        let serving = st.replicas.filter((r) => this.isServing(r)).length;
        const victims = [...old].sort((a, b) => Number(this.isServing(a)) - Number(this.isServing(b)) || a.index - b.index);
        for (const v of victims) {
          const after = serving - (this.isServing(v) ? 1 : 0);
          if (!(st.replicas.length > want || maxUnavailable > 0) || after < want - maxUnavailable) break;
          await this.removeReplica(rec, st, v, 'rolled to the new version', true);
          serving = after;
          changed = true;
        }
      }
      // Every replica of the target serves and no old one is left: the target is the good one.
      const now = st.replicas.filter((r) => r.template === tKey);
      if (now.length === want && now.length === st.replicas.length && now.every((r) => this.isServing(r))) {
        if (!st.stable || JSON.stringify(st.stable) !== JSON.stringify(target)) {
          st.stable = target;
          changed = true;
        }
        if (st.failedTemplate !== wantKey && st.message) {
          st.message = undefined;
          changed = true;
        }
      }
    }
    if (changed) await this.save(rec);
  }

  /**
   * Where a new replica goes. Alone (or when the service cannot be reached on another host:
   * its first network is not nat, or its port is on a loopback address): here. In a cluster: a live host with the image, room for
   * its memory and every one of its networks (same name, same mode), the one with the fewest
   * replicas of this service first, then the emptiest (the cluster's own placement order).
   */
  private async placeReplica(rec: StackRecord, svc: StackServiceSpec, target: StackServiceSpec, st: ServiceState): Promise<StackHost | undefined> {
    const self = this.deps.cluster?.self();
    if (!self || !this.deps.cluster) return undefined;
    // A port on a loopback address is reached from this host only, and its connections (source
    // 127.0.0.1) cannot be routed to another host: such a service keeps its replicas here.
    if (svc.port !== undefined && (svc.hostAddress ?? '127.0.0.1').startsWith('127.')) return undefined;
    const first = target.networks[0];
    const modeOf = async (net: string) => rec.spec.networks.find((n) => n.name === net)?.mode ?? (await this.deps.networks.load(net).catch(() => undefined))?.mode;
    if (!first || (await modeOf(first)) !== 'nat') return undefined;
    const image = (await this.deps.images.get(target.image).catch(() => undefined)) as { defaults?: { memoryMiB?: number } } | undefined;
    const memoryMiB = target.memoryMiB ?? (target.type ? findInstanceType(target.type).memoryMiB : undefined) ?? image?.defaults?.memoryMiB ?? 256;
    const wanted = await Promise.all(target.networks.filter((n) => n !== 'user').map(async (n) => ({ name: n, mode: await modeOf(n) })));
    const fits = (await this.deps.cluster.candidates(target.image, memoryMiB)).filter(
      (h) => h.self || wanted.every((w) => h.networks.some((n) => n.name === w.name && n.mode === w.mode)),
    );
    if (fits.length === 0) {
      throw vmkitError(
        'VMKIT_RESOURCES_EXCEEDED',
        `No live cluster host can take a replica of ${rec.name}/${svc.name}: none has image "${target.image}", ${memoryMiB} MiB free and the network(s) ${wanted.map((w) => `${w.name} (${w.mode})`).join(', ')}.`,
        { hint: '"vmkit cluster list" shows the hosts; create the network on another host or free memory. The controller retries on every pass.' },
      );
    }
    const count = (h: string) => st.replicas.filter((r) => (r.host ?? self) === h).length;
    // A stable sort: among hosts with as many replicas, the cluster's order (most room first) stays.
    return [...fits].sort((a, b) => count(a.name) - count(b.name))[0];
  }

  /** A new replica: row first (not yet `created`), then the instance, then `created`. */
  private async createReplica(rec: StackRecord, svc: StackServiceSpec, target: StackServiceSpec, st: ServiceState): Promise<boolean> {
    let host: StackHost | undefined;
    try {
      host = await this.placeReplica(rec, svc, target, st);
    } catch (err) {
      // Nothing is made: the reason is the service's message until a pass finds a host.
      st.message = (err as Error).message;
      this.deps.log(`stack ${rec.name}: ${st.message}`);
      await this.save(rec);
      return false;
    }
    let index = st.nextIndex;
    while (this.insts.has(`${rec.name}-${svc.name}-${index}`)) index++;
    st.nextIndex = index + 1;
    const r: ReplicaRecord = {
      instance: `${rec.name}-${svc.name}-${index}`,
      index,
      template: templateKey(target),
      image: target.image,
      createdAt: new Date().toISOString(),
      created: false,
      everHealthy: false,
      serving: false,
    };
    const self = this.deps.cluster?.self();
    if (host ?? self) r.host = host?.name ?? self;
    if (host && !host.self) r.endpoint = { ip: host.ip, port: forwardPort() };
    st.replicas.push(r);
    await this.save(rec);
    const req = {
      name: r.instance,
      image: target.image,
      type: target.type,
      cpus: target.cpus,
      memoryMiB: target.memoryMiB,
      nics: target.networks.map((network) => ({ network })),
      userData: target.userData,
      meta: { [REPLICA_META_KEY]: `${rec.name}/${svc.name}`, ...(self ? { [REPLICA_HOME_META_KEY]: self } : {}) },
    };
    try {
      if (host && r.endpoint) {
        // On another host: created and started there (undone there when it fails), with a
        // forward on its cluster address that the service rules and the health check use.
        for (let attempt = 1; ; attempt++) {
          try {
            const view = await this.deps.cluster!.launch(host.name, {
              ...req,
              forwards: [{ hostPort: r.endpoint.port, guestPort: target.guestPort ?? 80, hostAddress: r.endpoint.ip }],
            });
            this.insts.set(r.instance, { ...view, host: host.name });
            break;
          } catch (err) {
            if (asVmkitError(err).code !== 'VMKIT_PORT_IN_USE' || attempt >= FORWARD_TRIES) throw err;
            r.endpoint = { ip: host.ip, port: forwardPort() };
            await this.save(rec);
          }
        }
        r.created = true;
        await this.save(rec);
      } else {
        const view = await this.deps.instances.create(req);
        this.insts.set(r.instance, self ? { ...view, host: self } : view);
        r.created = true;
        await this.save(rec);
        const started = await this.deps.instances.start(r.instance);
        this.insts.set(r.instance, self ? { ...started, host: self } : started);
      }
      this.ensureProbe(rec, svc, r);
      this.deps.log(
        `stack ${rec.name}: started replica ${r.instance} (${target.image})${host ? ` on ${host.name}${r.endpoint ? ` (reached at ${r.endpoint.ip}:${r.endpoint.port})` : ''}` : ''}`,
      );
      return true;
    } catch (err) {
      // Left in the row: the next pass finds it stopped (or missing) and removes it.
      st.message = `replica ${r.instance}: ${(err as Error).message}`;
      this.deps.log(`stack ${rec.name}: ${st.message}`);
      await this.save(rec);
      return false;
    }
  }

  /**
   * Takes a replica away: out of the service address first (and, when `drain`, a moment for
   * requests in flight), then its instance, then its row entry.
   */
  private async removeReplica(rec: StackRecord, st: ServiceState, r: ReplicaRecord, why: string, drain: boolean): Promise<void> {
    if (this.isServing(r)) {
      this.draining.add(r.instance);
      await this.applyRules();
      if (drain) await sleep(DRAIN_MS);
    }
    r.serving = false;
    const inst = this.insts.get(r.instance);
    const where = this.where(r);
    this.dropProbe(r.instance);
    if (r.created && inst && this.owned(inst, rec, Object.keys(rec.services).find((k) => rec.services[k] === st) ?? '')) {
      const gone = (err: Error) => {
        if (!/not found|no instance/i.test(err.message)) throw err;
      };
      // A replica on a dead host, or one that does not answer now, stays there until its host
      // is back: sweep() deletes it then (it carries this stack's marker and home).
      if (where === 'local') await this.deps.instances.delete(r.instance, { force: true }).catch(gone);
      else if (where === 'alive') await this.deps.cluster!.delete(inst.host ?? r.host!, r.instance).catch(gone);
    }
    st.replicas = st.replicas.filter((x) => x !== r);
    this.draining.delete(r.instance);
    this.insts.delete(r.instance);
    await this.save(rec);
    await this.applyRules();
    this.deps.events.lifecycle('stack-replica-removed', rec.name, { replica: r.instance, reason: why });
  }

  /** `stack delete`, also after a restart: rules, replicas, owned networks, then the row. */
  private async finishDelete(rec: StackRecord): Promise<void> {
    await this.applyRules();
    for (const [, st] of Object.entries(rec.services)) for (const r of [...st.replicas]) await this.removeReplica(rec, st, r, 'the stack is deleted', false);
    for (const net of [...rec.ownedNetworks]) {
      await this.deps.networks.delete(net).catch((err: Error) => {
        if (!/no network/i.test(err.message)) throw err;
      });
      rec.ownedNetworks = rec.ownedNetworks.filter((n) => n !== net);
      await this.save(rec);
    }
    await this.forget(rec.name);
    await this.applyRules();
  }

  /** Runs a delete now (the caller holds the lock). */
  deleteNow(rec: StackRecord): Promise<void> {
    return this.finishDelete(rec);
  }

  // ---- views ----------------------------------------------------------------------------------

  view(rec: StackRecord): StackView {
    return stackView(rec, {
      instance: (name) => this.insts.get(name),
      health: (name) => this.probes.get(name)?.probe.state,
      serving: (r) => this.isServing(r),
      ipOf: (name, network) => this.ipOf(name, network),
    });
  }

  async refreshedView(rec: StackRecord): Promise<StackView> {
    await this.refreshInstances();
    return this.view(rec);
  }
}
