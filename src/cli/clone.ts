import { Command } from 'commander';
import { instancePath, mutate } from './common.js';

/** `vmkit clone SOURCE NAME [--full]`: a new instance from a stopped one. */
export function cloneCommand(): Command {
  const cmd = new Command('clone')
    .description('Clone a stopped instance (linked by default: instant, shares the source disk; --full: independent copy)')
    .argument('<source>', 'instance to clone (must be stopped)')
    .argument('<name>', 'name of the new instance')
    .option('--full', 'copy the whole disk (flattened) instead of a linked clone')
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (source: string, name: string, opts: { full?: boolean; wait: boolean }, self: Command) => {
      const body: Record<string, unknown> = { name };
      if (opts.full) body.full = true;
      await mutate(self, 'POST', instancePath(source, 'clone'), body, {
        wait: opts.wait,
        done: `Instance ${name} cloned from ${source} (${opts.full ? 'full copy' : 'linked clone'}).`,
      });
    });
  cmd.addHelpText(
    'after',
    `
A linked clone freezes the source disk as a read-only layer; the source cannot be deleted
while clones depend on it. Clones get new MAC addresses and no port forwards.

Examples:
  vmkit clone web1 web1-copy
  vmkit clone web1 web1-full --full`,
  );
  return cmd;
}
