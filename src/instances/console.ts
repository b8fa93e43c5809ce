import { join } from 'node:path';
import { RUN_FILES } from '../qemu/argv.js';
import type { InstanceContext } from './registry.js';
import { readConsoleLog } from './console-log.js';

/** An instance's consoles: the serial log on disk, and the serial and VNC sockets of its QEMU. */
export class Consoles {
  constructor(private readonly shared: InstanceContext) {}

  /** The serial log; `tailLines`: only its last N lines. */
  async logs(name: string, tailLines?: number): Promise<string> {
    const inst = await this.shared.registry.load(name);
    // Both parts of a rotated log (console.log.1, then console.log); none yet: an empty console.
    const text = await readConsoleLog(this.shared.paths.consoleLog(inst.id));
    return tailLines ? lastLines(text, tailLines) : text;
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

/** The last `n` lines of `text` (a final newline ends the last line; it does not start another). */
export function lastLines(text: string, n: number): string {
  let end = text.endsWith('\n') ? text.length - 1 : text.length;
  let at = end;
  for (let i = 0; i < n; i++) {
    const nl = text.lastIndexOf('\n', at - 1);
    if (nl < 0) return text;
    at = nl;
    end = nl;
  }
  return text.slice(end + 1);
}
