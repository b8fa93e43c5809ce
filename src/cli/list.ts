import { Command } from 'commander';
import type { InstanceView } from '../domain/types.js';
import { clientFor, globals, print } from './common.js';
import { formatForward, formatMiB, renderList, type Column } from './output.js';

/** The columns of `vmkit list`: what you need to reach and size up each instance. */
export const INSTANCE_COLUMNS: Column<InstanceView>[] = [
  { header: 'NAME', value: (i) => i.name },
  // A guest QEMU paused on a disk I/O error says so: it needs space (or a fix), then `resume`.
  { header: 'STATE', value: (i) => (i.stateReason === 'io-error' ? `${i.state} (io-error)` : i.state) },
  { header: 'IMAGE', value: (i) => i.image },
  { header: 'CPUS', value: (i) => i.cpus },
  { header: 'MEMORY', value: (i) => formatMiB(i.memoryMiB) },
  // Where an address comes from when it is not vmkit's own: the guest agent, or user-mode NAT's fixed lease.
  {
    header: 'IPV4',
    value: (i) => (i.nics ?? []).flatMap((n) => (n.ipv4 ? [n.ipv4Source === 'agent' || n.ipv4Source === 'assumed' ? `${n.ipv4} (${n.ipv4Source})` : n.ipv4] : [])).join(','),
  },
  { header: 'FORWARDS', value: (i) => (i.forwards ?? []).map(formatForward).join(',') },
];

/** `vmkit list`: every instance, one line each. */
export function listCommand(): Command {
  return new Command('list')
    .alias('ls')
    .description('List instances')
    .action(async (_opts: unknown, self: Command) => {
      const client = clientFor(self);
      const instances = await client.get<InstanceView[]>('/1.0/instances');
      // In a cluster every host's instances are listed: say where each runs.
      const cluster = await client.get<{ joined?: boolean }>('/1.0/cluster').catch(() => ({ joined: false }));
      const columns = cluster.joined ? [INSTANCE_COLUMNS[0]!, { header: 'HOST', value: (i: InstanceView) => i.host }, ...INSTANCE_COLUMNS.slice(1)] : INSTANCE_COLUMNS;
      print(renderList(instances, globals(self).format, columns));
    })
    .addHelpText(
      'after',
      `
Examples:
  vmkit list
  vmkit list --format json | jq -r '.[] | select(.state == "running") | .name'`,
    );
}
