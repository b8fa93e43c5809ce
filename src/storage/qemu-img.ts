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
