import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { vmkitError } from '../errors.js';
import type { StackPlan, StackView } from '../wire/stack.js';
import { clientFor, globals, positiveInt, print } from './common.js';
import type { VmkitClient } from './client.js';
import { renderData, renderFields, renderList, type Field } from './output.js';

function stackPath(name?: string, ...rest: string[]): string {
  return ['/1.0/stacks', ...(name === undefined ? [] : [encodeURIComponent(name)]), ...rest].join('/');
}

/** The stack file's text: a path, or "-" for standard input. */
function readStackFile(file: string): string {
  try {
    return readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw vmkitError('VMKIT_FILE_NOT_FOUND', `Cannot read the stack file ${file}: ${(err as Error).message}`, {
      hint: 'Give the path of a stack file (YAML), e.g. -f stack.yaml.',
    });
  }
}

export function renderPlan(plan: StackPlan, verb: string): string {
  if (!plan.changed) return `Stack ${plan.stack}: no changes.`;
  return [`Stack ${plan.stack}: ${verb}`, ...plan.changes.map((c) => `  ${c}`)].join('\n');
}

export function stackFields(s: StackView): Field[] {
  const fields: Field[] = [
    ['Name', s.name],
    ['Generation', String(s.generation)],
    ['Ready', s.deleting ? 'deleting' : s.ready ? 'yes' : 'no'],
    ['Rollback', s.hasPrevious ? 'possible (vmkit stack rollback)' : 'no previous spec'],
  ];
  for (const svc of s.services) {
    const addr = [svc.port !== undefined ? `port ${svc.port}` : '', svc.address ? `address ${svc.address}` : ''].filter(Boolean).join(', ');
    fields.push([`Service ${svc.name}`, `${svc.image}, ${svc.ready}/${svc.replicas} ready, ${svc.phase}${addr ? `, ${addr}` : ''}`]);
    if (svc.roll) fields.push(['  Roll', `${svc.roll.from.join(', ')} → ${svc.roll.to}: ${svc.roll.updated}/${svc.roll.total}`]);
    if (svc.message) fields.push(['  Message', svc.message]);
    fields.push([
      '  Replicas',
      svc.members.map((m) =>
        [
          m.instance,
          m.image,
          m.state,
          m.ipv4 ?? '-',
          ...(m.host ? [`on ${m.host}${m.endpoint ? ` via ${m.endpoint}` : ''}`] : []),
          m.health,
          m.serving ? 'serving' : 'not serving',
          m.lastError ?? '',
        ]
          .join('  ')
          .trim(),
      ),
    ]);
  }
  return fields;
}

const COLUMNS = [
  { header: 'NAME', value: (s: StackView) => s.name },
  { header: 'SERVICES', value: (s: StackView) => s.services.map((x) => `${x.name} ${x.ready}/${x.replicas}`).join(', ') },
  {
    header: 'STATE',
    value: (s: StackView) => (s.deleting ? 'deleting' : s.ready ? 'ready' : [...new Set(s.services.map((x) => x.phase).filter((p) => p !== 'steady'))].join(', ')),
  },
  { header: 'GENERATION', value: (s: StackView) => s.generation },
];

/** Polls the stack until every service is steady; a stopped roll or the timeout is an error. */
async function waitReady(client: VmkitClient, name: string, timeoutSec: number): Promise<StackView> {
  const deadline = Date.now() + timeoutSec * 1000;
  for (;;) {
    const s = await client.get<StackView>(stackPath(name));
    if (s.ready) return s;
    const failed = s.services.find((x) => x.phase === 'failed');
    if (failed)
      throw vmkitError('VMKIT_INVALID_STATE', `Stack ${name}, service ${failed.name}: ${failed.message ?? 'the roll stopped'}`, {
        hint: `"vmkit stack rollback ${name}" returns to the previous spec.`,
      });
    if (Date.now() > deadline) {
      throw vmkitError(
        'VMKIT_TIMEOUT',
        `Stack ${name} was not ready within ${timeoutSec} s (${s.services.map((x) => `${x.name} ${x.ready}/${x.replicas} ${x.phase}`).join(', ')}).`,
        {
          hint: `"vmkit stack show ${name}" shows each replica's state and health.`,
        },
      );
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function finish(self: Command, plan: StackPlan, verb: string, wait: boolean, timeout: number): Promise<void> {
  const format = globals(self).format;
  const view = wait && plan.changed && verb !== 'deleted' ? await waitReady(clientFor(self), plan.stack, timeout) : undefined;
  if (format === 'json' || format === 'yaml') print(renderData(view ? { ...plan, view } : plan, format));
  else print(renderPlan(plan, verb) + (view ? `\nStack ${plan.stack} is ready.` : ''));
}

/** `vmkit apply -f stack.yaml`. */
export function applyCommand(): Command {
  return new Command('apply')
    .description('Apply a stack file: networks and services with replicas, a load-balanced service address, health checks, rolling updates (doc/stacks.md)')
    .requiredOption('-f, --file <file>', 'the stack file (YAML), or - for standard input')
    .option('--wait', 'wait until every service is ready (all replicas healthy, no roll in progress)')
    .option('--timeout <seconds>', 'with --wait: give up after this long', positiveInt('--timeout'), 600)
    .addHelpText('after', '\nExamples:\n  vmkit apply -f shop.yaml --wait\n  vmkit stack diff -f shop.yaml')
    .action(async (opts: { file: string; wait?: boolean; timeout: number }, self: Command) => {
      const plan = await clientFor(self).post<StackPlan>(stackPath(), { file: readStackFile(opts.file) });
      await finish(self, plan, 'applied', opts.wait === true, opts.timeout);
    });
}

/** `vmkit stack list|show|diff|delete|rollback`. */
export function stackCommand(): Command {
  const cmd = new Command('stack').description('Stacks made by "vmkit apply": list, show, diff, delete, rollback');
  cmd
    .command('list')
    .alias('ls')
    .description('List stacks with their services (ready/wanted replicas)')
    .action(async (_o: unknown, self: Command) => {
      print(renderList(await clientFor(self).get<StackView[]>(stackPath()), globals(self).format, COLUMNS));
    });
  cmd
    .command('show')
    .alias('info')
    .description('Show a stack: services, replicas with their health, the roll in progress')
    .argument('<name>', 'stack name')
    .action(async (name: string, _o: unknown, self: Command) => {
      const s = await clientFor(self).get<StackView>(stackPath(name));
      const format = globals(self).format;
      if (format === 'json' || format === 'yaml') print(renderData(s, format));
      else print(renderFields(stackFields(s)));
    });
  cmd
    .command('diff')
    .description('Print what "vmkit apply" of a file would change (nothing is changed)')
    .requiredOption('-f, --file <file>', 'the stack file (YAML), or - for standard input')
    .action(async (opts: { file: string }, self: Command) => {
      const plan = await clientFor(self).post<StackPlan>(stackPath(undefined, 'diff'), { file: readStackFile(opts.file) });
      const format = globals(self).format;
      if (format === 'json' || format === 'yaml') print(renderData(plan, format));
      else print(renderPlan(plan, 'apply would change'));
    });
  cmd
    .command('delete')
    .alias('rm')
    .description('Delete a stack: its service addresses, its replicas and the networks it made')
    .argument('<name>', 'stack name')
    .action(async (name: string, _o: unknown, self: Command) => {
      const plan = await clientFor(self).delete<StackPlan>(stackPath(name));
      await finish(self, plan, 'deleted', false, 0);
    });
  cmd
    .command('rollback')
    .description('Return a stack to its spec before the last apply (e.g. after a roll that stopped)')
    .argument('<name>', 'stack name')
    .option('--wait', 'wait until every service is ready')
    .option('--timeout <seconds>', 'with --wait: give up after this long', positiveInt('--timeout'), 600)
    .action(async (name: string, opts: { wait?: boolean; timeout: number }, self: Command) => {
      const plan = await clientFor(self).post<StackPlan>(stackPath(name, 'rollback'));
      await finish(self, plan, 'rolled back', opts.wait === true, opts.timeout);
    });
  return cmd;
}
