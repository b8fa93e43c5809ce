import { Command, Option } from 'commander';
import { VmkitError } from '../errors.js';
import { NIC_MODELS, type Nic, type NicModel } from '../domain/types.js';
import { clientFor, globals, instancePath, mutate, print } from './common.js';
import { renderList } from './output.js';

export interface NicSpec {
  network: string;
  model?: NicModel;
  ipv4?: string;
}

const NIC_HINT = 'Write NETWORK[:MODEL][,ip=ADDRESS], e.g. lan, backend:e1000 or backend,ip=10.82.0.10 (models: virtio-net, e1000, rtl8139).';

/** Parses `--nic NETWORK[:MODEL][,ip=ADDRESS]`. */
export function parseNicSpec(spec: string): NicSpec {
  const bad = (why: string) => new VmkitError('VMKIT_INVALID_ARGUMENT', `The NIC ${JSON.stringify(spec)} is not valid: ${why}.`, { hint: NIC_HINT });
  const [head, ...opts] = spec.trim().split(',');
  const [network, model, extra] = (head ?? '').split(':');
  if (!network || extra !== undefined) throw bad('expected NETWORK or NETWORK:MODEL first');
  const out: NicSpec = { network };
  if (model !== undefined) {
    if (!NIC_MODELS.includes(model as NicModel)) throw bad(`unknown model ${JSON.stringify(model)}`);
    out.model = model as NicModel;
  }
  for (const o of opts) {
    const [k, v] = o.split('=');
    if (k === 'ip' && v) out.ipv4 = v;
    else if (k === 'model' && v && NIC_MODELS.includes(v as NicModel)) out.model = v as NicModel;
    else throw bad(`unknown option ${JSON.stringify(o)}`);
  }
  return out;
}

const COLUMNS = [
  { header: 'NIC', value: (n: Nic) => n.id },
  { header: 'NETWORK', value: (n: Nic) => n.network },
  { header: 'MODEL', value: (n: Nic) => n.model },
  { header: 'MAC', value: (n: Nic) => n.mac },
  { header: 'IPV4', value: (n: Nic) => n.ipv4 ?? '' },
];

/** `vmkit nic list|add|remove`: an instance's network cards (add/remove hot-plug on a running VM). */
export function nicCommand(): Command {
  const cmd = new Command('nic').description("Manage an instance's network cards (hot-plug on a running instance)");
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit nic list web1
  vmkit nic add web1 --network lab --model rtl8139
  vmkit nic add db1 --network backend --ip 10.82.0.11
  vmkit nic remove web1 nic1`,
  );
  cmd
    .command('list')
    .alias('ls')
    .description("List an instance's NICs")
    .argument('<name>', 'instance name')
    .action(async (name: string, _o: unknown, self: Command) => {
      const inst = await clientFor(self).get<{ nics: Nic[] }>(instancePath(name));
      print(renderList(inst.nics, globals(self).format, COLUMNS));
    });
  cmd
    .command('add')
    .description('Add a NIC (hot-plugged when the instance runs)')
    .argument('<name>', 'instance name')
    .requiredOption('--network <network>', 'network name (or "user")')
    .addOption(new Option('--model <model>', 'NIC model the guest sees').choices([...NIC_MODELS]))
    .option('--ip <address>', 'static IPv4 address (vmkit networks with a subnet)')
    .action(async (name: string, o: { network: string; model?: NicModel; ip?: string }, self: Command) => {
      const body: Record<string, unknown> = { network: o.network };
      if (o.model) body.model = o.model;
      if (o.ip) body.ipv4 = o.ip;
      await mutate(self, 'POST', instancePath(name, 'nics'), body, {
        done: (nic) => `NIC ${(nic as Nic | undefined)?.id ?? ''} added to ${name}.`,
      });
    });
  cmd
    .command('remove')
    .alias('rm')
    .description('Remove a NIC (hot-unplugged when the instance runs)')
    .argument('<name>', 'instance name')
    .argument('<nic>', 'NIC id (nic0, nic1 …)')
    .option('--force', 'also remove the port forwards to this NIC (refused otherwise)')
    .action(async (name: string, nic: string, o: { force?: boolean }, self: Command) => {
      await mutate(self, 'DELETE', instancePath(name, 'nics', encodeURIComponent(nic)) + (o.force ? '?force=true' : ''), undefined, {
        done: (r) => {
          const gone = (r as { removedForwards?: { hostPort: number; guestPort: number; proto: string }[] }).removedForwards ?? [];
          const also = gone.length > 0 ? ` Removed its forward(s): ${gone.map((f) => `${f.hostPort}->${f.guestPort}/${f.proto}`).join(', ')}.` : '';
          return `NIC ${nic} removed from ${name}.${also}`;
        },
      });
    });
  return cmd;
}
