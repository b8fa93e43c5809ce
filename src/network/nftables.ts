import { vmkitError } from '../errors.js';
import { run } from '../util/exec.js';
import { TAP_PREFIX, type Network } from './network.js';

/**
 * The ONE module that runs `nft`. vmkit's rules live in tables of its own, `inet vmkit`
 * (masquerade, isolation, what guests may reach on the host, port forwards), `bridge vmkit`
 * (anti-spoofing and IPv6 blocking on the taps) and `inet vmkit-guard` (guest QEMU sockets,
 * see renderGuard()), so they can be listed (`nft list table inet vmkit`) and removed as a
 * whole.
 * The whole ruleset is generated from the wanted state and replaced atomically in one
 * `nft -f` transaction: applying it twice gives the same rules.
 */
export const TABLE = 'vmkit';
/** The guard on guest QEMU processes' own sockets (user-mode NICs): see renderGuard(). */
export const GUARD_TABLE = 'vmkit-guard';
/**
 * The packet mark bits set on every frame that enters the host from a vmkit tap (bridge
 * prerouting), so the inet input chain can tell a guest from the LAN on a bridged network.
 */
export const GUEST_MARK = '0x766d0000';

export interface RulesetNic {
  tap: string;
  mac: string;
  /** Empty when not known (bridged networks, internal without DHCP). */
  ipv4: string;
  bridge: string;
}

export interface RulesetForward {
  proto: 'tcp' | 'udp';
  hostAddress: string;
  hostPort: number;
  guestIp: string;
  guestPort: number;
  bridge: string;
  /** A floating address (cluster): see the source NAT below. */
  floating?: boolean;
}

export interface RulesetInput {
  networks: readonly Network[];
  nics: readonly RulesetNic[];
  forwards: readonly RulesetForward[];
}

const q = (s: string) => `"${s}"`;

/** `tcp/8080` → `tcp dport 8080`; `udp/5000-5010` → `udp dport 5000-5010` (rules already validated). */
export function hostRuleMatch(rule: string): string {
  const [proto, ports] = rule.split('/');
  if ((proto !== 'tcp' && proto !== 'udp') || !/^\d{1,5}(-\d{1,5})?$/.test(ports ?? '')) throw new Error(`bad host rule ${rule}`);
  return `${proto} dport ${ports}`;
}

/** A MAC as the 48-bit number nft compares raw payload with. */
function macHex(mac: string): string {
  return `0x${mac.toLowerCase().replace(/:/g, '')}`;
}

/** The `nft -f` script: (re)creates both tables with exactly the wanted rules. */
export function renderRuleset(input: RulesetInput): string {
  const nets = [...input.networks].sort((a, b) => a.name.localeCompare(b.name));
  const routed = nets.filter((n) => n.mode !== 'bridged');
  const inputRules: string[] = [];
  const forwardRules: string[] = [];
  const postRules: string[] = [];
  const dnatRules: string[] = [];
  const outDnatRules: string[] = [];

  for (const f of input.forwards) {
    // A guest that just migrated here may speak first on a connection it had on the old host
    // (retransmitting its answer). Its packets must leave with the floating address and port
    // the client knows, not be masqueraded: then the client's connection carries on.
    if (f.floating) postRules.push(`ip saddr ${f.guestIp} ${f.proto} sport ${f.guestPort} oifname != ${q(f.bridge)} snat ip to ${f.hostAddress}:${f.hostPort}`);
    const match = f.hostAddress === '0.0.0.0' ? 'fib daddr type local' : `ip daddr ${f.hostAddress}`;
    const rule = `${match} ${f.proto} dport ${f.hostPort} dnat ip to ${f.guestIp}:${f.guestPort}`;
    // From outside the host (and from guests: hairpin) …
    if (f.hostAddress === '0.0.0.0' || !f.hostAddress.startsWith('127.')) dnatRules.push(rule);
    // … and from the host itself, loopback included.
    outDnatRules.push(rule);
  }

  for (const n of routed) {
    const br = q(n.bridge);
    // Guest to guest on one network is plain bridging; with br_netfilter loaded it still
    // passes this hook, and must not be taken for routing between networks.
    forwardRules.push(`iifname ${br} oifname ${br} accept`);
    if (n.mode === 'nat' && n.subnet) {
      // Guests reach the world; the world reaches guests only through forwards (DNAT).
      // (Replies of forwarded connections carry the host's address once de-NATed.)
      forwardRules.push(`iifname ${br} ct state established,related accept`);
      forwardRules.push(`oifname ${br} ct state established,related accept`);
      forwardRules.push(`iifname ${br} ip saddr ${n.subnet} oifname != "vmkbr-*" accept`);
      forwardRules.push(`oifname ${br} ct status dnat accept`);
      postRules.push(`ip saddr ${n.subnet} ip daddr != ${n.subnet} oifname != ${br} masquerade`);
      // Hairpin: a guest using the host's forward to reach a guest on its own bridge.
      postRules.push(`oifname ${br} ip saddr ${n.subnet} ct status dnat masquerade`);
      // Forwards from the host's loopback: the guest answers the bridge address.
      postRules.push(`oifname ${br} ip saddr 127.0.0.0/8 masquerade`);
    }
    // Everything else routed into or out of a vmkit network is dropped: networks are isolated
    // from each other, host-only and internal networks from the world.
    forwardRules.push(`iifname ${br} drop`, `oifname ${br} drop`);

    // What guests may ask of the host itself: DHCP, DNS when the network serves it, and the
    // services the operator allowed (`network set --allow-host`), on the host's address on
    // this network only. Everything else — the gateway's other ports, the host's other
    // addresses, 127.0.0.1 (route_localnet is on for forwards) — is dropped.
    // Replies to the host's own connections (and to forwards from its loopback, whose
    // replies are addressed to 127.0.0.1 once de-NATed); internal guests get none.
    if (n.mode !== 'internal') inputRules.push(`iifname ${br} ct state established,related accept`);
    inputRules.push(`iifname ${br} udp dport 67 accept`);
    if (n.hostAddress) {
      if (n.dns) inputRules.push(`iifname ${br} ip daddr ${n.hostAddress} udp dport 53 accept`, `iifname ${br} ip daddr ${n.hostAddress} tcp dport 53 accept`);
      for (const r of n.allowHost ?? []) inputRules.push(`iifname ${br} ip daddr ${n.hostAddress} ${hostRuleMatch(r)} accept`);
    }
    inputRules.push(`iifname ${br} drop`);
  }

  // Bridged networks: the bridge also carries the host's LAN, so guests are told apart by the
  // mark their frames got on entering from a tap. They are LAN machines to the world, but
  // open no connection to the host (any of its addresses) beyond the allowed services, and
  // the host does not route for them.
  for (const n of nets.filter((x) => x.mode === 'bridged')) {
    const br = q(n.bridge);
    const guest = `iifname ${br} meta mark & ${GUEST_MARK} == ${GUEST_MARK}`;
    inputRules.push(`${guest} ct state established,related accept`);
    for (const r of n.allowHost ?? []) inputRules.push(`${guest} ${hostRuleMatch(r)} accept`);
    inputRules.push(`${guest} drop`);
    forwardRules.push(`${guest} oifname != ${br} drop`);
  }

  // Anti-spoofing: a guest sends only with its own MAC and IPv4 address, never as a DHCP
  // server, and asks DHCP only for its own MAC (the BOOTP chaddr, 48 bits at offset 28 of the
  // UDP payload = bit 288 from the UDP header): one address per NIC, no pool exhaustion with
  // made-up clients. A DHCP request split into fragments is dropped (its chaddr would be
  // out of sight).
  const spoof: string[] = [];
  for (const nic of [...input.nics].sort((a, b) => a.tap.localeCompare(b.tap))) {
    const t = q(nic.tap);
    spoof.push(`iifname ${t} ether saddr != ${nic.mac} drop`);
    spoof.push(`iifname ${t} udp sport 67 drop`);
    spoof.push(`iifname ${t} udp dport 67 ip frag-off & 0x2000 != 0 drop`);
    spoof.push(`iifname ${t} udp dport 67 @th,288,48 != ${macHex(nic.mac)} drop`);
    if (nic.ipv4) {
      spoof.push(`iifname ${t} ether type ip ip saddr != { 0.0.0.0, ${nic.ipv4} } drop`);
      spoof.push(`iifname ${t} ether type arp arp saddr ip != { 0.0.0.0, ${nic.ipv4} } drop`);
      spoof.push(`iifname ${t} ether type arp arp saddr ether != ${nic.mac} drop`);
    }
  }
  // IPv6 is not managed on guest links: only IPv4 and ARP frames go from and to a tap (no
  // IPv6, so no forged IPv6 source, RA or ND; no VLAN tags around the checks above).
  // Frames from taps carry the guest mark (see the bridged input rules).
  const taps = q(`${TAP_PREFIX}*`);
  const prerouting = [`iifname ${taps} ether type != { ip, arp } drop`, `iifname ${taps} meta mark set meta mark | ${GUEST_MARK}`];
  const toTaps = `oifname ${taps} ether type != { ip, arp } drop`;

  const chain = (name: string, hook: string, rules: string[], type = 'filter', priority = '0'): string =>
    [`  chain ${name} {`, `    type ${type} hook ${hook} priority ${priority}; policy accept;`, ...rules.map((r) => `    ${r}`), '  }'].join('\n');

  return [
    '#!/usr/sbin/nft -f',
    "# generated by vmkit: do not edit (re-created from the daemon's state)",
    `table inet ${TABLE}`,
    `delete table inet ${TABLE}`,
    `table inet ${TABLE} {`,
    chain('input', 'input', inputRules),
    chain('forward', 'forward', forwardRules),
    chain('prerouting', 'prerouting', dnatRules, 'nat', 'dstnat'),
    chain('output', 'output', outDnatRules, 'nat', '-100'),
    chain('postrouting', 'postrouting', postRules, 'nat', 'srcnat'),
    '}',
    `table bridge ${TABLE}`,
    `delete table bridge ${TABLE}`,
    `table bridge ${TABLE} {`,
    '  chain antispoof {',
    ...spoof.map((r) => `    ${r}`),
    '  }',
    chain('prerouting', 'prerouting', prerouting, 'filter', '-200'),
    chain('forward', 'forward', ['jump antispoof', toTaps]),
    chain('input', 'input', ['jump antispoof']),
    chain('output', 'output', [toTaps]),
    '}',
    '',
  ].join('\n');
}

/**
 * The guard on guests' own sockets: a QEMU with a user-mode NIC (slirp) makes every
 * connection of its guest itself, so 10.0.2.2 (= the host's 127.0.0.1) and every host
 * address would be open to the guest. Every guest QEMU runs under a uid of its own from
 * `uidRange` (src/host/guest-uids.ts); a new connection such a process opens to any local
 * address (they all leave through `lo`) is refused, except DNS (slirp's resolver forwards to
 * the host's, which may be 127.0.0.53) and the services the operator allowed for the
 * pseudo-network "user". Replies of port forwards (hostfwd) are established connections
 * and pass; connections to the world do not leave through `lo` and pass. Packets of
 * processes outside the range are never looked at.
 */
export function renderGuard(uidRange: string, allowHost: readonly string[] = []): string {
  if (!/^\d+-\d+$/.test(uidRange)) throw new Error(`bad uid range ${uidRange}`);
  const guest = ['udp dport 53 accept', 'tcp dport 53 accept', ...allowHost.map((r) => `${hostRuleMatch(r)} accept`), 'meta l4proto tcp reject with tcp reset', 'reject'];
  return [
    `table inet ${GUARD_TABLE}`,
    `delete table inet ${GUARD_TABLE}`,
    `table inet ${GUARD_TABLE} {`,
    '  chain output {',
    '    type filter hook output priority 0; policy accept;',
    `    meta skuid ${uidRange} oifname "lo" ct state new jump guest`,
    '  }',
    '  chain guest {',
    ...guest.map((r) => `    ${r}`),
    '  }',
    '}',
    '',
  ].join('\n');
}

export async function applyGuard(uidRange: string, allowHost: readonly string[]): Promise<void> {
  await nftStdin(renderGuard(uidRange, allowHost));
}

/** The script that removes both tables (nothing of vmkit's stays). */
export function renderFlush(): string {
  return [`table inet ${TABLE}`, `delete table inet ${TABLE}`, `table bridge ${TABLE}`, `delete table bridge ${TABLE}`, ''].join('\n');
}

/** Runs an nft script (one transaction) from stdin. */
export async function nftStdin(script: string): Promise<void> {
  const r = await run(['nft', '-f', '-'], { input: script, allowFailure: true, errorCode: 'VMKIT_NETWORK_FAILED', hint: 'Install nftables ("vmkit doctor").', timeoutMs: 30_000 });
  if (r.code !== 0) {
    throw vmkitError('VMKIT_NETWORK_FAILED', `nft refused vmkit's ruleset: ${r.stderr.trim().split('\n').slice(0, 6).join(' ')}`, {
      hint: 'Run the daemon as root with nftables available ("vmkit doctor").',
    });
  }
}

export async function applyRuleset(input: RulesetInput): Promise<void> {
  await nftStdin(renderRuleset(input));
}

/**
 * Removes vmkit's tables — and touches nothing when there are none, so a daemon without
 * networks never writes to the host's netfilter (tests run such daemons in the host's own
 * namespace).
 */
export async function removeRuleset(): Promise<void> {
  // nft cannot run at all: there is no vmkit table to remove.
  const tables = await run(['nft', 'list', 'tables'], { allowFailure: true, errorCode: 'VMKIT_NETWORK_FAILED' }).catch(() => undefined);
  if (!tables || tables.code !== 0 || !new RegExp(`^table (inet|bridge) ${TABLE}$`, 'm').test(tables.stdout)) return;
  await nftStdin(renderFlush());
}

/** `nft list table inet vmkit` + `bridge vmkit` as text ('' when absent). */
export async function listRuleset(): Promise<string> {
  const a = await run(['nft', 'list', 'table', 'inet', TABLE], { allowFailure: true, errorCode: 'VMKIT_NETWORK_FAILED' });
  const b = await run(['nft', 'list', 'table', 'bridge', TABLE], { allowFailure: true, errorCode: 'VMKIT_NETWORK_FAILED' });
  return (a.code === 0 ? a.stdout : '') + (b.code === 0 ? b.stdout : '');
}

/** The table of stacks' service addresses (src/stacks/): kept apart so a stack's rules go with it. */
export const SERVICE_TABLE = 'vmkit-stacks';

export interface ServiceEndpoint {
  ip: string;
  port: number;
  /**
   * A replica on another cluster host, reached through its port forward there: connections
   * DNATed to it leave this host masqueraded (else that host's answer would go straight to
   * the client, who never spoke to it).
   */
  remote?: boolean;
}

/** One load-balanced address of a stack's service: a host port and/or an address on its network. */
export interface RulesetService {
  /** `stack/service`, written as a comment beside its rules. */
  id: string;
  /** The host port: on `hostAddress` (127.0.0.1 = the host only, 0.0.0.0 = every local address). */
  host?: { address: string; port: number };
  /** An address on the service's network (the host holds it on the bridge). */
  address?: ServiceEndpoint;
  /** The healthy replicas, in a stable order; none = no rule (nothing answers). */
  endpoints: readonly ServiceEndpoint[];
}

/**
 * The DNAT of one service's connections over its healthy replicas, decided per connection in
 * the kernel: `numgen inc` deals new connections round-robin (conntrack keeps each connection
 * on the replica it got), so no proxy process sits in the data path.
 */
function serviceDnat(endpoints: readonly ServiceEndpoint[]): string {
  if (endpoints.length === 1) return `dnat ip to ${endpoints[0]!.ip}:${endpoints[0]!.port}`;
  const map = endpoints.map((e, i) => `${i} : ${e.ip} . ${e.port}`).join(', ');
  return `dnat ip to numgen inc mod ${endpoints.length} map { ${map} }`;
}

/** The `nft -f` script of every stack's service addresses (the whole table, replaced at once). */
export function renderServices(services: readonly RulesetService[]): string {
  const pre: string[] = [];
  const out: string[] = [];
  const post: string[] = [];
  for (const s of [...services].sort((a, b) => a.id.localeCompare(b.id))) {
    if (s.endpoints.length === 0) continue;
    const dnat = `${serviceDnat(s.endpoints)} comment ${q(s.id)}`;
    for (const e of s.endpoints) if (e.remote) post.push(`ip daddr ${e.ip} tcp dport ${e.port} ct status dnat masquerade comment ${q(s.id)}`);
    if (s.host) {
      const match = s.host.address === '0.0.0.0' ? 'fib daddr type local' : `ip daddr ${s.host.address}`;
      // From elsewhere (not for a loopback address) and from the host itself.
      if (!s.host.address.startsWith('127.')) pre.push(`${match} tcp dport ${s.host.port} ${dnat}`);
      // The host's own connections to a loopback address carry 127.0.0.1 as their source, which
      // the kernel does not route to another host: they go to the replicas here only.
      const local = s.endpoints.filter((e) => !e.remote);
      const loopbackApart = local.length < s.endpoints.length && (s.host.address === '0.0.0.0' || s.host.address.startsWith('127.'));
      if (loopbackApart && local.length > 0) out.push(`ip daddr 127.0.0.0/8 tcp dport ${s.host.port} ${serviceDnat(local)} comment ${q(s.id)}`);
      if (!loopbackApart) out.push(`${match} tcp dport ${s.host.port} ${dnat}`);
      else if (!s.host.address.startsWith('127.')) out.push(`${match} ip daddr != 127.0.0.0/8 tcp dport ${s.host.port} ${dnat}`);
    }
    if (s.address) {
      pre.push(`ip daddr ${s.address.ip} tcp dport ${s.address.port} ${dnat}`);
      out.push(`ip daddr ${s.address.ip} tcp dport ${s.address.port} ${dnat}`);
    }
  }
  const chain = (name: string, hook: string, priority: string, rules: string[]): string[] => [
    `  chain ${name} {`,
    `    type nat hook ${hook} priority ${priority}; policy accept;`,
    ...rules.map((r) => `    ${r}`),
    '  }',
  ];
  return [
    `table inet ${SERVICE_TABLE}`,
    `delete table inet ${SERVICE_TABLE}`,
    `table inet ${SERVICE_TABLE} {`,
    ...chain('prerouting', 'prerouting', 'dstnat', pre),
    ...chain('output', 'output', '-100', out),
    ...chain('postrouting', 'postrouting', 'srcnat', post),
    '}',
    '',
  ].join('\n');
}

/** Applies the services' table; with none, removes it (a host without stacks keeps no table). */
export async function applyServices(services: readonly RulesetService[]): Promise<void> {
  if (services.length === 0) {
    const tables = await run(['nft', 'list', 'tables'], { allowFailure: true, errorCode: 'VMKIT_NETWORK_FAILED' }).catch(() => undefined);
    if (!tables || tables.code !== 0 || !tables.stdout.includes(`table inet ${SERVICE_TABLE}`)) return;
    await nftStdin(`table inet ${SERVICE_TABLE}\ndelete table inet ${SERVICE_TABLE}\n`);
    return;
  }
  await nftStdin(renderServices(services));
}
