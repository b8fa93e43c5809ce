import { Command } from 'commander';
import { instancePath, mutate } from './common.js';

/** `vmkit delete NAME [--force]`: the daemon refuses a running instance unless forced. */
export function deleteCommand(): Command {
  return new Command('delete')
    .alias('rm')
    .description('Delete an instance and its disks')
    .argument('<name>', 'instance name')
    .option('-f, --force', 'stop it first when it is running')
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (name: string, opts: { force?: boolean; wait: boolean }, self: Command) => {
      const path = instancePath(name) + (opts.force ? '?force=true' : '');
      await mutate(self, 'DELETE', path, undefined, { wait: opts.wait, done: `Instance ${name} deleted.` });
    })
    .addHelpText(
      'after',
      `
Examples:
  vmkit delete web1           # refused while web1 runs
  vmkit delete web1 --force   # stops it first`,
    );
}
