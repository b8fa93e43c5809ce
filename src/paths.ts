import { join } from 'node:path';

/** The layout of a data folder (default /var/lib/vmkit, or VMKIT_DIR / --dir). */
export const DEFAULT_DATA_DIR = '/var/lib/vmkit';

export function resolveDataDir(flag?: string): string {
  return flag || process.env.VMKIT_DIR || DEFAULT_DATA_DIR;
}

export class DataPaths {
  constructor(readonly root: string) {}
  get db(): string {
    return join(this.root, 'vmkit.db');
  }
  get socket(): string {
    return join(this.root, 'vmkit.sock');
  }
  get daemonPid(): string {
    return join(this.root, 'vmkitd.pid');
  }
  get images(): string {
    return join(this.root, 'images');
  }
  get instances(): string {
    return join(this.root, 'instances');
  }
  image(name: string): string {
    return join(this.images, name);
  }
  instance(id: string): string {
    return join(this.instances, id);
  }
  /** Sockets and the pid file live in a short per-instance folder (unix socket paths are limited to 107 bytes). */
  run(id: string): string {
    return join(this.instances, id, 'run');
  }
  consoleLog(id: string): string {
    return join(this.instances, id, 'console.log');
  }
}
