import { Command, Option } from 'commander';
import { VmkitError } from '../errors.js';
import type { MigrationPlan } from '../cluster/types.js';
import { clientFor, globals, instancePath, mutate, positiveInt, print } from './common.js';
import { renderData } from './output.js';

interface MigrateOptions {
  to?: string;
  mode?: string;
  check?: boolean;
  cancel?: boolean;
  downtime?: number;
  bandwidth?: number;
  wait: boolean;
}

export function renderPlan(p: MigrationPlan): string {
  const head = `${p.instance}: ${p.from} -> ${p.to}, mode ${p.mode}${p.sharedStorage ? ' (shared storage: memory only)' : ''}`;
  if (p.ok) return `${head}\nNo blockers: the migration can go ahead.`;
  return [`${head}`, `${p.blockers.length} blocker(s):`, ...p.blockers.map((b) => `  - [${b.check}] ${b.message}`)].join('\n');
}

/** `vmkit migrate NAME --to HOST [--mode …] [--check] | --cancel`. */
export function migrateCommand(): Command {
  return new Command('migrate')
    .description('Move an instance to another cluster host (live when it runs)')
    .argument('<name>', 'instance name')
    .option('--to <host>', 'the target host')
    .addOption(new Option('--mode <mode>', 'live (shared storage), live-copy (storage copied while it runs), suspend, cold').choices(['cold', 'suspend', 'live', 'live-copy']))
    .option('--check', 'pre-flight only: list every blocker, move nothing (exit 1 when blocked)')
    .option('--cancel', 'cancel the running migration (the source keeps running)')
    .option('--downtime <ms>', 'live: the longest pause QEMU may take at switch-over (default 50)', positiveInt('--downtime'))
    .option('--bandwidth <MiB/s>', 'live: cap the migration bandwidth', positiveInt('--bandwidth'))
    .option('--no-wait', 'return once the operation is accepted')
    .action(async (name: string, opts: MigrateOptions, self: Command) => {
      if (opts.cancel) {
        await mutate(self, 'DELETE', instancePath(name, 'migrate'), undefined, { done: `Migration of ${name} cancelled; it keeps running where it was.` });
        return;
      }
      if (!opts.to) throw new VmkitError('VMKIT_INVALID_ARGUMENT', 'Say where to: --to HOST.', { hint: '"vmkit cluster list" shows the hosts.' });
      const body: Record<string, unknown> = { to: opts.to };
      if (opts.mode) body.mode = opts.mode;
      if (opts.downtime) body.downtimeMs = opts.downtime;
      if (opts.bandwidth) body.bandwidthMiBs = opts.bandwidth;
      if (opts.check) {
        const plan = await clientFor(self).post<MigrationPlan>(instancePath(name, 'migrate'), { ...body, check: true });
        const format = globals(self).format;
        print(format === 'json' || format === 'yaml' ? renderData(plan, format) : renderPlan(plan));
        if (!plan.ok) process.exitCode = 1;
        return;
      }
      await mutate(self, 'POST', instancePath(name, 'migrate'), body, {
        wait: opts.wait,
        done: (r) => {
          const x = (r as { result?: { mode: string; totalTimeMs: number; downtimeMs?: number } }).result;
          return `Instance ${name} now runs on ${opts.to}${x ? ` (${x.mode}, ${(x.totalTimeMs / 1000).toFixed(1)} s${x.downtimeMs !== undefined ? `, downtime ${x.downtimeMs} ms` : ''})` : ''}.`;
        },
      });
    })
    .addHelpText(
      'after',
      `
Examples:
  vmkit migrate web1 --to host-b --check
  vmkit migrate web1 --to host-b
  vmkit migrate web1 --to host-b --mode live-copy --downtime 100
  vmkit migrate web1 --to host-b --mode cold
  vmkit migrate web1 --cancel`,
    );
}
