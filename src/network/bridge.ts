import { stat, writeFile } from 'node:fs/promises';
import { run } from '../util/exec.js';
import { vmkitError } from '../errors.js';
import { BRIDGE_PREFIX, TAP_PREFIX } from './network.js';

/**
 * The ONE module that runs `ip` (iproute2) and writes the per-interface sysctls. Every
 * call is idempotent: creating what exists or deleting what is gone is not an error, so
 * start-up reconciliation can simply re-apply the wanted state.
 */
const HINT = 'Install iproute2 and run the daemon as root (or with CAP_NET_ADMIN); "vmkit doctor" checks the host.';

async function ip(args: string[], allowFailure = false): Promise<{ stdout: string; stderr: string; code: number }> {
  return run(['ip', ...args], { errorCode: 'VMKIT_NETWORK_FAILED', hint: HINT, timeoutMs: 15_000, allowFailure });
}

export interface LinkInfo {
  ifname: string;
  master?: string;
  operstate?: string;
  address?: string;
  linkKind?: string;
  addresses: Array<{ family: string; local: string; prefixlen: number }>;
}

interface IpAddrJson {
  ifname: string;
  master?: string;
  operstate?: string;
  address?: string;
  linkinfo?: { info_kind?: string };
  addr_info?: Array<{ family: string; local: string; prefixlen: number }>;
}

export async function listLinks(): Promise<LinkInfo[]> {
  const { stdout } = await ip(['-j', '-d', 'addr', 'show']);
  const rows = JSON.parse(stdout || '[]') as IpAddrJson[];
  return rows.map((r) => ({
    ifname: r.ifname,
    master: r.master,
    operstate: r.operstate,
    address: r.address,
    linkKind: r.linkinfo?.info_kind,
    addresses: (r.addr_info ?? []).map((a) => ({ family: a.family, local: a.local, prefixlen: a.prefixlen })),
  }));
}

export async function linkExists(name: string): Promise<boolean> {
  return (await ip(['link', 'show', 'dev', name], true)).code === 0;
}

/** The bridges and taps vmkit made (by name prefix). */
export async function listVmkitLinks(): Promise<{ bridges: string[]; taps: string[] }> {
  const links = await listLinks();
  return {
    bridges: links.filter((l) => l.ifname.startsWith(BRIDGE_PREFIX)).map((l) => l.ifname),
    taps: links.filter((l) => l.ifname.startsWith(TAP_PREFIX)).map((l) => l.ifname),
  };
}

async function sysctl(path: string, value: string): Promise<void> {
  await writeFile(`/proc/sys/${path}`, value).catch((err: Error) => {
    throw vmkitError('VMKIT_NETWORK_FAILED', `Cannot set ${path.replace(/\//g, '.')} = ${value}: ${err.message}`, { hint: HINT });
  });
}

/** Creates (or keeps) a bridge, up, with `address/prefix` as its only IPv4 address when given. */
export async function ensureBridge(name: string, address?: { ip: string; prefix: number }, mac?: string): Promise<void> {
  if (!(await linkExists(name))) {
    // No STP, no forwarding delay: a guest's first DHCP packet must not be lost.
    await ip(['link', 'add', 'name', name, ...(mac ? ['address', mac] : []), 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
  } else if (mac) {
    await ip(['link', 'set', 'dev', name, 'address', mac], true);
  }
  if (address) {
    await ip(['addr', 'replace', `${address.ip}/${address.prefix}`, 'dev', name]);
    // Port forwards from the host's loopback (DNAT of 127.0.0.1) leave through the bridge.
    await sysctl(`net/ipv4/conf/${name}/route_localnet`, '1');
  }
  // IPv6 is not managed: no link-local chatter, no SLAAC. A kernel without IPv6 has no such
  // knob, and nothing to disable.
  await sysctl(`net/ipv6/conf/${name}/disable_ipv6`, '1').catch(() => undefined);
  await ip(['link', 'set', 'dev', name, 'up']);
}

export async function deleteLink(name: string): Promise<void> {
  if (await linkExists(name)) await ip(['link', 'del', 'dev', name], true);
}

/**
 * A persistent tap on `bridge`, created before QEMU opens it by name. With `owner` (the
 * guest's uid, = gid) the tap belongs to that user, so an unprivileged QEMU may attach to it
 * (TUNSETIFF on a tap one owns needs no CAP_NET_ADMIN); a tap left with another owner is made again.
 */
export async function ensureTap(name: string, bridge: string, owner?: number): Promise<void> {
  if (owner !== undefined) await assertTunOpenable();
  if ((await linkExists(name)) && (await tapOwner(name)) !== (owner ?? -1)) await ip(['link', 'del', 'dev', name], true);
  if (!(await linkExists(name))) await ip(tapAddArgs(name, owner));
  // As on the bridge: IPv6 is not managed, and a kernel without it has nothing to disable.
  await sysctl(`net/ipv6/conf/${name}/disable_ipv6`, '1').catch(() => undefined);
  await ip(['link', 'set', 'dev', name, 'master', bridge, 'up']);
  // Hairpin: a guest reaching itself through a port forward gets its frames back on its own port.
  await ip(['link', 'set', 'dev', name, 'type', 'bridge_slave', 'hairpin', 'on']);
}

export function tapAddArgs(name: string, owner?: number): string[] {
  return ['tuntap', 'add', 'dev', name, 'mode', 'tap', 'vnet_hdr', ...(owner !== undefined ? ['user', String(owner), 'group', String(owner)] : [])];
}

/**
 * An unprivileged QEMU opens /dev/net/tun itself before attaching to its tap: the node must be
 * 0666, as Debian's udev rule makes it (safe: creating a tap, or attaching to one owned by
 * someone else, still needs CAP_NET_ADMIN). Hosts without udev (containers) may have it 0600.
 */
export async function assertTunOpenable(): Promise<void> {
  const st = await stat('/dev/net/tun').catch(() => undefined);
  if (!st || (st.mode & 0o006) !== 0o006) {
    throw vmkitError('VMKIT_NETWORK_FAILED', `/dev/net/tun is ${st ? `mode ${(st.mode & 0o777).toString(8)}` : 'missing'}: a guest's QEMU (its own uid) cannot open its tap.`, {
      hint: "Make it 0666 as Debian's udev rule does: chmod 0666 /dev/net/tun (scripts/setup.sh does it; load the tun module if it is missing).",
    });
  }
}

/** The uid a tap belongs to (-1: nobody), from `ip -d` (sysfs shows the namespace it was mounted in, not ours). */
async function tapOwner(name: string): Promise<number> {
  const { stdout, code } = await ip(['-d', '-j', 'link', 'show', 'dev', name], true);
  if (code !== 0) return -1;
  const rows = JSON.parse(stdout || '[]') as Array<{ linkinfo?: { info_data?: { user?: number } } }>;
  return rows[0]?.linkinfo?.info_data?.user ?? -1;
}

/** Puts a host interface into a bridge (bridged mode). */
export async function enslave(uplink: string, bridge: string): Promise<void> {
  await ip(['link', 'set', 'dev', uplink, 'master', bridge, 'up']);
}

export async function release(uplink: string): Promise<void> {
  if (await linkExists(uplink)) await ip(['link', 'set', 'dev', uplink, 'nomaster'], true);
}

export async function enableForwarding(): Promise<void> {
  await sysctl('net/ipv4/ip_forward', '1');
}

/** A host address (a /32 floating address) on an interface; `replace` makes it idempotent. */
export async function addHostAddress(dev: string, address: string): Promise<void> {
  await ip(['addr', 'replace', `${address}/32`, 'dev', dev]);
}

export async function deleteHostAddress(dev: string, address: string): Promise<void> {
  await ip(['addr', 'del', `${address}/32`, 'dev', dev]);
}
