import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/**
 * Network namespaces for tests: everything a test makes (bridges, taps, veths, rules,
 * dnsmasq) lives in namespaces it creates and removes; the machine's own network is never
 * touched.
 */
export function sh(argv: string[], input?: string): string {
  return execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}

export function nsRun(ns: string, argv: string[], timeoutMs = 30_000): { code: number; stdout: string; stderr: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

export function ns(ns: string, argv: string[]): string {
  const r = nsRun(ns, argv);
  if (r.code !== 0) throw new Error(`[${ns}] ${argv.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

export function createNetns(tag: string): string {
  const name = `vmkt-${tag}-${randomBytes(3).toString('hex')}`;
  sh(['ip', 'netns', 'add', name]);
  ns(name, ['ip', 'link', 'set', 'lo', 'up']);
  return name;
}

/** Kills every process left in the namespace (dnsmasq, QEMU, servers), then removes it. */
export function deleteNetns(name: string): void {
  if (!name.startsWith('vmkt-')) throw new Error(`refusing to delete namespace ${name}`);
  for (let i = 0; i < 3; i++) {
    const pids = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).stdout?.split('\n').filter(Boolean).map(Number) ?? [];
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    spawnSync('sleep', ['0.2']);
  }
  spawnSync('ip', ['netns', 'del', name]);
}

/** A veth pair between two namespaces, with optional addresses (CIDR). */
export function veth(a: string, aIf: string, aAddr: string | undefined, b: string, bIf: string, bAddr: string | undefined): void {
  ns(a, ['ip', 'link', 'add', aIf, 'type', 'veth', 'peer', 'name', bIf, 'netns', b]);
  if (aAddr) ns(a, ['ip', 'addr', 'add', aAddr, 'dev', aIf]);
  if (bAddr) ns(b, ['ip', 'addr', 'add', bAddr, 'dev', bIf]);
  ns(a, ['ip', 'link', 'set', aIf, 'up']);
  ns(b, ['ip', 'link', 'set', bIf, 'up']);
}

export function links(name: string): string[] {
  return ns(name, ['ip', '-o', 'link', 'show'])
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(': ')[1]!.split('@')[0]!);
}

export function dnsmasqPids(name: string): number[] {
  const pids = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).stdout?.split('\n').filter(Boolean).map(Number) ?? [];
  return pids.filter((p) => {
    try {
      return sh(['cat', `/proc/${p}/comm`]).trim() === 'dnsmasq';
    } catch {
      return false;
    }
  });
}

/**
 * Runs a shell command on a guest's serial console (the appliance's root shell) and returns
 * its output and exit status.
 */
export async function guestExec(serialSocket: string, command: string, timeoutMs = 30_000): Promise<{ code: number; out: string }> {
  const net = await import('node:net');
  const mark = `__END${Math.random().toString(36).slice(2, 8)}__`;
  return new Promise((resolve, reject) => {
    const s = net.connect(serialSocket);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`guest command timed out: ${command}\n${buf.slice(-2000)}`));
    }, timeoutMs);
    s.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      const m = new RegExp(`${mark}(\\d+)`).exec(buf);
      if (m) {
        clearTimeout(timer);
        s.destroy();
        const start = buf.indexOf(`${mark}$?`);
        const body = buf.slice(start >= 0 ? buf.indexOf('\n', start) + 1 : 0, m.index);
        resolve({ code: Number(m[1]), out: body.replace(/\x1b\[[0-9;]*[a-zA-Z]/g, '').replace(/\r/g, '') });
      }
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('connect', () => s.write(`\n${command}; echo ${mark}$?\n`));
  });
}
