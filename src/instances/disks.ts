import { vmkitError } from '../errors.js';
import { parseSize } from '../domain/cloud-init.js';
import type { InstanceView } from '../domain/types.js';
import { growRunningDisk } from '../qemu/block.js';
import { resizeVolume, sharedVolumeInfo } from '../storage/qemu-img.js';
import type { InstanceContext } from './registry.js';

/**
 * An instance's disks: grow the root disk. Online (QMP block_resize) while QEMU runs,
 * offline (qemu-img resize) when stopped. Never shrinks: a smaller size is refused.
 */
export class Disks {
  constructor(private readonly shared: InstanceContext) {}

  async resize(name: string, size: number | string, diskName = 'root'): Promise<InstanceView & { disk: { name: string; oldBytes: number; newBytes: number; online: boolean } }> {
    const { registry, events } = this.shared;
    const bytes = parseSize(size, 'Disk size');
    return registry.withLock(name, async () => {
      const inst = await registry.load(name);
      const disk = inst.disks.find((d) => d.name === diskName);
      if (!disk) throw vmkitError('VMKIT_NOT_FOUND', `Instance "${name}" has no disk "${diskName}".`, { hint: `Its disks: ${inst.disks.map((d) => d.name).join(', ')}.` });
      if (inst.state !== 'stopped' && inst.state !== 'running' && inst.state !== 'paused') {
        throw vmkitError('VMKIT_INVALID_STATE', `Cannot resize a disk of "${name}" while it is ${inst.state}.`, {
          hint: 'Disks are grown on stopped, running or paused instances.',
        });
      }
      const file = registry.diskPath(inst, disk);
      // -U: a running QEMU holds the image lock; the size is read without taking it.
      const oldBytes = (await sharedVolumeInfo(file)).virtualSize;
      if (bytes < oldBytes) {
        throw vmkitError('VMKIT_INVALID_ARGUMENT', `Disk ${diskName} of "${name}" is ${oldBytes} bytes; ${bytes} would shrink it, which vmkit never does.`, {
          hint: 'Give a size at least as large as the current one (see "vmkit info").',
        });
      }
      const online = inst.state !== 'stopped';
      if (bytes > oldBytes) {
        if (online) await growRunningDisk(registry.runtime(inst).qmp, disk.name, bytes);
        else await resizeVolume(file, disk.format, bytes);
        events.lifecycle('instance-updated', name, { disk: diskName, bytes });
      }
      return { ...registry.view(await registry.load(name)), disk: { name: diskName, oldBytes, newBytes: bytes, online } };
    });
  }
}
