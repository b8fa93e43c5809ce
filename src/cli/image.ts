import { Command } from 'commander';
import type { Image } from '../domain/types.js';
import { clientFor, globals, print } from './common.js';
import { formatMiB, renderInfo, renderList, type Field } from './output.js';

/** The readable view of one image. */
export function imageFields(i: Image): Field[] {
  return [
    ['Name', i.name],
    ['Version', i.version],
    ['Description', i.description],
    ['Architecture', i.arch],
    ['Source', i.source],
    ['Created', i.createdAt],
    ['Default CPUs', i.defaults?.cpus],
    ['Default memory', formatMiB(i.defaults?.memoryMiB)],
    ['NIC models', (i.nicModels ?? []).join(', ')],
    ['Boot', i.boot ? `kernel ${i.boot.kernel}${i.boot.initrd ? `, initrd ${i.boot.initrd}` : ''}` : 'firmware (disk)'],
    ['Disks', (i.disks ?? []).map((d) => [d.name, d.file, d.format, d.virtualSize !== undefined ? `${Math.round(d.virtualSize / 2 ** 20)}MiB` : ''].join('  ').trimEnd())],
  ];
}

/** `vmkit image list|info`: the images instances can be created from. */
export function imageCommand(): Command {
  const cmd = new Command('image').description('Inspect the images instances are created from');
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit image list
  vmkit image info appliance`,
  );
  cmd
    .command('list')
    .alias('ls')
    .description('List images')
    .action(async (_opts: unknown, self: Command) => {
      const images = await clientFor(self).get<Image[]>('/1.0/images');
      print(
        renderList(images, globals(self).format, [
          { header: 'NAME', value: (i) => i.name },
          { header: 'VERSION', value: (i) => i.version },
          { header: 'SOURCE', value: (i) => i.source },
          { header: 'CPUS', value: (i) => i.defaults?.cpus },
          { header: 'MEMORY', value: (i) => formatMiB(i.defaults?.memoryMiB) },
          { header: 'DESCRIPTION', value: (i) => i.description },
        ]),
      );
    });
  cmd
    .command('info')
    .alias('show')
    .description('Show one image')
    .argument('<name>', 'image name')
    .action(async (name: string, _opts: unknown, self: Command) => {
      const image = await clientFor(self).get<Image>(`/1.0/images/${encodeURIComponent(name)}`);
      print(renderInfo(image, globals(self).format, () => imageFields(image)));
    });
  return cmd;
}
