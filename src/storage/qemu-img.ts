import { asVmkitError, vmkitError } from '../errors.js';
import { run } from '../util/exec.js';

/** Every qemu-img invocation lives here, and every one names the format: QEMU never guesses. */
export type VolumeFormat = 'qcow2' | 'raw';

export interface VolumeInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFile?: string;
}

export function linkedCloneArgv(backing: string, backingFormat: VolumeFormat, dest: string): string[] {
  return ['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', backingFormat, '-b', backing, dest];
}

/**
 * A qcow2 overlay whose backing file is the image's read-only volume: O(1) in disk size,
 * which is why instances are linked clones by default.
 */
export async function createLinkedClone(backing: string, backingFormat: VolumeFormat, dest: string): Promise<void> {
  await run(linkedCloneArgv(backing, backingFormat, dest), {
    errorCode: 'VMKIT_STORAGE_FAILED',
    timeoutMs: 30_000,
    hint: 'Check that the data folder is writable and has free space.',
  });
}

/** `qemu-img resize` to `bytes` (only ever grows: `--shrink` is never passed, so qemu-img refuses a smaller size). */
export function resizeArgv(file: string, format: VolumeFormat, bytes: number): string[] {
  return ['qemu-img', 'resize', '-f', format, file, String(bytes)];
}

/** Grows a volume that no QEMU has open (a running instance's disk grows through QMP block_resize). */
export async function resizeVolume(file: string, format: VolumeFormat, bytes: number): Promise<void> {
  await run(resizeArgv(file, format, bytes), {
    errorCode: 'VMKIT_STORAGE_FAILED',
    timeoutMs: 60_000,
    hint: 'Check that the data folder is writable and has free space.',
  });
}

export function infoArgv(file: string, format: VolumeFormat): string[] {
  return ['qemu-img', 'info', '--output=json', '-f', format, file];
}

export async function volumeInfo(file: string, format: VolumeFormat): Promise<VolumeInfo> {
  const { stdout } = await run(infoArgv(file, format), { errorCode: 'VMKIT_STORAGE_FAILED', timeoutMs: 30_000 });
  const j = JSON.parse(stdout) as { format: string; 'virtual-size': number; 'actual-size': number; 'backing-filename'?: string };
  return { format: j.format, virtualSize: j['virtual-size'], actualSize: j['actual-size'], backingFile: j['backing-filename'] };
}

// ---- untrusted images: inspect, convert, compare ------------------------------------------

/** Formats vmkit reads from outside (import) and writes (export). */
export type ForeignFormat = 'qcow2' | 'raw' | 'vmdk' | 'vdi' | 'vhdx';
export const FOREIGN_FORMATS: readonly ForeignFormat[] = ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx'];

/** Resource limits for qemu-img on untrusted input (prlimit from util-linux). */
export interface Limits {
  cpuSeconds: number;
  addressSpaceBytes: number;
}
export const INFO_LIMITS: Limits = { cpuSeconds: 30, addressSpaceBytes: 1024 ** 3 };
export const CONVERT_LIMITS: Limits = { cpuSeconds: 3600, addressSpaceBytes: 2 * 1024 ** 3 };

function limited(limits: Limits, argv: string[]): string[] {
  return ['prlimit', `--cpu=${limits.cpuSeconds}`, `--as=${limits.addressSpaceBytes}`, '--', ...argv];
}

/** `qemu-img info` of an untrusted file: the format named, never a backing chain, under limits. */
export function untrustedInfoArgv(file: string, format: ForeignFormat): string[] {
  return limited(INFO_LIMITS, ['qemu-img', 'info', '--output=json', '-f', format, file]);
}

export interface ForeignInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFile?: string;
  /** qcow2: an external data file. */
  dataFile?: string;
  /** vmdk: create type and extent file names. */
  vmdkCreateType?: string;
  extents: string[];
}

export function parseInfo(json: string): ForeignInfo {
  const j = JSON.parse(json) as {
    format: string;
    'virtual-size': number;
    'actual-size'?: number;
    'backing-filename'?: string;
    'full-backing-filename'?: string;
    'format-specific'?: { type?: string; data?: { 'data-file'?: string; 'create-type'?: string; extents?: Array<{ filename?: string }> } };
  };
  const fs = j['format-specific']?.data;
  return {
    format: j.format,
    virtualSize: j['virtual-size'],
    actualSize: j['actual-size'] ?? 0,
    backingFile: j['backing-filename'] ?? j['full-backing-filename'],
    dataFile: fs?.['data-file'],
    vmdkCreateType: fs?.['create-type'],
    extents: (fs?.extents ?? []).map((e) => e.filename ?? ''),
  };
}

export async function untrustedInfo(file: string, format: ForeignFormat): Promise<ForeignInfo> {
  const { stdout } = await run(untrustedInfoArgv(file, format), {
    errorCode: 'VMKIT_IMAGE_FORMAT',
    timeoutMs: 60_000,
    hint: `The file is not a valid ${format} image (or qemu-img hit its resource limits).`,
  });
  return parseInfo(stdout);
}

export interface ConvertOptions {
  /** Untrusted source: run under CONVERT_LIMITS. */
  untrusted?: boolean;
  /** e.g. ['subformat=streamOptimized'] for OVA disks. */
  options?: string[];
  onProgress?: (fraction: number) => void;
  signal?: AbortSignal;
}

export function convertArgv(src: string, srcFormat: ForeignFormat, dest: string, destFormat: ForeignFormat, opts: Pick<ConvertOptions, 'untrusted' | 'options'> = {}): string[] {
  const argv = ['qemu-img', 'convert', '-p', '-f', srcFormat, '-O', destFormat];
  if (opts.options?.length) argv.push('-o', opts.options.join(','));
  argv.push(src, dest);
  return opts.untrusted ? limited(CONVERT_LIMITS, argv) : argv;
}

/**
 * Copies/converts a volume with qemu-img's own progress (`-p`), cancellable: an abort kills
 * qemu-img at once (the caller removes the partial output).
 */
export function convertVolume(src: string, srcFormat: ForeignFormat, dest: string, destFormat: ForeignFormat, opts: ConvertOptions = {}): Promise<void> {
  return runWithProgress(convertArgv(src, srcFormat, dest, destFormat, opts), opts);
}

/** Flattens an instance's overlay chain (overlay + backing image) into one independent volume. */
export function flattenArgv(src: string, dest: string): string[] {
  return ['qemu-img', 'convert', '-p', '-f', 'qcow2', '-O', 'qcow2', src, dest];
}

export function flattenVolume(src: string, dest: string, opts: Pick<ConvertOptions, 'onProgress' | 'signal'> = {}): Promise<void> {
  return runWithProgress(flattenArgv(src, dest), opts);
}

/**
 * The disk as it was at an internal snapshot, into a new qcow2. `-U` because the source may
 * belong to a running VM: a snapshot's clusters never change, so sharing the read is safe.
 * With `base`, only what differs from it is written and the result is an overlay of it
 * (a linked clone); without, an independent copy.
 */
export function snapshotExportArgv(src: string, tag: string, dest: string, base?: { file: string; format: VolumeFormat }): string[] {
  const argv = ['qemu-img', 'convert', '-p', '-U', '-f', 'qcow2', '-l', `snapshot.name=${tag}`, '-O', 'qcow2'];
  if (base) argv.push('-B', base.file, '-F', base.format);
  argv.push(src, dest);
  return argv;
}

export function exportSnapshotVolume(
  src: string,
  tag: string,
  dest: string,
  base: { file: string; format: VolumeFormat } | undefined,
  opts: Pick<ConvertOptions, 'onProgress' | 'signal'> = {},
): Promise<void> {
  return runWithProgress(snapshotExportArgv(src, tag, dest, base), opts);
}

/** `qemu-img info -U` of an instance volume a running QEMU may hold: size and backing. */
export function sharedInfoArgv(file: string): string[] {
  return ['qemu-img', 'info', '-U', '--output=json', '-f', 'qcow2', file];
}

export async function sharedVolumeInfo(file: string): Promise<{ virtualSize: number; backing?: { file: string; format: VolumeFormat } }> {
  const { stdout } = await run(sharedInfoArgv(file), { errorCode: 'VMKIT_STORAGE_FAILED', timeoutMs: 30_000 });
  const j = JSON.parse(stdout) as { 'virtual-size': number; 'full-backing-filename'?: string; 'backing-filename-format'?: string };
  const backingFile = j['full-backing-filename'];
  return {
    virtualSize: j['virtual-size'],
    backing: backingFile ? { file: backingFile, format: j['backing-filename-format'] === 'raw' ? 'raw' : 'qcow2' } : undefined,
  };
}

/** A linked clone whose backing file is the given volume (relative paths stay relative). */
export function rebaseArgv(file: string, backing: string, backingFormat: VolumeFormat): string[] {
  return ['qemu-img', 'rebase', '-u', '-f', 'qcow2', '-F', backingFormat, '-b', backing, file];
}

/** Points an overlay at another backing file without touching data (`rebase -u`). */
export async function rebaseUnsafe(file: string, backing: string, backingFormat: VolumeFormat): Promise<void> {
  await run(rebaseArgv(file, backing, backingFormat), { errorCode: 'VMKIT_STORAGE_FAILED', timeoutMs: 30_000 });
}

export function compareArgv(a: string, aFormat: ForeignFormat, b: string, bFormat: ForeignFormat): string[] {
  return ['qemu-img', 'compare', '-q', '-f', aFormat, '-F', bFormat, a, b];
}

/** true when the two volumes have the same guest-visible content. */
export async function compareVolumes(a: string, aFormat: ForeignFormat, b: string, bFormat: ForeignFormat): Promise<boolean> {
  const r = await run(compareArgv(a, aFormat, b, bFormat), { errorCode: 'VMKIT_STORAGE_FAILED', timeoutMs: 600_000, allowFailure: true });
  if (r.code === 0) return true;
  if (r.code === 1) return false;
  throw vmkitError('VMKIT_STORAGE_FAILED', `qemu-img compare failed: ${r.stderr.trim()}`, {
    hint: 'Check that both volumes exist and are readable.',
  });
}

async function runWithProgress(argv: string[], opts: Pick<ConvertOptions, 'onProgress' | 'signal'>): Promise<void> {
  const r = await run(argv, {
    allowFailure: true,
    signal: opts.signal,
    errorCode: 'VMKIT_QEMU_MISSING',
    hint: 'Install qemu-utils (run "vmkit doctor").',
    onStdout: (d) => {
      const last = [...d.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)].at(-1);
      if (last) opts.onProgress?.(Number(last[1]) / 100);
    },
  }).catch((err: unknown) => {
    const e = asVmkitError(err);
    if (e.code === 'VMKIT_OPERATION_CANCELLED')
      throw vmkitError('VMKIT_OPERATION_CANCELLED', 'Cancelled: qemu-img was stopped and its output removed.', { hint: 'Start the operation again.' });
    throw e;
  });
  if (r.code !== 0) {
    const why = r.stderr.trim().split('\n').slice(-3).join(' ') || `exit ${r.code}`;
    throw vmkitError('VMKIT_STORAGE_FAILED', `qemu-img failed: ${why}`, { details: { argv }, hint: 'Check free space in the data folder and that the source is a valid image.' });
  }
}

// ---- internal snapshots (stopped instances only: a running QEMU holds the image lock) ----

export type SnapshotAction = 'create' | 'apply' | 'delete';
const SNAPSHOT_FLAG: Record<SnapshotAction, string> = { create: '-c', apply: '-a', delete: '-d' };

/**
 * `qemu-img snapshot` of QEMU 7.2 has no `-f`: the format is named through --image-opts
 * instead (driver=qcow2), so it is never probed. Commas in a path are doubled (QEMU's
 * option syntax).
 */
export function qcow2ImageOpts(file: string): string {
  return `driver=qcow2,file.driver=file,file.filename=${file.replaceAll(',', ',,')}`;
}

export function snapshotArgv(action: SnapshotAction, file: string, tag: string): string[] {
  return ['qemu-img', 'snapshot', '-q', SNAPSHOT_FLAG[action], tag, '--image-opts', qcow2ImageOpts(file)];
}

/** Creates (-c), applies (-a: reverts the disk) or deletes (-d) an internal qcow2 snapshot. */
export async function diskSnapshot(action: SnapshotAction, file: string, tag: string): Promise<void> {
  await run(snapshotArgv(action, file, tag), {
    errorCode: 'VMKIT_STORAGE_FAILED',
    timeoutMs: 120_000,
    hint: 'Check that the instance is stopped and its disk is not used by another program.',
  });
}

export interface InternalSnapshotInfo {
  name: string;
  vmStateSize: number;
  createdAt: string;
}

/**
 * `qemu-img snapshot -l` of QEMU 7.2 has no JSON output; `qemu-img info --output=json`
 * lists the same snapshots, machine-readably.
 */
export function snapshotListArgv(file: string): string[] {
  return ['qemu-img', 'info', '--output=json', '-f', 'qcow2', file];
}

export async function listDiskSnapshots(file: string): Promise<InternalSnapshotInfo[]> {
  const { stdout } = await run(snapshotListArgv(file), { errorCode: 'VMKIT_STORAGE_FAILED', timeoutMs: 30_000 });
  const j = JSON.parse(stdout) as { snapshots?: QemuSnapshotJson[] };
  return (j.snapshots ?? []).map(fromQemuSnapshot);
}

/** One snapshot as QEMU reports it (qemu-img info and QMP query-named-block-nodes alike). */
export interface QemuSnapshotJson {
  name: string;
  'vm-state-size': number;
  'date-sec': number;
  'date-nsec': number;
}

export function fromQemuSnapshot(s: QemuSnapshotJson): InternalSnapshotInfo {
  return { name: s.name, vmStateSize: s['vm-state-size'], createdAt: new Date(s['date-sec'] * 1000).toISOString() };
}

export function createEmptyArgv(file: string, virtualSize: number): string[] {
  return ['qemu-img', 'create', '-q', '-f', 'qcow2', file, String(virtualSize)];
}

/** An empty standalone qcow2 disk of a size (the target of a live storage copy). */
export async function createEmptyVolume(file: string, virtualSize: number): Promise<void> {
  await run(createEmptyArgv(file, virtualSize), { errorCode: 'VMKIT_STORAGE_FAILED', hint: 'Check that the data folder is writable and has free space.', timeoutMs: 60_000 });
}
