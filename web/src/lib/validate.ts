/**
 * Form checks that run before a request is sent. The name rule is the server's own
 * (src/domain/name-rule.ts); the others mirror src/network/forwards.ts, so the message comes at once; the server
 * still decides, and its error codes are shown in words (errors.ts).
 */
import { NAME_MAX_LENGTH, NAME_PATTERN } from '../../../src/domain/name-rule.js';

export { NAME_PATTERN };

export function nameProblem(name: string, what = 'the instance'): string | null {
  if (name.length === 0) return `Give ${what} a name.`;
  if (name.length > NAME_MAX_LENGTH) return `At most ${NAME_MAX_LENGTH} characters (this one has ${name.length}).`;
  if (/[A-Z]/.test(name)) return 'Use lowercase letters only.';
  if (/[^a-z0-9-]/.test(name)) return 'Only letters a-z, digits and "-" are allowed (no spaces, dots or slashes).';
  if (!NAME_PATTERN.test(name)) return 'Start and end with a letter or a digit.';
  return null;
}

/** The tag that holds a suspended instance's state: not a name for a snapshot. */
export const SUSPEND_TAG = 'vmkit-suspend';

/** Snapshot names follow the instance-name grammar (src/snapshots/snapshots.ts), are unique per instance. */
export function snapshotNameProblem(name: string, taken: readonly string[] = []): string | null {
  const p = nameProblem(name, 'the snapshot');
  if (p) return p;
  if (name === SUSPEND_TAG) return `"${SUSPEND_TAG}" is reserved (it holds a suspended instance's state).`;
  if (taken.includes(name)) return 'The instance already has a snapshot of that name.';
  return null;
}

export function portProblem(value: string, what: string, opts: { allowPrivileged?: boolean } = {}): string | null {
  if (value.trim() === '') return `Enter the ${what}.`;
  if (!/^\d+$/.test(value.trim())) return `The ${what} is a whole number.`;
  const n = Number(value);
  if (n < 1 || n > 65535) return `The ${what} is between 1 and 65535.`;
  if (what === 'host port' && n < 1024 && !opts.allowPrivileged) return 'Host ports below 1024 need privileges; choose 1024 or above.';
  return null;
}

export function cpusProblem(value: string): string | null {
  if (!/^\d+$/.test(value.trim())) return 'vCPUs is a whole number.';
  const n = Number(value);
  if (n < 1 || n > 64) return 'Between 1 and 64 vCPUs.';
  return null;
}

export function memoryProblem(value: string): string | null {
  if (!/^\d+$/.test(value.trim())) return 'Memory is a whole number of MiB.';
  const n = Number(value);
  if (n < 64) return 'At least 64 MiB.';
  if (n > 1024 * 1024) return 'At most 1 TiB.';
  return null;
}

export function addressProblem(value: string): string | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(value.trim());
  if (!m || m.slice(1).some((p) => Number(p) > 255)) return 'An IPv4 address such as 127.0.0.1.';
  return null;
}

export interface ForwardDraft {
  hostPort: string;
  guestPort: string;
  proto: 'tcp' | 'udp';
}

/** Problems of a list of forwards, by row; duplicates of the same host port and protocol too. */
export function forwardProblems(rows: readonly ForwardDraft[]): Array<string | null> {
  const seen = new Set<string>();
  return rows.map((r) => {
    const p = portProblem(r.hostPort, 'host port') ?? portProblem(r.guestPort, 'guest port');
    if (p) return p;
    const key = `${r.proto}:${Number(r.hostPort)}`;
    if (seen.has(key)) return `Host port ${r.hostPort}/${r.proto} is used twice.`;
    seen.add(key);
    return null;
  });
}

export type NetworkModeDraft = 'nat' | 'host-only' | 'internal' | 'bridged';

export interface NetworkDraft {
  name: string;
  mode: NetworkModeDraft;
  subnet: string;
  dhcpRange: string;
  uplink: string;
}

/** A subnet the way the server takes it (src/network/network.ts parseCidr): NETWORK/PREFIX, prefix 8–29, no host bits. */
export function subnetProblem(subnet: string): string | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(subnet.trim());
  if (!m) return 'Write it as NETWORK/PREFIX, e.g. 10.80.0.0/24.';
  const octets = m.slice(1, 5).map(Number);
  if (octets.some((o) => o > 255)) return 'Each part of the address is 0–255.';
  const prefix = Number(m[5]);
  if (prefix < 8 || prefix > 29) return 'The prefix is between /8 and /29.';
  const addr = octets.reduce((a, o) => a * 256 + o, 0);
  const size = 2 ** (32 - prefix);
  const network = Math.floor(addr / size) * size;
  if (network !== addr) {
    const ip = [24, 16, 8, 0].map((sh) => Math.floor(network / 2 ** sh) % 256).join('.');
    return `Host bits are set: did you mean ${ip}/${prefix}?`;
  }
  const first = octets[0]!;
  if (first === 0 || first === 127 || first >= 224) return 'That is a reserved range (0/8, loopback, multicast).';
  return null;
}

/** Problems of the create-network form, by field; the server still decides (overlaps, the host's interfaces). */
export function networkProblems(d: NetworkDraft): { name: string | null; subnet: string | null; uplink: string | null } {
  let name = nameProblem(d.name, 'the network');
  if (!name && d.name === 'user') name = '"user" is reserved for QEMU user-mode NAT.';
  let subnet: string | null = null;
  let uplink: string | null = null;
  if (d.mode === 'bridged') {
    if (!d.uplink.trim()) uplink = 'A bridged network needs a host interface (one without an address).';
    else if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(d.uplink.trim())) uplink = 'An interface name of at most 15 characters ("ip link" lists them).';
  } else if (d.subnet.trim()) {
    subnet = subnetProblem(d.subnet);
  } else if (d.mode !== 'internal' || d.dhcpRange.trim()) {
    subnet = `A ${d.mode} network needs a subnet${d.mode === 'internal' ? ' for DHCP' : ''}, e.g. 10.80.0.0/24.`;
  }
  return { name, subnet, uplink };
}
