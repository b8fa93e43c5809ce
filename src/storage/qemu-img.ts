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

export function infoArgv(file: string, format: VolumeFormat): string[] {
  return ['qemu-img', 'info', '--output=json', '-f', format, file];
}

export async function volumeInfo(file: string, format: VolumeFormat): Promise<VolumeInfo> {
  const { stdout } = await run(infoArgv(file, format), { errorCode: 'VMKIT_STORAGE_FAILED', timeoutMs: 30_000 });
  const j = JSON.parse(stdout) as { format: string; 'virtual-size': number; 'actual-size': number; 'backing-filename'?: string };
  return { format: j.format, virtualSize: j['virtual-size'], actualSize: j['actual-size'], backingFile: j['backing-filename'] };
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
