import { run } from '../util/exec.js';
import { listLinks } from './bridge.js';
import { ipToInt } from './network.js';

function inSubnet(ip: string, local: string, prefix: number): boolean {
  const size = 2 ** (32 - prefix);
  return Math.floor(ipToInt(ip) / size) === Math.floor(ipToInt(local) / size);
}

/**
 * Floating addresses: a port forward can listen on an address that follows its instance
 * around a cluster. The host running the instance holds the address (a /32 on the interface
 * whose subnet contains it) and announces it with gratuitous ARP, so clients' next packets
 * go to the new host the moment a migration switches over; the old host then drops it.
 */
const HINT = 'Install iproute2 and iputils-arping, and run the daemon as root.';

async function linkFor(address: string): Promise<string | undefined> {
  const links = await listLinks();
  const holder = links.find((l) => l.addresses.some((a) => a.family === 'inet' && a.local === address));
  if (holder) return holder.ifname;
  const match = links.find((l) => l.addresses.some((a) => a.family === 'inet' && a.prefixlen < 32 && inSubnet(address, a.local, a.prefixlen)));
  return match?.ifname;
}

/** Holds `address` on this host and tells the neighbours (unsolicited ARP). */
export async function claimAddress(address: string): Promise<void> {
  const dev = await linkFor(address);
  if (!dev) return;
  await run(['ip', 'addr', 'replace', `${address}/32`, 'dev', dev], { errorCode: 'VMKIT_NETWORK_FAILED', hint: HINT, timeoutMs: 10_000 });
  // Announcements now and over the next 2 s: Linux neighbours ignore an update that comes
  // within 1 s (locktime) of the previous one, and one lost frame must not strand clients.
  await run(['arping', '-U', '-c', '1', '-I', dev, address], { allowFailure: true, timeoutMs: 3_000 }).catch(() => undefined);
  void run(['arping', '-U', '-c', '3', '-I', dev, address], { allowFailure: true, timeoutMs: 6_000 }).catch(() => undefined);
}

export async function releaseAddress(address: string): Promise<void> {
  const links = await listLinks();
  for (const l of links) {
    if (l.addresses.some((a) => a.family === 'inet' && a.local === address && a.prefixlen === 32)) {
      await run(['ip', 'addr', 'del', `${address}/32`, 'dev', l.ifname], { allowFailure: true, timeoutMs: 10_000 });
    }
  }
}
