import { Command } from 'commander';
import { instancePath, mutate, positiveInt } from './common.js';

type Action = 'start' | 'stop' | 'restart' | 'pause' | 'resume' | 'suspend';

const DONE: Record<Action, string> = {
  start: 'started',
  stop: 'stopped',
  restart: 'restarted',
  pause: 'paused',
  resume: 'resumed',
  suspend: 'suspended (state saved to disk; "vmkit start" resumes it)',
};

const DESCRIPTION: Record<Action, string> = {
  start: 'Start an instance',
  stop: 'Stop an instance: ACPI power button, forced off after --timeout seconds (then it says so and exits 3)',
  restart: 'Restart an instance',
  pause: 'Pause an instance (its vCPUs stop; memory is kept)',
  resume: 'Resume a paused instance',
  suspend: 'Suspend an instance: save memory and device state to its disk and end QEMU; start resumes it',
};

function stateCommand(action: Action): Command {
  const cmd = new Command(action).description(DESCRIPTION[action]).argument('<name>', 'instance name').option('--no-wait', 'return once the operation is accepted, print its id');
  if (action === 'stop' || action === 'restart') {
    cmd
      .option('-f, --force', 'stop at once, without asking the guest')
      .option('--timeout <sec>', 'seconds to wait for the guest to power off before forcing (default 30)', positiveInt('--timeout'));
  }
  cmd.action(async (name: string, opts: { force?: boolean; timeout?: number; wait: boolean }, self: Command) => {
    const body: Record<string, unknown> = { action };
    if (opts.force) body.force = true;
    if (opts.timeout !== undefined) body.timeout = opts.timeout;
    await mutate(self, 'PUT', instancePath(name, 'state'), body, {
      wait: opts.wait,
      done: (result) => {
        // A graceful stop that ended in a forced power-off did stop the VM, but not cleanly:
        // say so and exit 3, so scripts can tell it from a clean shutdown.
        // The answer is the finished operation; its result is the instance.
        const inst = ((result as { result?: unknown } | undefined)?.result ?? result) as { stateReason?: string } | undefined;
        const reason = inst?.stateReason;
        if (action === 'stop' && reason?.startsWith('forced off')) {
          process.exitCode = 3;
          return `Instance ${name} ${reason} (the ACPI power button was ignored; its disks may need a check).`;
        }
        return `Instance ${name} ${DONE[action]}.`;
      },
    });
  });
  cmd.addHelpText(
    'after',
    action === 'stop'
      ? `
Examples:
  vmkit stop web1
  vmkit stop web1 --timeout 10
  vmkit stop web1 --force`
      : action === 'resume'
        ? `
An instance QEMU paused on a disk I/O error shows "paused (io-error)" (most often the disk
under the data folder is full): make room, then resume it; the failed request is retried.
If there is still no room, it pauses again.

Example:
  vmkit resume web1`
        : `
Example:
  vmkit ${action} web1`,
  );
  return cmd;
}

/** `vmkit start|stop|restart|pause|resume|suspend NAME`: PUT /1.0/instances/NAME/state. */
export function stateCommands(): Command[] {
  return (['start', 'stop', 'restart', 'pause', 'resume', 'suspend'] as const).map(stateCommand);
}
