import { Command } from 'commander';
import type { InstanceType } from '../domain/types.js';
import { clientFor, globals, print } from './common.js';
import { formatMiB, renderList } from './output.js';

/** `vmkit types`: the instance sizes `--type` accepts. */
export function typesCommand(): Command {
  return new Command('types')
    .description('List instance types (sizes for --type)')
    .action(async (_opts: unknown, self: Command) => {
      const types = await clientFor(self).get<InstanceType[]>('/1.0/types');
      print(
        renderList(types, globals(self).format, [
          { header: 'NAME', value: (t) => t.name },
          { header: 'CPUS', value: (t) => t.cpus },
          { header: 'MEMORY', value: (t) => formatMiB(t.memoryMiB) },
          { header: 'DESCRIPTION', value: (t) => t.description },
        ]),
      );
    })
    .addHelpText(
      'after',
      `
Example:
  vmkit types
  vmkit launch appliance web1 --type small`,
    );
}
