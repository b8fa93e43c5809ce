import { vmkitError } from '../errors.js';
import { run } from '../util/exec.js';
import type { Network } from './network.js';

/**
 * The ONE module that runs `nft`. vmkit's rules live in two tables of its own,
 * `inet vmkit` (masquerade, isolation, port forwards) and `bridge vmkit` (anti-spoofing on
 * the taps), so they can be listed (`nft list table inet vmkit`) and removed as a whole.
 * The whole ruleset is generated from the wanted state and replaced atomically in one
 * `nft -f` transaction: applying it twice gives the same rules.
 */
export const TABLE = 'vmkit';

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

    // What guests may ask of the host itself.
    // Replies to the host's own connections (and to forwards from its loopback, whose
    // replies are addressed to 127.0.0.1 once de-NATed); internal guests get none.
    if (n.mode !== 'internal') inputRules.push(`iifname ${br} ct state established,related accept`);
    inputRules.push(`iifname ${br} udp dport 67 accept`);
    if (n.hostAddress) {
      if (n.dns) inputRules.push(`iifname ${br} ip daddr ${n.hostAddress} udp dport 53 accept`, `iifname ${br} ip daddr ${n.hostAddress} tcp dport 53 accept`);
      if (n.mode !== 'internal') inputRules.push(`iifname ${br} ip daddr ${n.hostAddress} accept`);
    }
    inputRules.push(`iifname ${br} drop`);
  }

  // Anti-spoofing: a guest sends only with its own MAC and IPv4 address, and never as a DHCP server.
  const spoof: string[] = [];
  for (const nic of [...input.nics].sort((a, b) => a.tap.localeCompare(b.tap))) {
    const t = q(nic.tap);
    spoof.push(`iifname ${t} ether saddr != ${nic.mac} drop`);
    spoof.push(`iifname ${t} udp sport 67 drop`);
    if (nic.ipv4) {
      spoof.push(`iifname ${t} ether type ip ip saddr != { 0.0.0.0, ${nic.ipv4} } drop`);
      spoof.push(`iifname ${t} ether type arp arp saddr ip != { 0.0.0.0, ${nic.ipv4} } drop`);
      spoof.push(`iifname ${t} ether type arp arp saddr ether != ${nic.mac} drop`);
    }
  }

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
    chain('forward', 'forward', ['jump antispoof']),
    chain('input', 'input', ['jump antispoof']),
    '}',
    '',
  ].join('\n');
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
