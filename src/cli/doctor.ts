import { Command } from 'commander';
import { clientFor, globals, print } from './common.js';
import { renderData, renderTable } from './output.js';

/** One host check as GET /1.0/doctor reports it; `required: false` marks advice only. */
export interface DoctorCheck {
  name: string;
  ok: boolean;
  detail?: string;
  hint?: string;
  required?: boolean;
}

/** A check fails the run unless the daemon says it is optional. */
export function failedRequired(checks: DoctorCheck[]): DoctorCheck[] {
  return checks.filter((c) => !c.ok && c.required !== false);
}

/** `vmkit doctor`: host checks; exits 3 when a required one fails so scripts can gate on it. */
export function doctorCommand(): Command {
  return new Command('doctor')
    .description('Check that this host can run vmkit instances (QEMU, KVM, disk …)')
    .action(async (_opts: unknown, self: Command) => {
      const report = await clientFor(self).get<{ checks: DoctorCheck[] }>('/1.0/doctor');
      const checks = report?.checks ?? [];
      const format = globals(self).format;
      if (format === 'json' || format === 'yaml') {
        print(renderData(report, format));
      } else {
        const status = (c: DoctorCheck): string => (c.ok ? 'ok' : c.required === false ? 'warn' : 'FAIL');
        let text = renderTable(
          ['CHECK', 'STATUS', 'DETAIL'],
          checks.map((c) => [c.name, status(c), c.detail]),
        );
        const hints = checks.filter((c) => !c.ok && c.hint);
        if (hints.length > 0) text += '\n' + hints.map((c) => `${c.name}: ${c.hint}`).join('\n') + '\n';
        print(text);
      }
      const failed = failedRequired(checks);
      if (failed.length > 0) {
        if (format !== 'json' && format !== 'yaml') {
          process.stderr.write(`${failed.length} required check${failed.length > 1 ? 's' : ''} failed: ${failed.map((c) => c.name).join(', ')}\n`);
        }
        process.exitCode = 3;
      }
    })
    .addHelpText(
      'after',
      `
Exits 3 when a required check fails. The "store" check lists rows of the daemon's database
it could not use (damaged JSON, required fields missing): they were moved to its quarantine
table at start-up so the daemon could start; the hint says how to read and drop them.

Example:
  vmkit doctor`,
    );
}
