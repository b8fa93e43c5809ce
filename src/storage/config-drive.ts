import { mkdtemp, rm, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { run } from '../util/exec.js';
import type { Nic } from '../domain/types.js';

/**
 * The config drive: a small vfat volume labelled `cidata` in cloud-init NoCloud form, so the
 * built-in appliance and real cloud images read the same hostname and network settings.
 */
export interface ConfigDriveInput {
  instanceId: string;
  hostname: string;
  nics: readonly Nic[];
  /** Per NIC id: prefix, gateway and DNS of a static address (vmkit networks). */
  addressing?: Readonly<Record<string, { prefix: number; gateway?: string; dns?: readonly string[] }>>;
}

export function metaData(input: ConfigDriveInput): string {
  return `instance-id: ${input.instanceId}\nlocal-hostname: ${input.hostname}\n`;
}

export function networkConfig(input: ConfigDriveInput): string {
  const lines = ['version: 2', 'ethernets:'];
  input.nics.forEach((nic) => {
    lines.push(`  ${nic.id}:`, '    match:', `      macaddress: "${nic.mac}"`);
    const a = input.addressing?.[nic.id];
    if (nic.ipv4 && nic.network !== 'user' && !nic.dhcp) {
      lines.push('    dhcp4: false', `    addresses: ["${nic.ipv4}${a ? `/${a.prefix}` : ''}"]`);
      if (a?.gateway) lines.push(`    gateway4: ${a.gateway}`);
      if (a?.dns?.length) lines.push(`    nameservers: {addresses: [${a.dns.join(', ')}]}`);
    } else {
      lines.push('    dhcp4: true');
    }
  });
  return lines.join('\n') + '\n';
}

export function userData(): string {
  return '#cloud-config\n{}\n';
}

export function mkfsArgv(file: string): string[] {
  return ['mkfs.vfat', '-n', 'CIDATA', '-C', file, '1024'];
}

export function mcopyArgv(image: string, files: readonly string[]): string[] {
  return ['mcopy', '-o', '-i', image, ...files, '::'];
}

/** Writes the drive to `dest` (replaced atomically). */
export async function writeConfigDrive(dest: string, input: ConfigDriveInput): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'vmkit-cidata-'));
  const tmpImage = `${dest}.tmp`;
  try {
    const files = {
      'meta-data': metaData(input),
      'user-data': userData(),
      'network-config': networkConfig(input),
    };
    const paths: string[] = [];
    for (const [name, content] of Object.entries(files)) {
      const p = join(dir, name);
      await writeFile(p, content);
      paths.push(p);
    }
    await rm(tmpImage, { force: true });
    await run(mkfsArgv(tmpImage), { errorCode: 'VMKIT_STORAGE_FAILED', timeoutMs: 20_000, hint: 'Install dosfstools (run "vmkit doctor").' });
    await run(mcopyArgv(tmpImage, paths), {
      errorCode: 'VMKIT_STORAGE_FAILED',
      timeoutMs: 20_000,
      hint: 'Install mtools (run "vmkit doctor").',
      env: { ...process.env, MTOOLS_SKIP_CHECK: '1' },
    });
    await rename(tmpImage, dest);
  } finally {
    // After the rename this is a no-op; after a failure it removes the half-made drive.
    await rm(tmpImage, { force: true });
    await rm(dir, { recursive: true, force: true });
  }
}
