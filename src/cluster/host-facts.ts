import { randomUUID } from 'node:crypto';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { isActive } from '../domain/state.js';
import type { InstanceManager } from '../instances/manager.js';
import type { NetworkManager } from '../network/manager.js';
import type { ImageStore } from '../images/image-store.js';
import { qemuCapabilities } from '../qemu/capabilities.js';
import { TCG_CPU_MODEL } from '../qemu/argv.js';
import type { HostRecord } from './types.js';

/**
 * Shared storage is recognised by an id file at its root: two hosts whose shared folders hold
 * the same id (at the same path) see the same disks, so a live migration moves memory only.
 */
export async function sharedStorageId(dir: string): Promise<string> {
  const file = join(dir, '.vmkit-storage-id');
  const found = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (found) return found;
  await mkdir(dir, { recursive: true });
  const id = randomUUID();
  // Another host wrote the file first (flag wx refuses): its id, read back below, is the one.
  await writeFile(file, `${id}\n`, { flag: 'wx' }).catch(() => undefined);
  return (await readFile(file, 'utf8')).trim();
}

async function cpuModelName(): Promise<string> {
  const info = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  return /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? 'unknown';
}

export interface HostFactsDeps {
  version: string;
  qemuBinary: () => string;
  accel: () => Promise<'kvm' | 'tcg'>;
  instances: InstanceManager;
  networks?: NetworkManager;
  images: ImageStore;
  sharedDir?: string;
  guestMemoryMiB?: number;
}

/** What this host publishes to the cluster (refreshed every few seconds). */
export async function hostFacts(d: HostFactsDeps): Promise<Omit<HostRecord, 'name' | 'address' | 'hostId' | 'updatedAt'>> {
  const caps = await qemuCapabilities(d.qemuBinary()).catch(() => ({ version: 'unknown', machines: [] as string[], pc: 'pc' }));
  const accel = await d.accel();
  const list = await d.instances.list();
  const totalMiB = Math.floor(os.totalmem() / 1024 / 1024);
  const memoryTotalMiB = d.guestMemoryMiB ? Math.min(totalMiB, d.guestMemoryMiB) : totalMiB;
  const images = [];
  for (const i of await d.images.list()) {
    // An image whose checksum cannot be read is published without one (placement then copies it).
    images.push({ name: i.name, checksum: await d.images.checksum(i.name).catch(() => undefined) });
  }
  return {
    version: d.version,
    cpus: os.cpus().length,
    memoryTotalMiB,
    memoryFreeMiB: Math.min(memoryTotalMiB, Math.floor(os.freemem() / 1024 / 1024)),
    memoryAssignedMiB: list.filter((i) => isActive(i.state)).reduce((a, i) => a + i.memoryMiB, 0),
    qemuVersion: caps.version,
    machines: caps.machines,
    accel,
    cpuModel: accel === 'kvm' ? `host (${await cpuModelName()})` : TCG_CPU_MODEL,
    networks: d.networks ? (await d.networks.list()).map((n) => ({ name: n.name, mode: n.mode, subnet: n.subnet })) : [],
    images,
    sharedStorage: d.sharedDir ? { id: await sharedStorageId(d.sharedDir), path: d.sharedDir } : undefined,
    instances: list.length,
    updatedAt: new Date().toISOString(),
  } as Omit<HostRecord, 'name' | 'address' | 'hostId' | 'updatedAt'>;
}
