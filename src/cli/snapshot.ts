import { Command } from 'commander';
import type { Operation, Snapshot } from '../domain/types.js';
import { clientFor, globals, instancePath, mutate, print } from './common.js';
import { formatBytes as formatSize, renderList, type Column } from './output.js';

/** Bytes as a short human size (KiB/MiB/GiB): "93.9 MiB", "-" when unknown. */
export function formatBytes(n: number | undefined): string {
  if (n === undefined || n === null) return '-';
  if (n === 0) return '0';
  return formatSize(n, ' ');
}

export const SNAPSHOT_COLUMNS: Column<Snapshot>[] = [
  { header: 'NAME', value: (s) => s.name },
  { header: 'PARENT', value: (s) => s.parent },
  { header: 'CREATED', value: (s) => s.createdAt },
  { header: 'MEMORY', value: (s) => (s.withMemory ? `yes (${s.vmState})` : 'no') },
  { header: 'SIZE', value: (s) => (s.withMemory ? formatBytes(s.size) : '-') },
  { header: 'DESCRIPTION', value: (s) => s.description },
];

function snapshotPath(instance: string, snapshot?: string, ...rest: string[]): string {
  return snapshot === undefined ? instancePath(instance, 'snapshots') : instancePath(instance, 'snapshots', encodeURIComponent(snapshot), ...rest);
}

function resultOf<T>(metadata: unknown): T {
  const op = metadata as Operation;
  return (op && typeof op === 'object' && 'result' in op ? op.result : metadata) as T;
}

/** `vmkit snapshot create|list|restore|delete`: checkpoints of an instance. */
export function snapshotCommand(): Command {
  const cmd = new Command('snapshot').alias('snap').description('Snapshots (checkpoints) of an instance: disk, and memory when it runs');

  cmd
    .command('create')
    .description('Take a snapshot: disk + memory + device state of a running/paused instance, the disk of a stopped one')
    .argument('<instance>', 'instance name')
    .argument('<snapshot>', 'snapshot name')
    .option('--description <text>', 'a note kept with the snapshot')
    .option('--no-memory', 'disk only, without memory: crash-consistent for a running instance (like pulling the plug)')
    .option('--quiesce', "require the guest agent to freeze the guest's filesystems around the snapshot (fails without an agent)")
    .option('--no-quiesce', 'never freeze (default: a --no-memory snapshot is frozen when the guest agent answers, else crash-consistent; memory snapshots only with --quiesce)')
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (instance: string, snapshot: string, opts: { description?: string; memory: boolean; wait: boolean; quiesce?: boolean }, self: Command) => {
      const body: Record<string, unknown> = { name: snapshot };
      if (opts.description !== undefined) body.description = opts.description;
      if (!opts.memory) body.memory = false;
      if (opts.quiesce !== undefined) body.quiesce = opts.quiesce;
      await mutate(self, 'POST', snapshotPath(instance), body, {
        wait: opts.wait,
        done: (m) => {
          const r = resultOf<{ snapshot: Snapshot; durationMs: number }>(m);
          const s = r.snapshot;
          const what = s.withMemory ? 'disk + memory' : s.vmState === null && s.pausedMs > 0 ? 'disk only, crash-consistent' : 'disk only';
          const paused = s.withMemory || s.pausedMs > 0 ? `; guest paused ${s.pausedMs} ms` : '';
          const q = s.quiesced ? '; filesystems frozen by the guest agent' : s.quiesceNote ? `; not quiesced (${s.quiesceNote})` : '';
          return `Snapshot ${s.name} of ${instance} created (${what}) in ${r.durationMs} ms${paused}${q}.`;
        },
      });
    })
    .addHelpText(
      'after',
      `
Examples:
  vmkit snapshot create web1 before-upgrade --description "before apt upgrade"
  vmkit snapshot create web1 disk-only --no-memory`,
    );

  cmd
    .command('list')
    .alias('ls')
    .description('List the snapshots of an instance (oldest first)')
    .argument('<instance>', 'instance name')
    .action(async (instance: string, _opts: unknown, self: Command) => {
      const list = await clientFor(self).get<Snapshot[]>(snapshotPath(instance));
      print(renderList(list, globals(self).format, SNAPSHOT_COLUMNS));
    });

  cmd
    .command('restore')
    .description('Bring the instance back to a snapshot (running again if the snapshot holds memory)')
    .argument('<instance>', 'instance name')
    .argument('<snapshot>', 'snapshot name')
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (instance: string, snapshot: string, opts: { wait: boolean }, self: Command) => {
      await mutate(
        self,
        'POST',
        snapshotPath(instance, snapshot, 'restore'),
        {},
        {
          wait: opts.wait,
          done: (m) => {
            const r = resultOf<{ instance: { state: string }; durationMs: number }>(m);
            return `Instance ${instance} restored to snapshot ${snapshot} in ${r.durationMs} ms (now ${r.instance.state}).`;
          },
        },
      );
    })
    .addHelpText(
      'after',
      `
A disk-only snapshot is restored on a stopped instance only ("vmkit stop" first).

Example:
  vmkit snapshot restore web1 before-upgrade`,
    );

  cmd
    .command('delete')
    .alias('rm')
    .description('Delete a snapshot; its space is reclaimed and the other snapshots stay valid')
    .argument('<instance>', 'instance name')
    .argument('<snapshot>', 'snapshot name')
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (instance: string, snapshot: string, opts: { wait: boolean }, self: Command) => {
      await mutate(self, 'DELETE', snapshotPath(instance, snapshot), undefined, {
        wait: opts.wait,
        done: `Snapshot ${snapshot} of ${instance} deleted.`,
      });
    });
  return cmd;
}
