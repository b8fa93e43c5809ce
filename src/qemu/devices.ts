import type { NicModel } from '../domain/types.js';
import { nicDevice } from './argv.js';
import type { QmpClient, QmpEvent } from './qmp.js';

/** How long a guest gets to release a hot-unplugged device (ACPI eject) before we give up. */
export const DEVICE_RELEASE_TIMEOUT_MS = 15_000;

export interface HotplugNic {
  /** The netdev id (`nic0` …); the guest device is `<id>-dev`, as argv.ts names it at launch. */
  id: string;
  model: NicModel;
  mac: string;
  /** The host tap device of a NIC on a vmkit network; without one the NIC is user-mode NAT. */
  tap?: string;
}

/**
 * Adds a NIC to a running QEMU: `netdev_add` (tap or user), then `device_add`. When the
 * device is refused, the netdev just added is taken away again and the device_add error
 * is what the caller gets.
 */
export async function hotplugNic(qmp: QmpClient, nic: HotplugNic): Promise<void> {
  await qmp.execute('netdev_add', nic.tap ? { type: 'tap', id: nic.id, ifname: nic.tap, script: 'no', downscript: 'no' } : { type: 'user', id: nic.id, ipv6: false });
  try {
    await qmp.execute('device_add', { driver: nicDevice(nic.model), netdev: nic.id, mac: nic.mac, id: `${nic.id}-dev` });
  } catch (err) {
    // The device_add failure is what the caller sees; a netdev left behind goes with QEMU.
    await qmp.execute('netdev_del', { id: nic.id }).catch((e: Error) => console.error(`vmkitd: removing netdev ${nic.id} after a refused device_add: ${e.message}`));
    throw err;
  }
}

/**
 * Removes a hot-plugged NIC: `device_del`, wait for the guest to release the device
 * (DEVICE_DELETED), then `netdev_del`. Resolves false, leaving the netdev in place, when the
 * guest does not release it within `timeoutMs` (no ACPI PCI hot-plug in the guest).
 */
export async function unplugNic(qmp: QmpClient, nicId: string, timeoutMs = DEVICE_RELEASE_TIMEOUT_MS): Promise<boolean> {
  const device = `${nicId}-dev`;
  // The guest must release the device (ACPI eject) before its netdev can go.
  const deleted = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => {
      qmp.off('event', onEvent);
      resolve(false);
    }, timeoutMs);
    const onEvent = (e: QmpEvent) => {
      if (e.event === 'DEVICE_DELETED' && e.data.device === device) {
        clearTimeout(timer);
        qmp.off('event', onEvent);
        resolve(true);
      }
    };
    qmp.on('event', onEvent);
  });
  await qmp.execute('device_del', { id: device });
  if (!(await deleted)) return false;
  await qmp.execute('netdev_del', { id: nicId });
  return true;
}
