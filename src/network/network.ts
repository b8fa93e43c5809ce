import { createHash } from 'node:crypto';
import { vmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import { NETWORK_MODES as WIRE_NETWORK_MODES, type Network, type NetworkMode } from '../wire/network.js';

/**
 * The network model and its validation: pure, no I/O. A network is a Linux bridge with a
 * mode; vmkit-managed modes (nat, host-only, internal with a subnet) also carry an IPv4
 * subnet, a DHCP pool served by dnsmasq and one reserved address per NIC.
 */
export type { Network, NetworkMode } from '../wire/types.js';
export const NETWORK_MODES: readonly NetworkMode[] = WIRE_NETWORK_MODES;

export interface CreateNetworkRequest {
  name: string;
  mode: NetworkMode;
  subnet?: string;
  /** `.100-.200` (last octets) or `10.80.0.100-10.80.0.200`. */
  dhcpRange?: string;
  dhcp?: boolean;
  dns?: boolean;
  uplink?: string;
}

export const BRIDGE_PREFIX = 'vmkbr-';
export const TAP_PREFIX = 'vmkt-';
export const IFNAMSIZ = 15;

export function ipToInt(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) return NaN;
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

export interface Cidr {
  network: number;
  prefix: number;
  size: number;
  /** first and last host address (network + 1, broadcast - 1) */
  first: number;
  last: number;
  broadcast: number;
}

function badSubnet(subnet: string, why: string, hint = 'Write the subnet as NETWORK/PREFIX, e.g. 10.80.0.0/24 (prefix 8 to 29).'): Error {
  return vmkitError('VMKIT_INVALID_ARGUMENT', `The subnet "${subnet}" is not valid: ${why}.`, { hint });
}

export function parseCidr(subnet: string): Cidr {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(subnet);
  if (!m) throw badSubnet(subnet, 'it is not NETWORK/PREFIX');
  const addr = ipToInt(m[1]!);
  const prefix = Number(m[2]);
  if (Number.isNaN(addr)) throw badSubnet(subnet, `"${m[1]}" is not an IPv4 address`);
  if (prefix < 8 || prefix > 29) throw badSubnet(subnet, `a /${prefix} is too ${prefix < 8 ? 'large' : 'small'}`);
  const size = 2 ** (32 - prefix);
  const network = Math.floor(addr / size) * size;
  if (network !== addr) {
    throw badSubnet(subnet, 'host bits are set', `Did you mean ${intToIp(network)}/${prefix}?`);
  }
  const first8 = Math.floor(network / 2 ** 24);
  if (first8 === 0 || first8 === 127 || first8 >= 224) throw badSubnet(subnet, 'it is a reserved range (0/8, loopback, multicast or class E)');
  return { network, prefix, size, first: network + 1, last: network + size - 2, broadcast: network + size - 1 };
}

export function cidrContains(c: Cidr, ip: number): boolean {
  return ip >= c.network && ip <= c.broadcast;
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return a.network <= b.broadcast && b.network <= a.broadcast;
}

export function netmask(prefix: number): string {
  return intToIp(2 ** 32 - 2 ** (32 - prefix));
}

/** `vmkbr-NAME`, or `vmkbr-HASH` when NAME would not fit / would collide after truncation. */
export function bridgeName(name: string, taken: ReadonlySet<string> = new Set()): string {
  const plain = `${BRIDGE_PREFIX}${name}`;
  if (plain.length <= IFNAMSIZ && !taken.has(plain)) return plain;
  const h = createHash('sha256').update(name).digest('hex');
  for (let i = 0; i < 56; i++) {
    const candidate = `${BRIDGE_PREFIX}${name.slice(0, 4)}${h.slice(i, i + 5)}`;
    if (!taken.has(candidate)) return candidate;
  }
  throw vmkitError('VMKIT_INTERNAL', `No free bridge name for network "${name}".`);
}

/** `vmkt-<7 hex of the instance id>-<nic index>` (15 chars at most). */
export function tapName(instanceId: string, nicId: string): string {
  const n = nicId.replace(/^nic/, '');
  return `${TAP_PREFIX}${instanceId.slice(0, 7)}-${n}`.slice(0, IFNAMSIZ);
}

function parseRange(text: string, c: Cidr, subnet: string): { start: number; end: number } {
  const m = /^([0-9.]+)-([0-9.]+)$/.exec(text.trim());
  const bad = (why: string) =>
    vmkitError('VMKIT_INVALID_ARGUMENT', `The DHCP range "${text}" is not valid: ${why}.`, {
      hint: `Write FIRST-LAST inside ${subnet}, as full addresses or last octets (e.g. .100-.200).`,
    });
  if (!m) throw bad('it is not FIRST-LAST');
  const resolve = (s: string): number => {
    if (s.startsWith('.')) {
      const n = Number(s.slice(1));
      if (!/^\.\d{1,3}$/.test(s) || n > 255) throw bad(`"${s}" is not a last octet`);
      return Math.floor(c.network / 256) * 256 + n;
    }
    const v = ipToInt(s);
    if (Number.isNaN(v)) throw bad(`"${s}" is not an IPv4 address`);
    return v;
  };
  const start = resolve(m[1]!);
  const end = resolve(m[2]!);
  if (start > end) throw bad('the first address comes after the last');
  if (start < c.first + 1 || end > c.last) throw bad(`it must lie within ${intToIp(c.first + 1)}-${intToIp(c.last)} (the host keeps ${intToIp(c.first)})`);
  return { start, end };
}

/**
 * Validates a create request into a Network (without bridge name and date). Checks that
 * can only be made against the host (overlaps, uplink) are the manager's.
 */
export function validateNetworkRequest(req: CreateNetworkRequest): Omit<Network, 'bridge' | 'createdAt'> {
  const name = validateName(req.name, 'network name');
  if (name === 'user') {
    throw vmkitError('VMKIT_NAME_INVALID', 'The network name "user" is reserved for QEMU user-mode NAT.', { hint: 'Choose another name.' });
  }
  if (!NETWORK_MODES.includes(req.mode)) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `Unknown network mode "${String(req.mode)}".`, { hint: `Use one of ${NETWORK_MODES.join(', ')}.` });
  }
  if (req.mode === 'bridged') {
    if (!req.uplink) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', 'A bridged network needs an uplink interface.', { hint: 'Pass --uplink IFACE (a host interface without an address).' });
    }
    if (req.subnet || req.dhcpRange || req.dhcp || req.dns) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', "A bridged network takes no subnet, DHCP or DNS: guests get them from the uplink's LAN.", {
        hint: 'Drop --subnet/--dhcp-range/--dhcp/--dns.',
      });
    }
    if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(req.uplink)) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${req.uplink}" is not an interface name.`, { hint: '"ip link" lists the interfaces.' });
    }
    return { name, mode: 'bridged', uplink: req.uplink, dhcp: false, dns: false };
  }
  if (req.uplink) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `Only bridged networks have an uplink (this one is ${req.mode}).`, { hint: 'Drop --uplink, or use --mode bridged.' });
  }
  if (!req.subnet) {
    if (req.mode === 'internal' && !req.dhcp && !req.dhcpRange && !req.dns) return { name, mode: 'internal', dhcp: false, dns: false };
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `A ${req.mode} network needs a subnet${req.mode === 'internal' ? ' for DHCP/DNS' : ''}.`, {
      hint: 'Pass --subnet, e.g. --subnet 10.80.0.0/24.',
    });
  }
  const c = parseCidr(req.subnet);
  const dhcp = req.dhcp ?? (req.mode !== 'internal' || req.dhcpRange !== undefined);
  const range = req.dhcpRange ? parseRange(req.dhcpRange, c, req.subnet) : { start: c.first + 1, end: c.last };
  if (range.end < range.start) throw badSubnet(req.subnet, 'it leaves no address for guests');
  return {
    name,
    mode: req.mode,
    subnet: req.subnet,
    hostAddress: intToIp(c.first),
    dhcp,
    dhcpRange: { start: intToIp(range.start), end: intToIp(range.end) },
    // Guests resolve each other's names by default; --dns only matters to turn it on for internal.
    dns: req.dns ?? true,
  };
}

/** Whether vmkit assigns addresses (one reservation per NIC) on this network. */
export function managesAddresses(n: Network): boolean {
  return n.subnet !== undefined && n.hostAddress !== undefined;
}

/**
 * Picks an address for a NIC: the requested static one (checked) or the lowest free one of
 * the DHCP pool. `taken` holds the addresses other NICs already hold; `reserved` the addresses
 * no NIC may get (a stack service's address on this network → who holds it, for the error).
 */
export function allocateAddress(n: Network, taken: ReadonlySet<string>, requested?: string, reserved: ReadonlyMap<string, string> = new Map()): string {
  if (!n.subnet || !n.hostAddress) {
    if (requested) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `Network "${n.name}" (${n.mode}) has no subnet vmkit manages, so it cannot give a static address.`, {
        hint: n.mode === 'bridged' ? "Configure the address on the LAN's DHCP server." : 'Create the network with --subnet.',
      });
    }
    return '';
  }
  const c = parseCidr(n.subnet);
  if (requested !== undefined) {
    const v = ipToInt(requested);
    if (Number.isNaN(v)) throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${requested}" is not an IPv4 address.`, { hint: `Give an address in ${n.subnet}.` });
    if (!cidrContains(c, v) || v === c.network || v === c.broadcast) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `The address ${requested} is outside network "${n.name}" (${n.subnet}).`, {
        hint: `Give an address from ${intToIp(c.first + 1)} to ${intToIp(c.last)}.`,
      });
    }
    if (requested === n.hostAddress) {
      throw vmkitError('VMKIT_ADDRESS_IN_USE', `The address ${requested} is the host's own address on network "${n.name}".`, {
        hint: `Give an address from ${intToIp(c.first + 1)} to ${intToIp(c.last)}.`,
      });
    }
    const owner = reserved.get(requested);
    if (owner !== undefined) {
      throw vmkitError('VMKIT_ADDRESS_IN_USE', `The address ${requested} on network "${n.name}" is reserved: it is the address of ${owner}.`, {
        hint: 'Give another address (or none: the DHCP pool never hands out a reserved address).',
      });
    }
    if (taken.has(requested)) {
      throw vmkitError('VMKIT_ADDRESS_IN_USE', `The address ${requested} on network "${n.name}" is already taken by another NIC.`, {
        hint: '"vmkit network info NAME" lists the addresses in use.',
      });
    }
    return requested;
  }
  const start = ipToInt(n.dhcpRange?.start ?? intToIp(c.first + 1));
  const end = ipToInt(n.dhcpRange?.end ?? intToIp(c.last));
  for (let v = start; v <= end; v++) {
    const ip = intToIp(v);
    if (!taken.has(ip) && !reserved.has(ip)) return ip;
  }
  const held = [...reserved.keys()].filter((ip) => ipToInt(ip) >= start && ipToInt(ip) <= end).length;
  throw vmkitError(
    'VMKIT_POOL_EXHAUSTED',
    `The DHCP pool of network "${n.name}" (${n.dhcpRange?.start}-${n.dhcpRange?.end}, ${end - start + 1} addresses${held ? `, ${held} reserved for stack service addresses` : ''}) is exhausted.`,
    {
      hint: 'Remove a NIC from the network, give a static address outside the pool, or use a network with a larger pool.',
    },
  );
}

/**
 * A host service guests may reach (`vmkit network set NET --allow-host tcp/PORT`): `tcp/N`,
 * `udp/N` or a range `tcp/N-M`. Returns the canonical form (no leading zeros).
 */
export function parseHostRule(text: string): string {
  const m = /^(tcp|udp)\/(\d{1,5})(?:-(\d{1,5}))?$/.exec(String(text).trim().toLowerCase());
  const lo = Number(m?.[2]);
  const hi = m?.[3] === undefined ? lo : Number(m[3]);
  if (!m || lo < 1 || hi > 65535 || hi < lo) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${text}" is not a host service: write PROTO/PORT, e.g. tcp/8080, udp/5000 or tcp/8000-8010.`, {
      hint: 'PROTO is tcp or udp; ports are 1-65535.',
    });
  }
  return lo === hi ? `${m[1]}/${lo}` : `${m[1]}/${lo}-${hi}`;
}

/** The allow-list after adding `allow` and removing `deny` (canonical, sorted, no duplicates). */
export function editHostRules(current: readonly string[], allow: readonly string[] = [], deny: readonly string[] = []): string[] {
  const out = new Set(current.map(parseHostRule));
  for (const a of allow) out.add(parseHostRule(a));
  for (const d of deny) out.delete(parseHostRule(d));
  const key = (r: string) => {
    const [p, ports] = r.split('/');
    return `${p}/${ports!.split('-')[0]!.padStart(5, '0')}`;
  };
  return [...out].sort((a, b) => key(a).localeCompare(key(b)));
}
