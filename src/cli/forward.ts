import { isIP } from 'node:net';
import { Command, Option } from 'commander';
import { VmkitError } from '../errors.js';
import type { PortForward, Protocol } from '../domain/types.js';
import { clientFor, globals, instancePath, mutate, print } from './common.js';
import { formatForward, renderData, renderList } from './output.js';

/** A forward as the API takes it in POST /1.0/instances and POST …/forwards. */
export interface ForwardSpec {
  hostPort: number;
  guestPort: number;
  proto: Protocol;
  /** Absent = the daemon's default (loopback). */
  hostAddress?: string;
}

const SPEC_HINT = 'Write [ADDRESS:]HOSTPORT:GUESTPORT[/udp], e.g. 8080:80, 127.0.0.1:8080:80 or 0.0.0.0:5353:53/udp.';

function bad(spec: string, why: string): VmkitError {
  return new VmkitError('VMKIT_INVALID_ARGUMENT', `The forward ${JSON.stringify(spec)} is not valid: ${why}.`, { hint: SPEC_HINT });
}

function port(spec: string, text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) {
    throw bad(spec, `the ${what} ${JSON.stringify(text)} is not a port number 1-65535`);
  }
  return Number(text);
}

/**
 * Parses `[ADDR:]HOST:GUEST[/tcp|/udp]` (IPv6 addresses in brackets: `[::1]:8080:80`).
 * Pure and strict so a typo fails here with a hint instead of as a confusing daemon error.
 */
export function parseForwardSpec(spec: string): ForwardSpec {
  let rest = spec.trim();
  let proto: Protocol = 'tcp';
  const slash = rest.lastIndexOf('/');
  if (slash >= 0) {
    const p = rest.slice(slash + 1).toLowerCase();
    if (p !== 'tcp' && p !== 'udp') throw bad(spec, `the protocol ${JSON.stringify(p)} is neither tcp nor udp`);
    proto = p;
    rest = rest.slice(0, slash);
  }
  let hostAddress: string | undefined;
  if (rest.startsWith('[')) {
    const end = rest.indexOf(']:');
    if (end < 0) throw bad(spec, 'the bracketed address is not closed by "]:"');
    hostAddress = rest.slice(1, end);
    rest = rest.slice(end + 2);
    if (isIP(hostAddress) !== 6) throw bad(spec, `${JSON.stringify(hostAddress)} is not an IPv6 address`);
  }
  const parts = rest.split(':');
  if (hostAddress === undefined && parts.length === 3) {
    hostAddress = parts.shift() as string;
    if (isIP(hostAddress) !== 4) throw bad(spec, `${JSON.stringify(hostAddress)} is not an IPv4 address`);
  }
  if (parts.length !== 2) throw bad(spec, 'expected a host port and a guest port separated by ":"');
  const hostPort = port(spec, parts[0], 'host port');
  const guestPort = port(spec, parts[1], 'guest port');
  return hostAddress === undefined ? { hostPort, guestPort, proto } : { hostPort, guestPort, proto, hostAddress };
}

/** Applies `--proto` on top of a spec's own `/proto`, refusing contradictions. */
export function withProto(spec: ForwardSpec, proto: Protocol | undefined, text: string): ForwardSpec {
  if (!proto || proto === spec.proto) return spec;
  if (text.includes('/')) throw bad(text, `it says /${spec.proto} but --proto says ${proto}`);
  return { ...spec, proto };
}

function isForward(v: unknown): v is PortForward {
  return typeof v === 'object' && v !== null && typeof (v as PortForward).hostPort === 'number' && typeof (v as PortForward).guestPort === 'number';
}

/** The columns of `vmkit forward list`. */
const COLUMNS = [
  { header: 'PROTO', value: (f: PortForward) => f.proto },
  { header: 'ADDRESS', value: (f: PortForward) => f.hostAddress },
  { header: 'HOST PORT', value: (f: PortForward) => f.hostPort },
  { header: 'GUEST PORT', value: (f: PortForward) => f.guestPort },
  { header: 'NIC', value: (f: PortForward) => f.nic },
];

/** `vmkit forward add|list|remove`: host ports forwarded to guest ports, applied live. */
export function forwardCommand(): Command {
  const cmd = new Command('forward').description('Manage port forwards from the host to an instance');
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit forward add web1 8080:80                 # 127.0.0.1:8080 -> guest port 80/tcp
  vmkit forward add web1 0.0.0.0:5353:53/udp     # on every host address, UDP
  vmkit forward add web1 80:80 --allow-privileged
  vmkit forward add web1 8080:80 --address 0.0.0.0 --proto udp
  vmkit forward add web1 8443:443 --nic nic1        # a NIC on a nat network: nftables DNAT
  vmkit forward check web1 8080                  # host -> forward -> guest port answers?
  vmkit forward list web1
  vmkit forward remove web1 8080`,
  );

  cmd
    .command('add')
    .description('Forward a host port to a guest port (applied at once when running)')
    .argument('<name>', 'instance name')
    .argument('<spec>', '[ADDRESS:]HOSTPORT:GUESTPORT[/udp]')
    .addOption(new Option('--proto <proto>', 'protocol').choices(['tcp', 'udp']))
    .option('--address <addr>', 'host address to listen on (instead of ADDRESS: in the spec)')
    .option('--nic <nic>', 'the NIC to forward to (default: the user-mode NIC, else the first NIC with an address)')
    .option('--allow-privileged', 'allow a host port below 1024')
    .option('--floating', 'cluster: the address follows the instance to whichever host runs it (nat NICs)')
    .action(async (name: string, text: string, opts: { proto?: Protocol; address?: string; nic?: string; allowPrivileged?: boolean; floating?: boolean }, self: Command) => {
      let spec = withProto(parseForwardSpec(text), opts.proto, text);
      if (opts.address) {
        if (spec.hostAddress !== undefined && spec.hostAddress !== opts.address) throw bad(text, `it names ${spec.hostAddress} but --address says ${opts.address}`);
        if (isIP(opts.address) !== 4) throw bad(text, `--address ${JSON.stringify(opts.address)} is not an IPv4 address`);
        spec = { ...spec, hostAddress: opts.address };
      }
      const body = { ...spec, ...(opts.nic ? { nic: opts.nic } : {}), ...(opts.allowPrivileged ? { allowPrivileged: true } : {}), ...(opts.floating ? { floating: true } : {}) };
      await mutate(self, 'POST', instancePath(name, 'forwards'), body, {
        // The daemon answers with the forward as stored (address default filled in).
        done: (added) => `Forward ${formatForward(isForward(added) ? added : { ...spec, hostAddress: spec.hostAddress ?? '' })} added to ${name}.`,
      });
    });

  cmd
    .command('list')
    .alias('ls')
    .description("List an instance's port forwards")
    .argument('<name>', 'instance name')
    .action(async (name: string, _opts: unknown, self: Command) => {
      const forwards = await clientFor(self).get<PortForward[]>(instancePath(name, 'forwards'));
      print(renderList(forwards, globals(self).format, COLUMNS));
    });

  cmd
    .command('check')
    .description('Check a forward: connect to the host port and say whether the guest port answers')
    .argument('<name>', 'instance name')
    .argument('<hostport>', 'the host port of the forward')
    .action(async (name: string, hostPort: string, _opts: unknown, self: Command) => {
      const r = await clientFor(self).request('POST', `${instancePath(name, 'forwards', encodeURIComponent(hostPort))}/check`, {});
      const c = r.metadata as { reachable: boolean; via: string; millis: number; error?: string; guestAddress?: string; guestReachable?: boolean; forward: PortForward };
      const format = globals(self).format;
      if (format === 'json' || format === 'yaml') print(renderData(c, format));
      else {
        const guest = c.guestAddress ? ` (guest ${c.guestAddress}:${c.forward.guestPort} ${c.guestReachable ? 'answers directly' : 'does not answer directly'})` : '';
        print(`${formatForward(c.forward)} via ${c.via}: ${c.reachable ? `reachable in ${c.millis} ms` : `NOT reachable (${c.error ?? 'no answer'})`}${guest}`);
      }
      if (!c.reachable) process.exitCode = 3;
    });

  cmd
    .command('remove')
    .alias('rm')
    .description('Remove a port forward (applied at once when running)')
    .argument('<name>', 'instance name')
    .argument('<hostport>', 'the host port of the forward')
    .addOption(new Option('--proto <proto>', 'protocol').choices(['tcp', 'udp']).default('tcp'))
    .option('--address <addr>', 'host address of the forward, when several share the port')
    .action(async (name: string, hostPort: string, opts: { proto: Protocol; address?: string }, self: Command) => {
      if (!/^\d{1,5}$/.test(hostPort) || Number(hostPort) < 1 || Number(hostPort) > 65535) {
        throw new VmkitError('VMKIT_INVALID_ARGUMENT', `${JSON.stringify(hostPort)} is not a port number 1-65535.`, {
          hint: 'Give the host port of the forward, as shown by "vmkit forward list NAME".',
        });
      }
      const p = Number(hostPort);
      const query = new URLSearchParams({ proto: opts.proto });
      if (opts.address) query.set('address', opts.address);
      await mutate(self, 'DELETE', `${instancePath(name, 'forwards', String(p))}?${query}`, undefined, {
        done: `Forward ${opts.address ? `${opts.address}:` : ''}${p}/${opts.proto} removed from ${name}.`,
      });
    });
  return cmd;
}
