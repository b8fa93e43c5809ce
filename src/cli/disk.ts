import { Command } from 'commander';
import { instancePath, mutate } from './common.js';
import { parseDiskSize } from './launch.js';

/** `vmkit disk resize NAME SIZE`: grow a disk, online while the instance runs. */
export function diskCommand(): Command {
  const cmd = new Command('disk').description("Manage an instance's disks");
  cmd
    .command('resize')
    .description('Grow a disk (QMP block_resize while running, qemu-img resize when stopped); never shrinks')
    .argument('<name>', 'instance name')
    .argument('<size>', 'new size, e.g. 40G')
    .option('--disk <disk>', 'which disk', 'root')
    .action(async (name: string, size: string, o: { disk: string }, self: Command) => {
      const bytes = parseDiskSize(size);
      await mutate(
        self,
        'PUT',
        instancePath(name, 'disks', encodeURIComponent(o.disk)),
        { size: bytes },
        {
          done: (r) => {
            const d = (r as { disk?: { oldBytes: number; newBytes: number; online: boolean } }).disk;
            if (!d || d.newBytes === d.oldBytes) return `Disk ${o.disk} of ${name} is already ${size}.`;
            return `Disk ${o.disk} of ${name} grown from ${gib(d.oldBytes)} to ${gib(d.newBytes)}${d.online ? ' while running' : ''}. The guest grows its partition and filesystem (cloud-init growpart at the next boot, or growpart + resize2fs now).`;
          },
        },
      );
    });
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit disk resize web1 40G`,
  );
  return cmd;
}

function gib(bytes: number): string {
  return `${(bytes / 1024 ** 3).toFixed(2).replace(/\.?0+$/, '')} GiB`;
}
