import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import type { InstanceView } from '../domain/types.js';
import { VmkitError } from '../errors.js';
import { clientFor, instancePath, mutate } from './common.js';
import { sshKeysFrom } from './launch.js';

/** `vmkit cloud-init show|set NAME`: what cloud-init reads from the instance's NoCloud drive. */
export function cloudInitCommand(): Command {
  const cmd = new Command('cloud-init').description("Show or change an instance's cloud-init user-data, SSH keys and meta-data");
  cmd
    .command('show')
    .description('Print the user-data as stored (the full text)')
    .argument('<name>', 'instance name')
    .action(async (name: string, _o: unknown, self: Command) => {
      const inst = await clientFor(self).get<InstanceView>(instancePath(name));
      process.stdout.write(inst.cloudInit?.userData ?? '');
    });
  cmd
    .command('set')
    .description('Replace user-data, SSH keys or meta-data; applied at the next boot (new instance-id: cloud-init re-runs its per-instance modules)')
    .argument('<name>', 'instance name')
    .option('--user-data <file>', 'new user-data (#cloud-config or a script)')
    .option('--ssh-key <file|key>', 'public key; repeatable; replaces the stored keys', (v: string, prev: string[] | undefined) => [...(prev ?? []), ...sshKeysFrom(v)])
    .option('--no-ssh-keys', 'remove every stored key')
    .option('--meta <key=value>', 'meta-data pair; repeatable; replaces the stored pairs', (v: string, prev: Record<string, string> | undefined) => {
      const i = v.indexOf('=');
      if (i <= 0) throw new VmkitError('VMKIT_INVALID_ARGUMENT', `--meta ${v} is not KEY=VALUE.`);
      return { ...(prev ?? {}), [v.slice(0, i)]: v.slice(i + 1) };
    })
    .action(async (name: string, o: { userData?: string; sshKey?: string[]; sshKeys?: boolean; meta?: Record<string, string> }, self: Command) => {
      const body: Record<string, unknown> = {};
      if (o.userData !== undefined) {
        try {
          body.userData = readFileSync(o.userData, 'utf8');
        } catch (err) {
          throw new VmkitError('VMKIT_FILE_NOT_FOUND', `--user-data ${o.userData}: ${(err as Error).message}`);
        }
      }
      if (o.sshKey) body.sshKeys = o.sshKey;
      else if (o.sshKeys === false) body.sshKeys = [];
      if (o.meta) body.meta = o.meta;
      if (Object.keys(body).length === 0) throw new VmkitError('VMKIT_INVALID_ARGUMENT', 'Nothing to change.', { hint: 'Give --user-data, --ssh-key, --no-ssh-keys or --meta.' });
      await mutate(self, 'PUT', instancePath(name, 'cloud-init'), body, {
        done: (r) =>
          `cloud-init settings of ${name} changed; the next boot applies them (instance-id ${(r as InstanceView).id}-g${(r as InstanceView).cloudInit?.generation ?? 0}).`,
      });
    });
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit cloud-init show vm1 > user-data.yaml
  vmkit cloud-init set vm1 --user-data user-data.yaml && vmkit restart vm1
  vmkit cloud-init set vm1 --ssh-key ~/.ssh/id_ed25519.pub`,
  );
  return cmd;
}
