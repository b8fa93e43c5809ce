import type { QmpClient } from './qmp.js';

/**
 * Grows a disk of a running QEMU: QMP `block_resize` on its format node (argv.ts names the
 * node after the disk: `root`). The guest sees the new size at once (virtio-blk reports a
 * capacity change); growing its partition and filesystem is the guest's work.
 */
export async function growRunningDisk(qmp: QmpClient, nodeName: string, bytes: number): Promise<void> {
  await qmp.execute('block_resize', { 'node-name': nodeName, size: bytes });
}
