import { constants } from 'node:fs';
import { access, chmod, copyFile, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { gunzipSync, gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { vmkitError } from '../errors.js';

/**
 * Guest firmware: SeaBIOS (QEMU's default, `bios`) or OVMF (`uefi`, Debian's `ovmf`
 * package). UEFI is two pflash chips, like libvirt and every distribution do it: the firmware
 * code, shared and read-only, and a variable store (NVRAM: boot entries, Secure Boot keys,
 * anything the guest sets with SetVariable) that each instance owns — a copy of the OVMF_VARS
 * template made at its first UEFI start, kept in the instance's folder as nvram.fd.
 */
export const FIRMWARES = ['bios', 'uefi'] as const;
export type Firmware = (typeof FIRMWARES)[number];

/** The per-instance variable store, in the instance's folder. */
export const NVRAM_FILE = 'nvram.fd';

export interface Ovmf {
  /** Firmware code (read-only pflash 0). */
  code: string;
  /** The empty variable store each instance's NVRAM is copied from (pflash 1). */
  varsTemplate: string;
}

/**
 * Code/template pairs, most wanted first: Debian 12's 4 MiB build (no Secure Boot, no SMM: it
 * runs on the i440FX machine vmkit uses), then the 2 MiB build of older packages. A pair must
 * match: a store from one build does not fit the other's flash layout.
 */
export const OVMF_CANDIDATES: readonly Ovmf[] = [
  { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', varsTemplate: '/usr/share/OVMF/OVMF_VARS_4M.fd' },
  { code: '/usr/share/OVMF/OVMF_CODE.fd', varsTemplate: '/usr/share/OVMF/OVMF_VARS.fd' },
];

/** Names `bios` or `uefi`, or says what to give (input from the CLI, the API or an OVF). */
export function parseFirmware(value: unknown, what = 'firmware'): Firmware {
  if (typeof value === 'string' && (FIRMWARES as readonly string[]).includes(value.toLowerCase())) return value.toLowerCase() as Firmware;
  if (typeof value === 'string' && value.toLowerCase() === 'efi') return 'uefi';
  throw vmkitError('VMKIT_INVALID_ARGUMENT', `Unknown ${what} "${String(value)}".`, { hint: 'Use bios (SeaBIOS) or uefi (OVMF).' });
}

async function readable(file: string): Promise<boolean> {
  return access(file, constants.R_OK).then(
    () => true,
    () => false,
  );
}

/**
 * The OVMF files to use: VMKIT_OVMF_CODE + VMKIT_OVMF_VARS when both are set (another build,
 * another distribution's paths), else the first installed candidate. Throws
 * VMKIT_FIRMWARE_MISSING, with what to install, when there is none.
 */
export async function findOvmf(env: NodeJS.ProcessEnv = process.env, candidates: readonly Ovmf[] = OVMF_CANDIDATES): Promise<Ovmf> {
  const list = env.VMKIT_OVMF_CODE && env.VMKIT_OVMF_VARS ? [{ code: env.VMKIT_OVMF_CODE, varsTemplate: env.VMKIT_OVMF_VARS }] : candidates;
  for (const c of list) if ((await readable(c.code)) && (await readable(c.varsTemplate))) return c;
  throw vmkitError('VMKIT_FIRMWARE_MISSING', `UEFI firmware (OVMF) is not installed on this host: none of ${list.map((c) => c.code).join(', ')} is readable.`, {
    hint: 'Install it ("apt-get install ovmf" on Debian/Ubuntu), or set VMKIT_OVMF_CODE and VMKIT_OVMF_VARS for the daemon; or use --firmware bios.',
  });
}

/**
 * The instance's NVRAM file, made from the template when it has none yet (first UEFI start,
 * or an instance switched to UEFI). Written beside and renamed: a crash never leaves half a
 * store. An existing store is kept as it is — that is the point of it.
 */
export async function ensureNvram(instanceDir: string, ovmf: Ovmf): Promise<string> {
  const file = join(instanceDir, NVRAM_FILE);
  const exists = await stat(file).then(
    (s) => s.isFile(),
    () => false,
  );
  if (exists) return file;
  const tmp = `${file}.new`;
  try {
    await copyFile(ovmf.varsTemplate, tmp);
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw vmkitError('VMKIT_STORAGE_FAILED', `Cannot make the UEFI variable store ${file}: ${(err as Error).message}`, { cause: err });
  }
  return file;
}

/** The command-line pieces of pflash firmware: two named block nodes, read-only code, writable store. */
export function pflashArgs(code: string, nvram: string): { machine: string; args: string[] } {
  const node = (name: string, filename: string, readOnly: boolean) => [
    '-blockdev',
    JSON.stringify({ driver: 'file', filename, 'node-name': `${name}-file`, 'read-only': readOnly }),
    '-blockdev',
    JSON.stringify({ driver: 'raw', file: `${name}-file`, 'node-name': name, 'read-only': readOnly }),
  ];
  return { machine: ',pflash0=pflash0,pflash1=pflash1', args: [...node('pflash0', code, true), ...node('pflash1', nvram, false)] };
}

/** Copies an instance's NVRAM into another instance folder (clone, snapshot), if it has one. */
export async function copyNvram(fromDir: string, toDir: string, fromName = NVRAM_FILE, toName = NVRAM_FILE): Promise<boolean> {
  const src = join(fromDir, fromName);
  const dst = join(toDir, toName);
  const tmp = `${dst}.new`;
  try {
    await copyFile(src, tmp);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  await rename(tmp, dst);
  return true;
}

/** The copy of the NVRAM a checkpoint keeps beside the instance's disk (disk-only checkpoints need it). */
export function snapshotNvramFile(snapshot: string): string {
  return `nvram-snapshot-${snapshot}.fd`;
}

/**
 * The NVRAM a checkpoint saw, kept root-only beside it; a memory checkpoint also holds it in
 * its machine state (QEMU saves the flash with the RAM and writes it back when it loads).
 */
export async function saveSnapshotNvram(instanceDir: string, snapshot: string): Promise<void> {
  if (await copyNvram(instanceDir, instanceDir, NVRAM_FILE, snapshotNvramFile(snapshot))) await chmod(join(instanceDir, snapshotNvramFile(snapshot)), 0o600);
}

/** Puts a checkpoint's NVRAM back (the instance is stopped); false when the checkpoint has none. */
export async function restoreSnapshotNvram(instanceDir: string, snapshot: string): Promise<boolean> {
  return copyNvram(instanceDir, instanceDir, snapshotNvramFile(snapshot), NVRAM_FILE);
}

export async function dropSnapshotNvram(instanceDir: string, snapshot: string): Promise<void> {
  await rm(join(instanceDir, snapshotNvramFile(snapshot)), { force: true });
}

/** An instance's NVRAM for a migration request: gzip + base64 (an OVMF store is mostly empty). */
export async function packNvram(instanceDir: string): Promise<string | undefined> {
  try {
    return gzipSync(await readFile(join(instanceDir, NVRAM_FILE))).toString('base64');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** The largest variable store accepted from a peer (OVMF's are 128 KiB to 4 MiB). */
export const MAX_NVRAM_BYTES = 4 * 1024 * 1024;

/** Writes an NVRAM a peer sent (bounded: a hostile peer cannot make it unpack to more than 4 MiB). */
export async function unpackNvram(instanceDir: string, packed: string): Promise<void> {
  let bytes: Buffer;
  try {
    bytes = gunzipSync(Buffer.from(packed, 'base64'), { maxOutputLength: MAX_NVRAM_BYTES });
  } catch (err) {
    throw vmkitError('VMKIT_BAD_REQUEST', `The UEFI variable store sent by the peer is not usable: ${(err as Error).message}`, { cause: err });
  }
  if (bytes.length === 0) throw vmkitError('VMKIT_BAD_REQUEST', 'The UEFI variable store sent by the peer is empty.');
  const file = join(instanceDir, NVRAM_FILE);
  await writeFile(`${file}.new`, bytes, { mode: 0o600 });
  await rename(`${file}.new`, file);
}
