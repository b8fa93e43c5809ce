import { writeFile, rm, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../util/exec.js';

/**
 * Ports a migration listens on (QEMU's incoming migration, the NBD export) accept only the
 * peer host: table `inet vmkit-migration` drops every other source for them, and the rule
 * goes away when the migration ends. The table holds nothing else, so it is rewritten whole.
 */
const TABLE = 'vmkit-migration';
const open = new Map<number, string>();

export function migrationRuleset(ports: ReadonlyMap<number, string>): string {
  const lines = [`table inet ${TABLE} {`, '  chain input {', '    type filter hook input priority -5; policy accept;'];
  for (const [port, peer] of [...ports].sort((a, b) => a[0] - b[0])) {
    lines.push(`    tcp dport ${port} ip saddr != ${peer} drop`);
    lines.push(`    tcp dport ${port} ip6 nexthdr tcp drop`);
  }
  lines.push('  }', '}');
  return lines.join('\n') + '\n';
}

let chain: Promise<unknown> = Promise.resolve();

async function apply(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'vmkit-nft-'));
  try {
    const file = join(dir, 'rules.nft');
    // Delete-and-create in one transaction: the table is replaced atomically.
    await writeFile(file, `table inet ${TABLE}\ndelete table inet ${TABLE}\n${open.size > 0 ? migrationRuleset(open) : ''}`);
    await run(['nft', '-f', file], { errorCode: 'VMKIT_NETWORK_FAILED', hint: 'Install nftables and run the daemon as root.', timeoutMs: 15_000 });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function serial(fn: () => Promise<void>): Promise<void> {
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
