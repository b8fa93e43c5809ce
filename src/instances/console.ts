import { join } from 'node:path';
import { RUN_FILES } from '../qemu/argv.js';
import type { InstanceContext } from './registry.js';
import { readConsoleLog } from './console-log.js';

/** An instance's consoles: the serial log on disk, and the serial and VNC sockets of its QEMU. */
export class Consoles {
  constructor(private readonly shared: InstanceContext) {}

  async logs(name: string, tailBytes?: number): Promise<string> {
    const inst = await this.shared.registry.load(name);
    // Both parts of a rotated log (console.log.1, then console.log); none yet: an empty console.
    return readConsoleLog(this.shared.paths.consoleLog(inst.id), tailBytes);
  }

  async serialSocket(name: string): Promise<string> {
    const inst = await this.shared.registry.load(name);
    this.shared.registry.runtime(inst);
    return join(this.shared.paths.run(inst.id), RUN_FILES.serial);
  }

  /** The VNC server socket of a running instance (its graphical console). */
  async vncSocket(name: string): Promise<string> {
    const inst = await this.shared.registry.load(name);
    this.shared.registry.runtime(inst);
    return join(this.shared.paths.run(inst.id), RUN_FILES.vnc);
  }
}
