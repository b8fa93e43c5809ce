import { AddressClaims } from './address-claims.js';
import { createHash } from 'node:crypto';
import { claimAddress, forgetConnections, releaseAddress } from './floating.js';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { vmkitError } from '../errors.js';
import { isActive } from '../domain/state.js';
import type { Instance, Nic } from '../domain/types.js';
import type { Store } from '../store/store.js';
import type { EventBus } from '../operations/events.js';
import * as bridge from './bridge.js';
import * as nft from './nftables.js';
import * as dns from './dnsmasq.js';
import { Revert } from '../util/revert.js';
import { confineGuests, guestUidRange } from '../host/guest-uids.js';
import {
  allocateAddress,
  bridgeName,
  cidrsOverlap,
  editHostRules,
  ipToInt,
  parseCidr,
  tapName,
  validateNetworkRequest,
  type CreateNetworkRequest,
  type Network,
} from './network.js';
import type { HostAccess } from '../wire/types.js';
import type { NetworkNicView, NetworkView } from './types.js';

export type { NetworkNicView, NetworkView } from './types.js';

/** Per-NIC static settings the config drive needs (prefix, gateway, DNS). */
export interface NicAddressing {
  prefix: number;
  gateway?: string;
  dns?: string[];
}

/**
 * Networks: create/list/info/delete, and everything the instance manager needs from them
 * (addresses for new NICs, taps around a QEMU's life, rules for forwards). The wanted state
 * is the store (networks + instances); bridges, taps, dnsmasq and nftables are made to
 * match it, at every change and at start-up.
 */
/**
 * The bridge's MAC comes from the network's name and subnet, so the same network on every
 * cluster host has the same gateway MAC: a guest that migrates keeps reaching its router
 * without waiting for its ARP cache to expire.
 */
export function bridgeMac(n: Pick<Network, 'name' | 'subnet'>): string {
  const h = createHash('sha256')
    .update(`${n.name}/${n.subnet ?? ''}`)
    .digest();
  return ['02', ...[...h.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

export class NetworkManager {
  private chain: Promise<unknown> = Promise.resolve();
  /**
   * Instances (by id) whose floating forwards this host gave up mid-migration: their DNAT
   * rules stay out of the ruleset until the guest runs here again (rollback) or leaves.
   */
  private readonly withdrawn = new Set<string>();

  constructor(
    private readonly store: Store,
    private readonly root: string,
    private readonly events: EventBus,
  ) {}

  /** One change at a time: the host's network state is shared by all networks. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    // An earlier change that failed was reported to its own caller; this one runs regardless.
    const next = this.chain.catch(() => undefined).then(fn);
    this.chain = next;
    return next;
  }

  private dir(name: string): string {
    return join(this.root, 'networks', name);
  }

  private files(name: string): dns.DnsmasqFiles {
    return dns.dnsmasqFiles(this.dir(name));
  }

  private async networks(): Promise<Network[]> {
    return (await this.store.list<Network>('networks')).map((v) => v.value);
  }

  private async instances(): Promise<Instance[]> {
    return (await this.store.list<Instance>('instances')).map((v) => v.value).filter((i) => i.state !== 'deleting');
  }

  async exists(name: string): Promise<boolean> {
    return (await this.store.get('networks', name)) !== undefined;
  }

  async load(name: string): Promise<Network> {
    const found = await this.store.get<Network>('networks', name);
    if (!found) {
      throw vmkitError('VMKIT_NETWORK_NOT_FOUND', `There is no network "${name}".`, { hint: '"vmkit network list" shows the networks ("user" is QEMU user-mode NAT).' });
    }
    return found.value;
  }

  async list(): Promise<NetworkView[]> {
    const insts = await this.instances();
    return Promise.all((await this.networks()).map((n) => this.view(n, insts)));
  }

  async get(name: string): Promise<NetworkView> {
    return this.view(await this.load(name), await this.instances());
  }

  private async view(n: Network, insts: Instance[]): Promise<NetworkView> {
    const nics: NetworkNicView[] = [];
    const forwards: NetworkView['forwards'] = [];
    for (const inst of insts) {
      for (const nic of inst.nics.filter((x) => x.network === n.name)) {
        nics.push({ instance: inst.name, nic: nic.id, mac: nic.mac, model: nic.model, ipv4: nic.ipv4, tap: tapName(inst.id, nic.id), state: inst.state });
        for (const f of inst.forwards.filter((x) => x.nic === nic.id)) forwards.push({ ...f, instance: inst.name, guestIp: nic.ipv4 });
      }
    }
    return { ...n, nics, leases: dns.needsDnsmasq(n) ? await dns.readLeases(this.files(n.name)) : [], forwards };
  }

  // ---- create / delete ------------------------------------------------------------------

  create(req: CreateNetworkRequest): Promise<Network> {
    const valid = validateNetworkRequest(req);
    return this.serial(async () => {
      if (await this.exists(valid.name)) {
        throw vmkitError('VMKIT_ALREADY_EXISTS', `A network named "${valid.name}" already exists.`, { hint: 'Choose another name, or delete it first.' });
      }
      const all = await this.networks();
      if (valid.subnet) await this.assertNoOverlap(valid.subnet, all);
      if (valid.uplink) await this.assertUplinkUsable(valid.uplink, all);
      const n: Network = { ...valid, bridge: bridgeName(valid.name, new Set(all.map((x) => x.bridge))), createdAt: new Date().toISOString() };
      // Host objects first, row last: a failure undoes them; a crash leaves objects no row
      // owns, which reconcile() removes.
      try {
        await this.realize(n, []);
        await this.store.put('networks', n.name, n, { expectRevision: 0 });
        await this.applyRules([...all, n], await this.instances());
      } catch (err) {
        // The create's own error is what the caller sees; an undo step that fails is logged.
        // Revert runs newest first: rules, then host objects, then the row.
        const undo = new Revert((msg) => console.error(`vmkitd: network ${n.name}: ${msg}`));
        undo.add('the row', () => this.store.delete('networks', n.name));
        undo.add('the host objects (bridge, dnsmasq)', () => this.teardown(n));
        undo.add('the firewall rules', async () => this.applyRules(all, await this.instances()));
        await undo.fail();
        throw err;
      }
      this.events.lifecycle('network-created', n.name, { mode: n.mode });
      return n;
    });
  }

  delete(name: string): Promise<void> {
    return this.serial(async () => {
      const n = await this.load(name);
      const users = (await this.instances()).filter((i) => i.nics.some((x) => x.network === name));
      if (users.length > 0) {
        throw vmkitError('VMKIT_NETWORK_IN_USE', `Network "${name}" is used by ${users.length} instance(s): ${users.map((u) => u.name).join(', ')}.`, {
          hint: 'Remove their NICs from it ("vmkit nic remove") or delete those instances first.',
        });
      }
      await this.teardown(n);
      await this.store.delete('networks', name);
      await this.applyRules(await this.networks(), await this.instances());
      this.events.lifecycle('network-deleted', name);
    });
  }

  private async assertNoOverlap(subnet: string, all: Network[]): Promise<void> {
    const c = parseCidr(subnet);
    for (const other of all) {
      if (other.subnet && cidrsOverlap(c, parseCidr(other.subnet))) {
        throw vmkitError('VMKIT_SUBNET_OVERLAP', `The subnet ${subnet} overlaps network "${other.name}" (${other.subnet}).`, {
          hint: 'Choose a subnet no other network uses ("vmkit network list").',
        });
      }
    }
    for (const link of await bridge.listLinks()) {
      if (link.ifname.startsWith('vmkbr-')) continue;
      for (const a of link.addresses.filter((x) => x.family === 'inet')) {
        const size = 2 ** (32 - a.prefixlen);
        const net = Math.floor(ipToInt(a.local) / size) * size;
        const theirs = { network: net, prefix: a.prefixlen, size, first: net + 1, last: net + size - 2, broadcast: net + size - 1 };
        if (a.local.startsWith('127.')) continue;
        if (cidrsOverlap(c, theirs)) {
          throw vmkitError('VMKIT_SUBNET_OVERLAP', `The subnet ${subnet} overlaps the host's address ${a.local}/${a.prefixlen} on ${link.ifname}.`, {
            hint: 'Choose a subnet the host does not already use ("ip -4 addr").',
          });
        }
      }
    }
  }

  private async assertUplinkUsable(uplink: string, all: Network[]): Promise<void> {
    const link = (await bridge.listLinks()).find((l) => l.ifname === uplink);
    if (!link) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `The uplink interface "${uplink}" does not exist.`, { hint: '"ip link" lists the host\'s interfaces.' });
    }
    const user = all.find((n) => n.uplink === uplink);
    if (user || link.master) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `The uplink "${uplink}" is already in a bridge (${user ? `network "${user.name}"` : link.master}).`, {
        hint: 'Use an interface no bridge holds.',
      });
    }
    if (link.linkKind === 'bridge' || link.ifname === 'lo') {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${uplink}" cannot be an uplink (it is ${link.ifname === 'lo' ? 'the loopback' : 'a bridge'}).`, {
        hint: 'Use an Ethernet interface (or a veth) without an address.',
      });
    }
    const addrs = link.addresses.filter((a) => a.family === 'inet' || (a.family === 'inet6' && !a.local.startsWith('fe80')));
    if (addrs.length > 0) {
      throw vmkitError(
        'VMKIT_UPLINK_HAS_ADDRESS',
        `The uplink "${uplink}" carries the address ${addrs.map((a) => `${a.local}/${a.prefixlen}`).join(', ')}; putting it in a bridge would cut the host off.`,
        {
          hint: 'Use an interface without an address, or move its address to another interface first.',
        },
      );
    }
  }

  /** Bridge (+ address, uplink) and dnsmasq for one network; idempotent. */
  private async realize(n: Network, insts: Instance[]): Promise<void> {
    const prefix = n.subnet ? parseCidr(n.subnet).prefix : 0;
    await bridge.ensureBridge(n.bridge, n.hostAddress ? { ip: n.hostAddress, prefix } : undefined, bridgeMac(n));
    if (n.uplink) await bridge.enslave(n.uplink, n.bridge);
    if (n.mode === 'nat') await bridge.enableForwarding();
    if (dns.needsDnsmasq(n)) await dns.ensureDnsmasq(n, this.files(n.name), this.reservations(n, insts));
  }

  private async teardown(n: Network): Promise<void> {
    await dns.stopDnsmasq(this.files(n.name));
    if (n.uplink) await bridge.release(n.uplink);
    await bridge.deleteLink(n.bridge);
    await rm(this.dir(n.name), { recursive: true, force: true });
  }

  private reservations(n: Network, insts: Instance[]): dns.Reservation[] {
    return insts.flatMap((i) => i.nics.filter((x) => x.network === n.name && x.ipv4).map((x) => ({ mac: x.mac, ipv4: x.ipv4!, name: i.name })));
  }

  private async applyRules(nets: Network[], insts: Instance[]): Promise<void> {
    const byName = new Map(nets.map((n) => [n.name, n]));
    const nics: nft.RulesetNic[] = [];
    const forwards: nft.RulesetForward[] = [];
    for (const inst of insts.filter((i) => isActive(i.state) || i.state === 'starting')) {
      for (const nic of inst.nics) {
        const n = byName.get(nic.network);
        if (!n) continue;
        nics.push({ tap: tapName(inst.id, nic.id), mac: nic.mac, ipv4: nic.ipv4 ?? '', bridge: n.bridge });
        if (n.mode !== 'nat' || !nic.ipv4) continue;
        for (const f of inst.forwards.filter((x) => x.nic === nic.id)) {
          if (f.floating && this.withdrawn.has(inst.id)) continue;
          forwards.push({ proto: f.proto, hostAddress: f.hostAddress, hostPort: f.hostPort, guestIp: nic.ipv4, guestPort: f.guestPort, bridge: n.bridge, floating: f.floating });
        }
      }
    }
    if (nets.length === 0 && nics.length === 0) {
      await nft.removeRuleset();
      return;
    }
    await nft.applyRuleset({ networks: nets, nics, forwards });
  }

  /** Re-applies reservations and rules after instances changed (created, deleted, forwards). */
  sync(): Promise<void> {
    return this.serial(async () => {
      const nets = await this.networks();
      const insts = await this.instances();
      for (const n of nets) if (dns.needsDnsmasq(n)) await dns.ensureDnsmasq(n, this.files(n.name), this.reservations(n, insts));
      await this.applyRules(nets, insts);
    });
  }

  // ---- host services guests may reach ----------------------------------------------------

  /** The pseudo-network "user" (QEMU user-mode NICs) keeps its allow-list here. */
  private static readonly USER_ACCESS_KEY = 'network-user-host-access';

  private async userAllowHost(): Promise<string[]> {
    return (await this.store.get<{ allowHost: string[] }>('meta', NetworkManager.USER_ACCESS_KEY))?.value.allowHost ?? [];
  }

  /** The host services guests on `name` (or "user") may reach besides DHCP/DNS. */
  async hostAccess(name: string): Promise<HostAccess> {
    if (name === 'user') return { network: 'user', allowHost: await this.userAllowHost() };
    return { network: name, allowHost: (await this.load(name)).allowHost ?? [] };
  }

  /**
   * `vmkit network set NAME --allow-host tcp/PORT --deny-host tcp/PORT`: adds and removes
   * entries of the network's allow-list and applies the rules at once (for "user", the guard
   * table on guest QEMU sockets).
   */
  setHostAccess(name: string, allow: readonly string[] = [], deny: readonly string[] = []): Promise<HostAccess> {
    return this.serial(async () => {
      if (name === 'user') {
        const before = await this.userAllowHost();
        const allowHost = editHostRules(before, allow, deny);
        // Rules first: a store failure puts the old ones back, so both always agree.
        await nft.applyGuard(guestUidRange(), allowHost);
        try {
          await this.store.put('meta', NetworkManager.USER_ACCESS_KEY, { allowHost });
        } catch (err) {
          await nft.applyGuard(guestUidRange(), before).catch(() => undefined);
          throw err;
        }
        this.events.lifecycle('network-updated', 'user', { allowHost });
        return { network: 'user', allowHost };
      }
      const found = await this.store.get<Network>('networks', name);
      if (!found) await this.load(name);
      const n = found!.value;
      const allowHost = editHostRules(n.allowHost ?? [], allow, deny);
      const next: Network = { ...n, allowHost };
      if (allowHost.length === 0) delete next.allowHost;
      // The rules are made from the stored rows: row first, and back to the old row when the
      // rules cannot be applied.
      const revision = await this.store.put('networks', name, next, { expectRevision: found!.revision });
      try {
        await this.applyRules(await this.networks(), await this.instances());
      } catch (err) {
        await this.store.put('networks', name, n, { expectRevision: revision }).catch(() => undefined);
        throw err;
      }
      this.events.lifecycle('network-updated', name, { allowHost });
      return { network: name, allowHost };
    });
  }

  /**
   * The guard on guest QEMU processes' sockets (user-mode NICs cannot reach the host): applied
   * at every start, whether or not networks exist, and left in place when the daemon stops
   * (guests it left running stay guarded).
   */
  applyGuard(): Promise<void> {
    return this.serial(async () => nft.applyGuard(guestUidRange(), await this.userAllowHost()));
  }

  // ---- what the instance manager asks -----------------------------------------------------

  /** Picks a NIC's address (static, checked, or from the pool); `pending` = NICs of the same request. */
  async allocate(network: string, requestedIp: string | undefined, pending: readonly Nic[], owner?: string): Promise<{ ipv4?: string; dhcp?: boolean }> {
    const n = await this.load(network);
    const taken = new Set<string>();
    for (const inst of await this.instances()) for (const x of inst.nics) if (x.network === network && x.ipv4) taken.add(x.ipv4);
    this.claims.heldFor(network, owner, taken);
    for (const x of pending) if (x.network === network && x.ipv4) taken.add(x.ipv4);
    const reserved = this.reservedAddresses(network); // nothing awaits from the claims read to the claim (AddressClaims)
    let picked: { ipv4?: string; dhcp?: boolean } = {};
    if (requestedIp !== undefined) picked = { ipv4: allocateAddress(n, taken, requestedIp, reserved) };
    else if (n.dhcp && n.subnet) picked = { ipv4: allocateAddress(n, taken, undefined, reserved), dhcp: true };
    if (picked.ipv4 && owner !== undefined) this.claims.claim(network, picked.ipv4, owner);
    return picked;
  }

  /** The instance's row holds its addresses now, or its create failed: its claims end. */
  settle(owner: string): void {
    this.claims.settle(owner);
  }

  /** Addresses no NIC may get (the stacks' service addresses → holder), asked at every allocation. */
  setAddressReservations(fn: (network: string) => ReadonlyMap<string, string>): void {
    this.reservedAddresses = fn;
  }

  private readonly claims = new AddressClaims();
  private reservedAddresses: (network: string) => ReadonlyMap<string, string> = () => new Map();

  async assertForwardable(network: string): Promise<void> {
    const n = await this.load(network);
    if (n.mode !== 'nat') {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `Port forwards go to NICs on nat networks; "${network}" is ${n.mode}.`, {
        hint: n.mode === 'host-only' ? 'The host reaches host-only guests directly at their address.' : 'Put a NIC on a nat network (or "user") and forward to it (--nic).',
      });
    }
  }

  /** Static settings for the config drive of a NIC with a static address. */
  async addressing(network: string): Promise<NicAddressing | undefined> {
    // A network that cannot be loaded has no static settings to give: the NIC goes without them.
    const n = await this.load(network).catch(() => undefined);
    if (!n?.subnet) return undefined;
    return {
      prefix: parseCidr(n.subnet).prefix,
      gateway: n.mode === 'nat' ? n.hostAddress : undefined,
      dns: n.dns && n.hostAddress ? [n.hostAddress] : undefined,
    };
  }

  /** The tap names of an instance's NICs on vmkit networks (nic id → ifname). */
  taps(inst: Instance): Record<string, string> {
    const out: Record<string, string> = {};
    for (const nic of inst.nics) if (nic.network !== 'user') out[nic.id] = tapName(inst.id, nic.id);
    return out;
  }

  /** Before QEMU starts: taps on their bridges, reservations, rules (anti-spoofing, forwards). */
  plug(inst: Instance): Promise<void> {
    return this.serial(async () => {
      const nets = await this.networks();
      for (const nic of inst.nics.filter((x) => x.network !== 'user')) {
        const n = nets.find((x) => x.name === nic.network);
        if (!n)
          throw vmkitError('VMKIT_NETWORK_NOT_FOUND', `NIC ${nic.id} of "${inst.name}" is on network "${nic.network}", which does not exist.`, {
            hint: 'Create the network again or remove the NIC.',
          });
        await bridge.ensureTap(tapName(inst.id, nic.id), n.bridge, confineGuests() ? inst.uid : undefined);
      }
      const insts = await this.instances();
      for (const n of nets) if (dns.needsDnsmasq(n)) await dns.ensureDnsmasq(n, this.files(n.name), this.reservations(n, insts));
      await this.applyRules(nets, insts);
    });
  }

  /**
   * The guest runs on this host: its floating forward addresses come here (the DNAT rules of
   * a withdrawn instance come back first, so the address never answers without them).
   */
  announce(inst: Instance, log: (msg: string) => void = defaultLog): Promise<void> {
    return this.serial(async () => {
      const floating = inst.forwards.filter((f) => f.floating);
      if (this.withdrawn.delete(inst.id) && floating.length > 0) await this.applyRules(await this.networks(), await this.instances());
      for (const f of floating) await claimAddress(f.hostAddress, log);
    });
  }

  /**
   * A migration's switch-over: the guest stopped here for good (its last state is on the
   * target), so its floating addresses leave this host before the target claims them — the
   * address, its DNAT rules and the tracked connections that lead to the local copy.
   */
  withdraw(inst: Instance, log: (msg: string) => void = defaultLog): Promise<void> {
    return this.serial(async () => {
      const floating = inst.forwards.filter((f) => f.floating);
      if (floating.length === 0) return;
      this.withdrawn.add(inst.id);
      for (const f of floating) await releaseAddress(f.hostAddress, log);
      await this.applyRules(await this.networks(), await this.instances());
      for (const f of floating) await forgetConnections(f.hostAddress, log);
    });
  }

  /** After QEMU ended: its taps go, and with them its rules (and its floating addresses). */
  unplug(inst: Instance): Promise<void> {
    return this.serial(async () => {
      this.withdrawn.delete(inst.id);
      for (const f of inst.forwards) {
        if (!f.floating) continue;
        await releaseAddress(f.hostAddress).catch((err: Error) => console.error(`vmkitd: floating ${f.hostAddress} of ${inst.name}: ${err.message}`));
      }
      for (const nic of inst.nics.filter((x) => x.network !== 'user')) await bridge.deleteLink(tapName(inst.id, nic.id));
      await this.applyRules(await this.networks(), await this.instances());
    });
  }

  // ---- start-up -------------------------------------------------------------------------------

  /**
   * Makes the host match the store after a daemon (re)start: every network's bridge, address
   * and dnsmasq; taps of running instances kept, others removed; bridges, dnsmasq processes
   * and folders no network owns removed; the rules re-applied as a whole.
   */
  reconcile(): Promise<void> {
    return this.serial(async () => {
      const nets = await this.networks();
      const insts = await this.instances();
      const names = new Set(nets.map((n) => n.name));
      await mkdir(join(this.root, 'networks'), { recursive: true });
      for (const entry of await readdir(join(this.root, 'networks'))) {
        if (names.has(entry)) continue;
        await dns.stopDnsmasq(this.files(entry));
        await rm(this.dir(entry), { recursive: true, force: true });
      }
      for (const n of nets) await this.realize(n, insts);
      const wantedBridges = new Set(nets.map((n) => n.bridge));
      const wantedTaps = new Set(insts.filter((i) => isActive(i.state)).flatMap((i) => i.nics.filter((x) => x.network !== 'user').map((x) => tapName(i.id, x.id))));
      const have = await bridge.listVmkitLinks();
      for (const t of have.taps) if (!wantedTaps.has(t)) await bridge.deleteLink(t);
      for (const b of have.bridges) if (!wantedBridges.has(b)) await bridge.deleteLink(b);
      await this.applyRules(nets, insts);
    });
  }
}

function defaultLog(msg: string): void {
  console.error(`vmkitd: ${new Date().toISOString()} ${msg}`);
}
