import { Command } from 'commander';
import { clientFor, instancePath, positiveInt } from './common.js';

/** `vmkit logs NAME [--tail N]`: what the guest printed on its serial console. */
export function logsCommand(): Command {
  return new Command('logs')
    .description("Print an instance's serial console output")
    .argument('<name>', 'instance name')
    .option('-n, --tail <n>', 'only the last N lines', positiveInt('--tail'))
    .action(async (name: string, opts: { tail?: number }, self: Command) => {
      const query = opts.tail !== undefined ? `?tail=${opts.tail}` : '';
      process.stdout.write(await clientFor(self).text(instancePath(name, 'logs') + query));
    })
    .addHelpText(
      'after',
      `
Examples:
  vmkit logs web1
  vmkit logs web1 --tail 20`,
    );
}
