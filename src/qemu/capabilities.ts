import { run } from '../util/exec.js';

/**
 * What this host's QEMU is: its version and the machine types it can run. The cluster
 * publishes these per host; a live migration needs the instance's machine type on the target
 * and a target QEMU at least as new as the source's.
 */
export interface QemuCapabilities {
  version: string;
  machines: string[];
  /** What the `pc` alias stands for here (e.g. pc-i440fx-7.2). */
  pc: string;
}

const cache = new Map<string, Promise<QemuCapabilities>>();

export function parseMachineHelp(text: string): { machines: string[]; pc?: string } {
  const machines: string[] = [];
  let pc: string | undefined;
  for (const line of text.split('\n')) {
    const m = /^(\S+)\s+(.*)$/.exec(line.trim());
    if (!m || m[1] === 'Supported') continue;
    machines.push(m[1]!);
    const alias = /\(alias of ([^)]+)\)/.exec(m[2]!);
    if (m[1] === 'pc' && alias) pc = alias[1];
  }
  return { machines, pc };
}

export function parseQemuVersion(text: string): string {
  return /version (\d+\.\d+(?:\.\d+)?)/.exec(text)?.[1] ?? 'unknown';
}

export function qemuCapabilities(binary: string): Promise<QemuCapabilities> {
  let found = cache.get(binary);
  if (!found) {
    found = (async () => {
      const opts = { errorCode: 'VMKIT_QEMU_MISSING' as const, hint: 'Install qemu-system-x86 ("vmkit doctor" checks the host).', timeoutMs: 15_000 };
      const version = parseQemuVersion((await run([binary, '-version'], opts)).stdout);
      const help = parseMachineHelp((await run([binary, '-machine', 'help'], opts)).stdout);
      return { version, machines: help.machines, pc: help.pc ?? 'pc' };
    })();
    found.catch(() => cache.delete(binary));
    cache.set(binary, found);
  }
  return found;
}

/** -1, 0, 1 like a comparator, on dotted numeric versions. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}
