import { Command } from 'commander';
import type { InstanceView } from '../domain/types.js';
import { clientFor, globals, print } from './common.js';
import { formatForward, formatMiB, renderList, type Column } from './output.js';

/** The columns of `vmkit list`: what you need to reach and size up each instance. */
export const INSTANCE_COLUMNS: Column<InstanceView>[] = [
  { header: 'NAME', value: (i) => i.name },
  { header: 'STATE', value: (i) => i.state },
  { header: 'IMAGE', value: (i) => i.image },
  { header: 'CPUS', value: (i) => i.cpus },
  { header: 'MEMORY', value: (i) => formatMiB(i.memoryMiB) },
  { header: 'IPV4', value: (i) => (i.nics ?? []).flatMap((n) => (n.ipv4 ? [n.ipv4] : [])).join(',') },
  { header: 'FORWARDS', value: (i) => (i.forwards ?? []).map(formatForward).join(',') },
];

/** `vmkit list`: every instance, one line each. */
export function listCommand(): Command {
  return new Command('list')
    .alias('ls')
    .description('List instances')
    .action(async (_opts: unknown, self: Command) => {
      const instances = await clientFor(self).get<InstanceView[]>('/1.0/instances');
      print(renderList(instances, globals(self).format, INSTANCE_COLUMNS));
    })
    .addHelpText(
      'after',
      `
Examples:
  vmkit list
  vmkit list --format json | jq -r '.[] | select(.state == "running") | .name'`,
    );
}
