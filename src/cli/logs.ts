import { Command } from 'commander';
import { clientFor, instancePath, positiveInt } from './common.js';

/** The last `n` lines of a text (a final newline does not count as an empty line). */
export function lastLines(text: string, n: number): string {
  const lines = text.split('\n');
  const trailing = lines.at(-1) === '' ? 1 : 0;
  return lines.slice(Math.max(0, lines.length - trailing - n)).join('\n');
}

/** `vmkit logs NAME [--tail N]`: what the guest printed on its serial console. */
export function logsCommand(): Command {
  return new Command('logs')
    .description("Print an instance's serial console output")
    .argument('<name>', 'instance name')
    .option('-n, --tail <n>', 'only the last N lines', positiveInt('--tail'))
    .action(async (name: string, opts: { tail?: number }, self: Command) => {
      // The log is bounded (8 MiB by default), so the lines are cut here, not by the API (its tail= counts bytes).
      const text = await clientFor(self).text(instancePath(name, 'logs'));
      process.stdout.write(opts.tail !== undefined ? lastLines(text, opts.tail) : text);
    })
    .addHelpText(
      'after',
      `
The daemon keeps at most 8 MiB of console output per instance (VMKIT_CONSOLE_LOG_MAX_BYTES on
the daemon), in console.log and console.log.1 in the instance's folder, also while the guest
runs; this prints both, oldest first.

Examples:
  vmkit logs web1
  vmkit logs web1 --tail 20`,
    );
}
