import { Command, Option } from 'commander';
import type { HostView } from '../cluster/types.js';
import { clientFor, globals, mutate, print } from './common.js';
import { formatMiB, renderInfo, renderList } from './output.js';

const HOST_COLUMNS = [
  { header: 'NAME', value: (h: HostView) => (h.self ? `${h.name} *` : h.name) },
  { header: 'ADDRESS', value: (h: HostView) => h.address },
  { header: 'STATE', value: (h: HostView) => h.state },
  { header: 'CPUS', value: (h: HostView) => h.cpus },
  {
    header: 'MEMORY FREE',
    value: (h: HostView) => `${formatMiB(Math.max(0, Math.min(h.memoryFreeMiB, h.memoryTotalMiB - h.memoryAssignedMiB)))} / ${formatMiB(h.memoryTotalMiB)}`,
  },
  { header: 'VMS', value: (h: HostView) => h.instances },
  { header: 'QEMU', value: (h: HostView) => `${h.qemuVersion} ${h.accel}` },
  { header: 'SHARED', value: (h: HostView) => h.sharedStorage?.path ?? '-' },
];

interface JoinOptions {
  etcd: string;
  name: string;
  address: string;
}

function joinBody(o: JoinOptions, create: boolean): Record<string, unknown> {
  return {
    etcd: o.etcd
      .split(',')
      .map((e) => e.trim())
      .filter(Boolean),
    name: o.name,
    address: o.address,
    create,
  };
}

function joinVerb(verb: 'init' | 'join'): Command {
  return new Command(verb)
    .description(verb === 'init' ? 'Put this host in the cluster stored in etcd (creating the cluster if there is none)' : 'Join the existing cluster stored in etcd')
    .requiredOption('--etcd <urls>', 'etcd client URL(s), comma-separated: http://HOST:2379')
    .requiredOption('--name <host>', "this host's name in the cluster")
    .requiredOption('--address <addr:port>', "where the other hosts reach this host's API (TCP; the cluster token guards it)")
    .action(async (opts: JoinOptions, self: Command) => {
      await mutate(self, 'POST', '/1.0/cluster', joinBody(opts, verb === 'init'), { done: `Host ${opts.name} is in the cluster (etcd ${opts.etcd}).` });
    });
}

/** `vmkit cluster init|join|list|evacuate|leave|forget`. */
export function clusterCommand(): Command {
  const cmd = new Command('cluster').description('Run vmkit on several hosts whose state lives in etcd');
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit cluster init --etcd http://10.0.0.10:2379 --name host-a --address 10.0.0.1:8443
  vmkit cluster join --etcd http://10.0.0.10:2379 --name host-b --address 10.0.0.2:8443
  vmkit cluster list
  vmkit launch appliance web1 --target host-b
  vmkit migrate web1 --to host-a --check
  vmkit cluster evacuate host-a`,
  );
  cmd.addCommand(joinVerb('init'));
  cmd.addCommand(joinVerb('join'));
  cmd
    .command('list')
    .alias('ls')
    .description('Hosts: address, state (lease alive or dead), CPUs, free memory, VMs, QEMU')
    .action(async (_o: unknown, self: Command) => {
      print(renderList(await clientFor(self).get<HostView[]>('/1.0/cluster/hosts'), globals(self).format, HOST_COLUMNS));
    });
  cmd
    .command('info')
    .description("This host's membership")
    .action(async (_o: unknown, self: Command) => {
      const c = await clientFor(self).get<Record<string, unknown>>('/1.0/cluster');
      print(
        renderInfo(c, globals(self).format, () => [
          ['Joined', c.joined ? 'yes' : 'no'],
          ['Name', c.name as string | undefined],
          ['Address', c.address as string | undefined],
          ['etcd', ((c.etcd as string[] | undefined) ?? []).join(', ') || undefined],
          ['Cluster id', c.clusterId as string | undefined],
        ]),
      );
    });
  cmd
    .command('evacuate')
    .description('Migrate every instance away from a host (maintenance)')
    .argument('<host>', 'the host to empty')
    .addOption(new Option('--mode <mode>', 'migration mode for every instance (default: live when running)').choices(['cold', 'suspend', 'live', 'live-copy']))
    .option('--no-wait', 'return once the operation is accepted')
    .action(async (host: string, opts: { mode?: string; wait: boolean }, self: Command) => {
      await mutate(self, 'POST', `/1.0/cluster/hosts/${encodeURIComponent(host)}/evacuate`, opts.mode ? { mode: opts.mode } : {}, {
        wait: opts.wait,
        done: (r) =>
          `Host ${host} evacuated: ${((r as { result?: { moved?: Array<{ instance: string; to: string }> } }).result?.moved ?? []).map((m) => `${m.instance} -> ${m.to}`).join(', ') || 'nothing to move'}.`,
      });
    });
  cmd
    .command('leave')
    .description('Take this host out of the cluster (it must own no instance)')
    .action(async (_o: unknown, self: Command) => {
      await mutate(self, 'DELETE', '/1.0/cluster', undefined, { done: 'This host left the cluster.' });
    });
  cmd
    .command('forget')
    .description('Remove a dead host from the list')
    .argument('<host>', 'host name')
    .action(async (host: string, _o: unknown, self: Command) => {
      await mutate(self, 'DELETE', `/1.0/cluster/hosts/${encodeURIComponent(host)}`, undefined, { done: `Host ${host} forgotten.` });
    });
  return cmd;
}
