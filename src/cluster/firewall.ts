import { run } from '../util/exec.js';
import { nftStdin } from '../network/nftables.js';

/**
 * Ports a migration listens on (QEMU's incoming migration, the NBD export) accept only the
 * peer host: table `inet vmkit-migration` drops every other source for them, and the rule
 * goes away when the migration ends. The table holds nothing else, so it is rewritten whole.
 */
const TABLE = 'vmkit-migration';
const open = new Map<number, string>();

/**
 * The `nft -f` script for the open ports (port -> peer IPv4): delete-and-create in one
 * transaction, so the table is replaced atomically — or only removed when no port is open.
 */
export function renderMigrationRuleset(ports: ReadonlyMap<number, string>): string {
  const lines = [`table inet ${TABLE}`, `delete table inet ${TABLE}`];
  if (ports.size > 0) {
    lines.push(`table inet ${TABLE} {`, '  chain input {', '    type filter hook input priority -5; policy accept;');
    for (const [port, peer] of [...ports].sort((a, b) => a[0] - b[0])) {
      lines.push(`    tcp dport ${port} ip saddr != ${peer} drop`);
      lines.push(`    tcp dport ${port} ip6 nexthdr tcp drop`);
    }
    lines.push('  }', '}');
  }
  return lines.join('\n') + '\n';
}

let chain: Promise<unknown> = Promise.resolve();

function apply(): Promise<void> {
  return nftStdin(renderMigrationRuleset(open));
}

function serial(fn: () => Promise<void>): Promise<void> {
  // An earlier change that failed was reported to its own caller; this one runs regardless.
  const next = chain.catch(() => undefined).then(fn);
  chain = next;
  return next;
}

export function openPeerPort(port: number, peerIp: string): Promise<void> {
  return serial(async () => {
    open.set(port, peerIp);
    await apply();
  });
}

export function closePeerPort(port: number): Promise<void> {
  return serial(async () => {
    if (!open.delete(port)) return;
    await apply();
  });
}

/**
 * Daemon start: rules a dead daemon left for its migrations go (the migrations themselves
 * are settled by the recovery). A host that never migrated has no table and is not touched.
 */
export function resetPeerPorts(): Promise<void> {
  return serial(async () => {
    open.clear();
    // nft cannot run at all: there is no table to reset (opening a port reports the cause).
    const found = await run(['nft', 'list', 'table', 'inet', TABLE], { allowFailure: true, errorCode: 'VMKIT_NETWORK_FAILED' }).catch(() => undefined);
    if (found?.code === 0) await apply();
  });
}
