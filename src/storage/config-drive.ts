import { mkdtemp, rm, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { stringify } from 'yaml';
import { run } from '../util/exec.js';
import type { CloudInitConfig, Nic } from '../domain/types.js';

/**
 * The config drive: a small vfat volume labelled `cidata` in cloud-init NoCloud form, so the
 * built-in appliance and real cloud images read the same hostname and network settings.
 */
export interface ConfigDriveInput {
  /** cloud-init's instance-id (see configInstanceId): a new one makes cloud-init re-run its per-instance modules. */
  instanceId: string;
  /** vmkit's own id of the instance: a clone has a new one (machine-id and SSH host keys are renewed once per id). */
  identity?: string;
  hostname: string;
  /** User-data, SSH keys and extra meta-data the user gave. */
  cloudInit?: CloudInitConfig;
  nics: readonly Nic[];
  /** Per NIC id: prefix, gateway and DNS of a static address (vmkit networks). */
  addressing?: Readonly<Record<string, { prefix: number; gateway?: string; dns?: readonly string[] }>>;
}

/**
 * cloud-init's instance-id for an instance: its vmkit id, then `-g<N>` once its NICs or
 * user-data changed N times (cloud-init applies network-config and per-instance modules
 * only when the instance-id is new). A clone has a new vmkit id, hence a new instance-id.
 */
export function configInstanceId(id: string, generation?: number): string {
  return generation ? `${id}-g${generation}` : id;
}

/** Keys meta-data reserves for vmkit (user `--meta` cannot set them). */
export const RESERVED_META_KEYS = ['instance-id', 'local-hostname', 'public-keys'] as const;

export function metaData(input: ConfigDriveInput): string {
  const base = `instance-id: ${input.instanceId}\nlocal-hostname: ${input.hostname}\n`;
  const extra: Record<string, unknown> = {};
  // NoCloud gives `public-keys` to the image's default user (debian, ubuntu …).
  if (input.cloudInit?.sshKeys?.length) extra['public-keys'] = [...input.cloudInit.sshKeys];
  for (const [k, v] of Object.entries(input.cloudInit?.meta ?? {})) if (!(RESERVED_META_KEYS as readonly string[]).includes(k)) extra[k] = v;
  return Object.keys(extra).length > 0 ? base + stringify(extra, { lineWidth: 0 }) : base;
}

/**
 * vendor-data: what vmkit asks of every cloud-init guest, below the user's user-data (which
 * wins where both set the same key). Once per vmkit instance id — so once in a new instance
 * and once in each clone, not again when only NICs or user-data changed — it empties
 * /etc/machine-id and runs systemd-machine-id-setup (a fresh machine-id) and deletes the SSH
 * host keys, which cloud-init's ssh module then generates anew in the same boot.
 * `ssh_deletekeys: false` keeps the host keys when the instance-id changes for other reasons.
 */
export function vendorData(input: ConfigDriveInput): string {
  const id = (input.identity ?? input.instanceId).replace(/[^A-Za-z0-9-]/g, '');
  const renew = 'rm -f /etc/machine-id /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub; systemd-machine-id-setup >/dev/null 2>&1 || true';
  return `#cloud-config\n${stringify({ ssh_deletekeys: false, bootcmd: [['cloud-init-per', 'once', `vmkit-identity-${id}`, 'sh', '-c', renew]] }, { lineWidth: 0 })}`;
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
      // The DHCP client id is the NIC's MAC (unique per NIC), not a DUID derived from the
      // machine-id a clone inherited: two clones always hold two leases.
      lines.push('    dhcp4: true', '    dhcp-identifier: mac');
    }
  });
  return lines.join('\n') + '\n';
}

/** The user's user-data (a `#cloud-config` document, a script, any part cloud-init reads), or an empty cloud-config. */
export function userData(input?: ConfigDriveInput): string {
  return input?.cloudInit?.userData ?? '#cloud-config\n{}\n';
}

/** The drive's size in KiB: 1 MiB, more when the files need it (vfat overhead included). */
export function driveKiB(totalBytes: number): number {
  return Math.max(1024, Math.ceil((totalBytes * 1.1) / 1024) + 256);
}

export function mkfsArgv(file: string, kib = 1024): string[] {
  return ['mkfs.vfat', '-n', 'CIDATA', '-C', file, String(kib)];
}

export function mcopyArgv(image: string, files: readonly string[]): string[] {
  return ['mcopy', '-o', '-i', image, ...files, '::'];
}

/** The files of the drive, by name. */
export function configDriveFiles(input: ConfigDriveInput): Record<string, string> {
  return {
    'meta-data': metaData(input),
    'user-data': userData(input),
    'vendor-data': vendorData(input),
    'network-config': networkConfig(input),
  };
}

/** Writes the drive to `dest` (replaced atomically). */
export async function writeConfigDrive(dest: string, input: ConfigDriveInput): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'vmkit-cidata-'));
  const tmpImage = `${dest}.tmp`;
  try {
    const files = configDriveFiles(input);
    const paths: string[] = [];
    for (const [name, content] of Object.entries(files)) {
      const p = join(dir, name);
      await writeFile(p, content);
      paths.push(p);
    }
    await rm(tmpImage, { force: true });
    const total = Object.values(files).reduce((n, c) => n + Buffer.byteLength(c), 0);
    await run(mkfsArgv(tmpImage, driveKiB(total)), { errorCode: 'VMKIT_STORAGE_FAILED', timeoutMs: 20_000, hint: 'Install dosfstools (run "vmkit doctor").' });
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
