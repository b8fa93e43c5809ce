import { Command } from 'commander';
import { instancePath, mutate } from './common.js';

/** `vmkit clone SOURCE NAME [--full] [--from-snapshot SNAP]`: a new instance from another. */
export function cloneCommand(): Command {
  const cmd = new Command('clone')
    .description('Clone an instance (linked by default: instant, shares the source disk; --full: independent copy)')
    .argument('<source>', 'instance to clone (stopped, unless --from-snapshot)')
    .argument('<name>', 'name of the new instance')
    .option('--full', 'copy the whole disk (flattened) instead of a linked clone')
    .option('--from-snapshot <snapshot>', "the source's disk as it was at this snapshot (the source may run)")
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (source: string, name: string, opts: { full?: boolean; fromSnapshot?: string; wait: boolean }, self: Command) => {
      const body: Record<string, unknown> = { name };
      if (opts.full) body.full = true;
      if (opts.fromSnapshot !== undefined) body.fromSnapshot = opts.fromSnapshot;
      const from = opts.fromSnapshot ? ` at snapshot ${opts.fromSnapshot}` : '';
      await mutate(self, 'POST', instancePath(source, 'clone'), body, {
        wait: opts.wait,
        done: `Instance ${name} cloned from ${source}${from} (${opts.full ? 'full copy' : 'linked clone'}).`,
      });
    });
  cmd.addHelpText(
    'after',
    `
A linked clone freezes the source disk as a read-only layer; the source cannot be deleted
while clones depend on it. A clone from a snapshot holds only what differs from the source's
read-only base. Clones get new MAC addresses and no port forwards; memory is not cloned
(the clone boots from the snapshot's disk).

Examples:
  vmkit clone web1 web1-copy
  vmkit clone web1 web1-full --full
  vmkit clone web1 web2 --from-snapshot before-upgrade`,
  );
  return cmd;
}
