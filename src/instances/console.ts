import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RUN_FILES } from '../qemu/argv.js';
import type { InstanceContext } from './registry.js';

/** An instance's consoles: the serial log on disk, and the serial and VNC sockets of its QEMU. */
export class Consoles {
  constructor(private readonly shared: InstanceContext) {}

  async logs(name: string, tailBytes?: number): Promise<string> {
    const inst = await this.shared.registry.load(name);
    // No log yet (never started): an empty console.
    const text = await readFile(this.shared.paths.consoleLog(inst.id), 'utf8').catch(() => '');
    return tailBytes && text.length > tailBytes ? text.slice(-tailBytes) : text;
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
