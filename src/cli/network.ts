import { Command, Option } from 'commander';
import type { NetworkView } from '../network/types.js';
import type { HostAccess } from '../wire/types.js';
import { clientFor, globals, mutate, print } from './common.js';
import { renderInfo, renderList, type Field } from './output.js';

function networkPath(name?: string): string {
  return name === undefined ? '/1.0/networks' : `/1.0/networks/${encodeURIComponent(name)}`;
}

const COLUMNS = [
  { header: 'NAME', value: (n: NetworkView) => n.name },
  { header: 'MODE', value: (n: NetworkView) => n.mode },
  { header: 'SUBNET', value: (n: NetworkView) => n.subnet ?? (n.uplink ? `via ${n.uplink}` : '-') },
  { header: 'BRIDGE', value: (n: NetworkView) => n.bridge },
  { header: 'DHCP', value: (n: NetworkView) => (n.dhcp && n.dhcpRange ? `${n.dhcpRange.start}-${n.dhcpRange.end}` : 'no') },
  { header: 'NICS', value: (n: NetworkView) => n.nics.length },
];

export function networkFields(n: NetworkView): Field[] {
  return [
    ['Name', n.name],
    ['Mode', n.mode],
    ['Bridge', n.bridge],
    ['Subnet', n.subnet],
    ['Host address', n.hostAddress],
    ['Uplink', n.uplink],
    ['DHCP', n.dhcp && n.dhcpRange ? `${n.dhcpRange.start}-${n.dhcpRange.end}` : 'no'],
    ['DNS', n.dns ? 'yes' : 'no'],
    ['Host access', ['DHCP/DNS', ...(n.allowHost ?? [])].join(', ')],
    ['Created', n.createdAt],
    ['NICs', n.nics.map((x) => [x.instance, x.nic, x.mac, x.ipv4 ?? '', x.tap, x.state].join('  '))],
    ['Leases', n.leases.map((l) => [l.ipv4, l.mac, l.hostname, new Date(l.expires * 1000).toISOString()].join('  '))],
    ['Forwards', n.forwards.map((f) => `${f.hostAddress}:${f.hostPort} -> ${f.instance} ${f.guestIp ?? '?'}:${f.guestPort}/${f.proto}`)],
  ];
}

export function hostAccessFields(a: HostAccess): Field[] {
  return [
    ['Name', a.network],
    ['Host access', ['DHCP/DNS', ...a.allowHost].join(', ')],
  ];
}

/** The PATCH …/host-access body: only the flags the user gave. */
export function hostAccessBody(o: { allowHost?: string[]; denyHost?: string[] }): { allow?: string[]; deny?: string[] } {
  const body: { allow?: string[]; deny?: string[] } = {};
  if (o.allowHost?.length) body.allow = o.allowHost;
  if (o.denyHost?.length) body.deny = o.denyHost;
  return body;
}

interface CreateOptions {
  mode: string;
  subnet?: string;
  dhcpRange?: string;
  dhcp?: boolean;
  dns?: boolean;
  uplink?: string;
}

/** The POST /1.0/networks body: only the flags the user gave. */
export function networkBody(name: string, o: CreateOptions): Record<string, unknown> {
  const body: Record<string, unknown> = { name, mode: o.mode };
  if (o.subnet) body.subnet = o.subnet;
  if (o.dhcpRange) body.dhcpRange = o.dhcpRange;
  if (o.dhcp !== undefined) body.dhcp = o.dhcp;
  if (o.dns !== undefined) body.dns = o.dns;
  if (o.uplink) body.uplink = o.uplink;
  return body;
}

/** `vmkit network create|list|info|delete`. */
export function networkCommand(): Command {
  const cmd = new Command('network').alias('net').description('Manage virtual networks (nat, host-only, internal, bridged)');
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit network create lan --mode nat --subnet 10.80.0.0/24 --dhcp-range .100-.200
  vmkit network create lab --mode host-only --subnet 10.81.0.0/24
  vmkit network create backend --mode internal --subnet 10.82.0.0/24 --dhcp
  vmkit network create office --mode bridged --uplink eth1
  vmkit network info lan --format json
  vmkit network set lan --allow-host tcp/8080      # guests on lan may reach the host's port 8080
  vmkit network set user --deny-host tcp/8080      # "user" = QEMU user-mode NICs
  vmkit launch appliance web1 --nic lan --nic backend:e1000
  vmkit network delete lab`,
  );
  cmd
    .command('create')
    .description('Create a network: a bridge, DHCP/DNS (dnsmasq) and nftables rules')
    .argument('<name>', 'network name: a-z, 0-9 and "-"')
    .addOption(new Option('--mode <mode>', 'network mode').choices(['nat', 'host-only', 'internal', 'bridged']).makeOptionMandatory())
    .option('--subnet <cidr>', 'IPv4 subnet, e.g. 10.80.0.0/24 (the host takes the first address)')
    .option('--dhcp-range <range>', 'DHCP pool: FIRST-LAST or last octets (.100-.200)')
    .option('--dhcp', 'serve DHCP (default for nat and host-only)')
    .option('--no-dhcp', 'do not serve DHCP')
    .option('--dns', 'serve DNS: instance names resolve (default with a subnet)')
    .option('--no-dns', 'do not serve DNS')
    .option('--uplink <iface>', 'bridged: the host interface (without an address) to bridge')
    .action(async (name: string, opts: CreateOptions, self: Command) => {
      await mutate(self, 'POST', networkPath(), networkBody(name, opts), { done: `Network ${name} created.` });
    });
  cmd
    .command('list')
    .alias('ls')
    .description('List networks')
    .action(async (_opts: unknown, self: Command) => {
      print(renderList(await clientFor(self).get<NetworkView[]>(networkPath()), globals(self).format, COLUMNS));
    });
  cmd
    .command('info')
    .alias('show')
    .description('Show a network: attached NICs, DHCP leases, forwards')
    .argument('<name>', 'network name')
    .action(async (name: string, _opts: unknown, self: Command) => {
      if (name === 'user') {
        // The pseudo-network of QEMU user-mode NICs has no bridge: only its host access.
        const a = await clientFor(self).get<HostAccess>(`${networkPath(name)}/host-access`);
        print(renderInfo(a, globals(self).format, () => hostAccessFields(a)));
        return;
      }
      const n = await clientFor(self).get<NetworkView>(networkPath(name));
      print(renderInfo(n, globals(self).format, () => networkFields(n)));
    });
  const collect = (v: string, prev: string[] = []) => [...prev, v];
  cmd
    .command('set')
    .description('Open or close host services to the guests of a network (default: none but DHCP/DNS)')
    .argument('<name>', 'network name, or "user" for QEMU user-mode NICs')
    .option('--allow-host <proto/port>', 'let guests reach this host service: tcp/PORT, udp/PORT, tcp/N-M (repeatable)', collect)
    .option('--deny-host <proto/port>', 'take a service off the allow-list (repeatable)', collect)
    .action(async (name: string, opts: { allowHost?: string[]; denyHost?: string[] }, self: Command) => {
      await mutate(self, 'PATCH', `${networkPath(name)}/host-access`, hostAccessBody(opts), {
        done: (a) => `Network ${name}: guests reach ${hostAccessFields(a as HostAccess)[1]![1]} on the host.`,
      });
    });
  cmd
    .command('delete')
    .alias('rm')
    .description('Delete a network (refused while NICs use it)')
    .argument('<name>', 'network name')
    .action(async (name: string, _opts: unknown, self: Command) => {
      await mutate(self, 'DELETE', networkPath(name), undefined, { done: `Network ${name} deleted.` });
    });
  return cmd;
}
