import { readFileSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { vmkitError } from '../errors.js';
import type { HostView } from '../cluster/types.js';
import { clientFor, globals, mutate, print } from './common.js';
import { formatMiB, renderData, renderInfo, renderList } from './output.js';

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

interface InitOptions {
  etcd: string;
  name: string;
  address: string;
  insecureEtcd?: boolean;
  caCert?: string;
  caKey?: string;
}

function readPem(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `Cannot read the ${what} ${path}: ${(err as Error).message}.`, { hint: 'Give a readable PEM file.' });
  }
}

function initBody(o: InitOptions): Record<string, unknown> {
  if (Boolean(o.caCert) !== Boolean(o.caKey)) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', '--ca-cert and --ca-key go together.', { hint: 'Give both files of the CA, or neither to let vmkit make one.' });
  }
  return {
    etcd: o.etcd
      .split(',')
      .map((e) => e.trim())
      .filter(Boolean),
    name: o.name,
    address: o.address,
    create: true,
    ...(o.insecureEtcd ? { insecureEtcd: true } : {}),
    ...(o.caCert && o.caKey ? { caCert: readPem(o.caCert, 'CA certificate'), caKey: readPem(o.caKey, 'CA key') } : {}),
  };
}

/** `1h`, `30m`, `45s`, `2d` or plain seconds. */
function duration(value: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(value.trim());
  if (!m || Number(m[1]) <= 0) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `--expires "${value}" is not a duration.`, { hint: 'Examples: --expires 30m, --expires 1h, --expires 2d' });
  }
  return Number(m[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
}

function initVerb(): Command {
  return new Command('init')
    .description("Create the cluster: its CA (kept in the data folder of the hosts, never in etcd), this host's certificate, the cluster record in etcd")
    .requiredOption('--etcd <urls>', 'etcd client URL(s), comma-separated: https://HOST:2379')
    .requiredOption('--name <host>', "this host's name in the cluster")
    .requiredOption('--address <addr:port>', 'where the other hosts reach this host (its own port: peers use mutual TLS there)')
    .option('--insecure-etcd', 'allow http:// etcd URLs (no TLS, no client certificates: a private test network only)')
    .option('--ca-cert <file>', 'adopt this CA (PEM) instead of making one (with --ca-key)')
    .option('--ca-key <file>', "the adopted CA's private key (PEM)")
    .action(async (opts: InitOptions, self: Command) => {
      await mutate(self, 'POST', '/1.0/cluster', initBody(opts), { done: `Host ${opts.name} created the cluster (etcd ${opts.etcd}).` });
    });
}

function joinVerb(): Command {
  return new Command('join')
    .description('Join a cluster with the one-time token "vmkit cluster add HOST" printed on a member')
    .argument('<token>', 'the join token (or - to read it from stdin)')
    .requiredOption('--address <addr:port>', 'where the other hosts reach this host (its own port: peers use mutual TLS there)')
    .action(async (token: string, opts: { address: string }, self: Command) => {
      const text = token === '-' ? readFileSync(0, 'utf8').trim() : token;
      await mutate(self, 'POST', '/1.0/cluster', { token: text, address: opts.address }, { done: (r) => `Host ${(r as { name?: string }).name} joined the cluster.` });
    });
}

function addVerb(): Command {
  return new Command('add')
    .description('Print a one-time join token for a new host (run on a member; shown once, etcd keeps only its hash)')
    .argument('<host>', "the new host's name in the cluster")
    .option('--expires <duration>', 'how long the token is valid: 30m, 1h, 2d (default 1h)', '1h')
    .action(async (host: string, opts: { expires: string }, self: Command) => {
      const r = await clientFor(self).request('POST', '/1.0/cluster/tokens', { name: host, expiresSeconds: duration(opts.expires) });
      const t = r.metadata as { token: string; expiresAt: string };
      const format = globals(self).format;
      if (format === 'json' || format === 'yaml') return print(renderInfo(t, format, () => []));
      print(`Join token for host ${host} (single use, expires ${t.expiresAt}); on that host run:\n  vmkit cluster join ${t.token} --address ADDR:PORT\n`);
    });
}

function etcdCertVerb(): Command {
  return new Command('etcd-cert')
    .description("Write etcd's certificate, signed by the cluster CA (made now if this host has none), for etcd's TLS flags")
    .requiredOption('--names <list>', "etcd's addresses / DNS names, comma-separated")
    .requiredOption('--out <dir>', 'folder to write ca.pem, etcd.pem and etcd-key.pem (0600) into')
    .action(async (opts: { names: string; out: string }, self: Command) => {
      const names = opts.names
        .split(',')
        .map((n) => n.trim())
        .filter(Boolean);
      const r = (await clientFor(self).request('POST', '/1.0/cluster/etcd-certificate', { names })).metadata as { caCert: string; cert: string; key: string };
      await mkdir(opts.out, { recursive: true, mode: 0o700 });
      await writeFile(join(opts.out, 'ca.pem'), r.caCert);
      await writeFile(join(opts.out, 'etcd.pem'), r.cert);
      await writeFile(join(opts.out, 'etcd-key.pem'), r.key, { mode: 0o600 });
      await chmod(join(opts.out, 'etcd-key.pem'), 0o600);
      print(`Wrote ${join(opts.out, 'ca.pem')}, etcd.pem and etcd-key.pem: run etcd with the flags doc/cluster.md shows.`);
    });
}

/** `vmkit cluster init|join|list|evacuate|leave|forget|revoke|crl`. */
export function clusterCommand(): Command {
  const cmd = new Command('cluster').description('Run vmkit on several hosts whose state lives in etcd');
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit cluster etcd-cert --names 10.0.0.10 --out /etc/vmkit-etcd     # then start etcd with TLS
  vmkit cluster init --etcd https://10.0.0.10:2379 --name host-a --address 10.0.0.1:8444
  vmkit cluster add host-b                                             # on a member: prints a token
  vmkit cluster join vmkit-join:… --address 10.0.0.2:8444              # on host-b
  vmkit cluster list
  vmkit launch appliance web1 --target host-b
  vmkit migrate web1 --to host-a --check
  vmkit cluster evacuate host-a`,
  );
  cmd.addCommand(initVerb());
  cmd.addCommand(addVerb());
  cmd.addCommand(joinVerb());
  cmd.addCommand(etcdCertVerb());
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
      await mutate(self, 'DELETE', `/1.0/cluster/hosts/${encodeURIComponent(host)}`, undefined, { done: `Host ${host} forgotten; its certificates are revoked.` });
    });
  cmd
    .command('crl')
    .description("Write a CRL signed by the cluster CA listing the revoked host certificates, for etcd's --client-crl-file (run it again after each revoke, forget or leave)")
    .option('--out <file>', 'write it to this file (default: standard output)')
    .option('--days <n>', 'how long the CRL is valid', '30')
    .action(async (o: { out?: string; days: string }, self: Command) => {
      const days = Number(o.days);
      if (!Number.isInteger(days) || days < 1 || days > 3650) throw vmkitError('VMKIT_INVALID_ARGUMENT', `--days ${o.days} is not a whole number of days from 1 to 3650.`);
      const r = (await clientFor(self).request('GET', `/1.0/cluster/crl?days=${days}`)).metadata as { crl: string; revoked: Array<{ serial: string; host: string }> };
      const format = globals(self).format;
      if (!o.out) {
        if (format === 'json' || format === 'yaml') print(renderData(r, format));
        else process.stdout.write(r.crl);
        return;
      }
      await writeFile(o.out, r.crl);
      print(
        `Wrote ${o.out}: ${r.revoked.length} revoked certificate(s)${r.revoked.length ? ` (${r.revoked.map((x) => `${x.host} ${x.serial}`).join(', ')})` : ''}. etcd reads it with --client-crl-file ${o.out}.`,
      );
    });
  cmd
    .command('revoke')
    .description("Revoke every certificate issued for a host until now: the cluster's peer listeners refuse it (a lost or stolen host key)")
    .argument('<host>', 'host name (a live host must leave first)')
    .action(async (host: string, _o: unknown, self: Command) => {
      await mutate(self, 'POST', `/1.0/cluster/hosts/${encodeURIComponent(host)}/revoke`, undefined, {
        done: `Certificates of ${host} issued until now are revoked; it can join again with a new token ("vmkit cluster add ${host}").`,
      });
    });
  return cmd;
}
