import { run } from '../util/exec.js';
import { addHostAddress, deleteHostAddress, listLinks } from './bridge.js';
import { ipToInt } from './network.js';

/**
 * Floating addresses (`ip` itself runs in bridge.ts; this module runs arping and conntrack): a port forward can listen on an address that follows its instance
 * around a cluster. The host running the instance holds the address (a /32 on the interface
 * whose subnet contains it) and announces it with gratuitous ARP.
 *
 * The switch-over order (src/cluster/migration/) keeps the address on at most one host at
 * any instant: the source withdraws it (address, DNAT rule and the conntrack entries that
 * still point at its local copy of the guest) once QEMU has sent the last state, and the
 * target claims it after it took ownership. Two holders at once made clients whose ARP entry
 * still named the source reach a host that DNATs into a guest that no longer runs there.
 * A client whose neighbour entry is stale afterwards still gets through: the source no longer
 * owns the address and routes its packets on to the new holder.
 */
const HINT = 'Install iproute2, iputils-arping and conntrack, and run the daemon as root.';

function inSubnet(ip: string, local: string, prefix: number): boolean {
  const size = 2 ** (32 - prefix);
  return Math.floor(ipToInt(ip) / size) === Math.floor(ipToInt(local) / size);
}

/** Gratuitous ARP: a request now, then one a second (Linux neighbours honour a GARP at once). */
export function arpingArgv(dev: string, address: string, count: number): string[] {
  return ['arping', '-U', '-c', String(count), '-I', dev, address];
}

/** Deletes the conntrack entries of connections made to `address` (their NAT points here). */
export function conntrackFlushArgv(address: string): string[] {
  return ['conntrack', '-D', '--orig-dst', address];
}

async function linkFor(address: string): Promise<string | undefined> {
  const links = await listLinks();
  const holder = links.find((l) => l.addresses.some((a) => a.family === 'inet' && a.local === address));
  if (holder) return holder.ifname;
  const match = links.find((l) => l.addresses.some((a) => a.family === 'inet' && a.prefixlen < 32 && inSubnet(address, a.local, a.prefixlen)));
  return match?.ifname;
}

/**
 * Holds `address` on this host and starts announcing it. Returns once the address is
 * assigned (this host answers ARP for it from then on); the gratuitous ARPs go out in the
 * background, so a switch-over does not wait for them.
 */
export async function claimAddress(address: string, log: (msg: string) => void = () => undefined): Promise<void> {
  const dev = await linkFor(address);
  if (!dev) {
    log(`floating ${address}: no interface on its subnet, not claimed`);
    return;
  }
  await addHostAddress(dev, address);
  log(`floating ${address}: claimed on ${dev}`);
  // Three announcements, one a second: one lost frame must not strand clients.
  run(arpingArgv(dev, address, 3), { allowFailure: true, timeoutMs: 6_000 }).then(
    (r) => {
      if (r.code !== 0) log(`floating ${address}: arping exited ${r.code}: ${r.stderr.trim()}`);
    },
    (err: Error) => log(`floating ${address}: arping failed: ${err.message}`),
  );
}

/** Gives `address` up on this host (idempotent). */
export async function releaseAddress(address: string, log: (msg: string) => void = () => undefined): Promise<void> {
  const links = await listLinks();
  for (const l of links) {
    if (l.addresses.some((a) => a.family === 'inet' && a.local === address && a.prefixlen === 32)) {
      await deleteHostAddress(l.ifname, address);
      log(`floating ${address}: released from ${l.ifname}`);
    }
  }
}

/**
 * Forgets the connections clients made to `address` on this host: their entries DNAT to a
 * guest that now runs elsewhere, and would keep doing so for a client whose ARP entry still
 * names this host. Without them, such packets are routed on to the new holder.
 */
export async function forgetConnections(address: string, log: (msg: string) => void = () => undefined): Promise<void> {
  // conntrack exits 1 when no entry matched: not an error.
  const r = await run(conntrackFlushArgv(address), { allowFailure: true, errorCode: 'VMKIT_NETWORK_FAILED', hint: HINT, timeoutMs: 10_000 });
  const m = /(\d+) flow entries have been deleted/.exec(r.stderr);
  log(`floating ${address}: ${m ? m[1] : 0} tracked connections forgotten`);
}
