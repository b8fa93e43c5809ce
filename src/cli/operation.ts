import { Command } from 'commander';
import type { Operation } from '../domain/types.js';
import { clientFor, globals, print, waitWithProgress } from './common.js';
import { describeProgress, renderData, renderInfo, renderList, type Field } from './output.js';

function opPath(id: string): string {
  return `/1.0/operations/${encodeURIComponent(id)}`;
}

/** The readable view of one operation. */
export function operationFields(op: Operation): Field[] {
  return [
    ['ID', op.id],
    ['Kind', op.kind],
    ['Description', op.description],
    ['Target', op.target],
    ['Status', op.status],
    ['Progress', describeProgress(op.progress)],
    ['Cancellable', op.mayCancel ? 'yes' : 'no'],
    ['Created', op.createdAt],
    ['Updated', op.updatedAt],
    ['Error', op.error ? `${op.error.message} (${op.error.code})` : undefined],
    ['Hint', op.error?.hint],
  ];
}

/** `vmkit operation list|show|wait|cancel`: the daemon's long-running work. */
export function operationCommand(): Command {
  const cmd = new Command('operation').alias('op').description('Inspect, wait for and cancel operations');
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit operation list
  vmkit launch appliance web1 --no-wait
  vmkit operation wait 3f2a9c1e-…
  vmkit operation cancel 3f2a9c1e-…`,
  );
  cmd
    .command('list')
    .alias('ls')
    .description('List operations, newest first')
    .action(async (_opts: unknown, self: Command) => {
      const ops = await clientFor(self).get<Operation[]>('/1.0/operations');
      print(
        renderList(ops, globals(self).format, [
          { header: 'ID', value: (o) => o.id },
          { header: 'KIND', value: (o) => o.kind },
          { header: 'TARGET', value: (o) => o.target },
          { header: 'STATUS', value: (o) => o.status },
          { header: 'PROGRESS', value: (o) => describeProgress(o.progress) },
          { header: 'CREATED', value: (o) => o.createdAt },
        ]),
      );
    });
  cmd
    .command('show')
    .alias('info')
    .description('Show one operation')
    .argument('<id>', 'operation id')
    .action(async (id: string, _opts: unknown, self: Command) => {
      const op = await clientFor(self).get<Operation>(opPath(id));
      print(renderInfo(op, globals(self).format, () => operationFields(op)));
    });
  cmd
    .command('wait')
    .description('Wait until an operation ends; fails with its error')
    .argument('<id>', 'operation id')
    .action(async (id: string, _opts: unknown, self: Command) => {
      const client = clientFor(self);
      const op = await waitWithProgress(client, await client.get<Operation>(opPath(id)));
      const format = globals(self).format;
      print(format === 'json' || format === 'yaml' ? renderData(op, format) : `Operation ${op.id} (${op.description}) succeeded.`);
    });
  cmd
    .command('cancel')
    .description('Cancel an operation; what it had done is undone')
    .argument('<id>', 'operation id')
    .action(async (id: string, _opts: unknown, self: Command) => {
      const result = await clientFor(self).delete(opPath(id));
      const format = globals(self).format;
      print(format === 'json' || format === 'yaml' ? renderData(result, format) : `Operation ${id} cancelled.`);
    });
  return cmd;
}
