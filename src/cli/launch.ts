import { Command } from 'commander';
import { mutate, positiveInt } from './common.js';
import { parseForwardSpec, type ForwardSpec } from './forward.js';
import { parseNicSpec, type NicSpec } from './nic.js';

interface LaunchOptions {
  type?: string;
  cpus?: number;
  memory?: number;
  forward: ForwardSpec[];
  nic?: NicSpec[];
  allowPrivileged?: boolean;
  count?: number;
  target?: string;
  storage?: string;
  floating?: boolean;
  wait: boolean;
}

/** The POST /1.0/instances body for launch/create; only flags the user gave are sent. */
export function createBody(image: string, name: string, opts: LaunchOptions, start: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = { name, image, start };
  if (opts.type) body.type = opts.type;
  if (opts.cpus !== undefined) body.cpus = opts.cpus;
  if (opts.memory !== undefined) body.memoryMiB = opts.memory;
  if (opts.nic && opts.nic.length > 0) body.nics = opts.nic;
  if (opts.forward.length > 0) body.forwards = opts.floating ? opts.forward.map((f) => ({ ...f, floating: true })) : opts.forward;
  if (opts.allowPrivileged) body.allowPrivileged = true;
  if (opts.target) body.target = opts.target;
  if (opts.storage) body.storage = opts.storage;
  return body;
}

/** `--count N`: NAME-1 … NAME-N. */
export function replicaNames(name: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${name}-${i + 1}`);
}

function build(verb: 'launch' | 'create'): Command {
  const start = verb === 'launch';
  const cmd = new Command(verb)
    .description(start ? 'Create an instance from an image and start it' : 'Create an instance from an image without starting it')
    .argument('<image>', 'image name (see "vmkit image list")')
    .argument('<name>', 'instance name: a-z, 0-9 and "-"')
    .option('-t, --type <type>', 'instance type (see "vmkit types")')
    .option('-c, --cpus <n>', 'virtual CPUs (overrides the type)', positiveInt('--cpus'))
    .option('-m, --memory <MiB>', 'memory in MiB (overrides the type)', positiveInt('--memory'))
    .option(
      '-p, --forward <spec>',
      'forward [ADDRESS:]HOSTPORT:GUESTPORT[/udp]; repeatable',
      (value: string, prev: ForwardSpec[]) => [...prev, parseForwardSpec(value)],
      [] as ForwardSpec[],
    )
    .option('-n, --nic <spec>', 'NIC on a network: NETWORK[:MODEL][,ip=ADDRESS]; repeatable (default: one user-mode NIC)', (value: string, prev: NicSpec[] | undefined) => [
      ...(prev ?? []),
      parseNicSpec(value),
    ])
    .option('--allow-privileged', 'allow forwarding host ports below 1024')
    .option('--count <n>', 'make N replicas NAME-1..NAME-N from the image (linked clones)', positiveInt('--count'))
    .option('--floating', 'cluster: forward addresses follow the instance to whichever host runs it (nat NICs)')
    .option('--target <host>', 'cluster: the host to create it on (default: the live host with the most free memory)')
    .option('--storage <where>', "local or shared (the daemon's --shared-dir; default shared when set)")
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (image: string, name: string, opts: LaunchOptions, self: Command) => {
      const names = opts.count ? replicaNames(name, opts.count) : [name];
      for (const n of names) {
        await mutate(self, 'POST', '/1.0/instances', createBody(image, n, opts, start), {
          wait: opts.wait,
          done: start ? `Instance ${n} created and started.` : `Instance ${n} created.`,
        });
      }
    });
  cmd.addHelpText(
    'after',
    start
      ? `
Examples:
  vmkit launch appliance web1
  vmkit launch appliance web1 --type small --forward 8080:80
  vmkit launch appliance dns1 --cpus 2 --memory 512 --forward 0.0.0.0:5353:53/udp
  vmkit launch appliance web2 --forward 80:80 --allow-privileged --no-wait
  vmkit launch appliance app --count 3          # app-1, app-2, app-3
  vmkit launch appliance web3 --target host-b   # in a cluster`
      : `
Examples:
  vmkit create appliance web1 --forward 8080:80
  vmkit start web1`,
  );
  return cmd;
}

/** `vmkit launch IMAGE NAME`: create and start in one operation. */
export function launchCommand(): Command {
  return build('launch');
}

/** `vmkit create IMAGE NAME`: create only (same flags as launch). */
export function createCommand(): Command {
  return build('create');
}
