import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, existsSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { ApiClient } from '../dist/client/client.js';
import { unixTransport } from '../dist/client/transport.js';

/** Shared pieces of the integration tests: a real daemon in its own data folder, the real CLI. */
export const ROOT = resolve(import.meta.dirname, '..');
export const VMKIT_BIN = join(ROOT, 'bin', 'vmkit.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface TestDaemon {
  dir: string;
  proc: ChildProcess;
  env: NodeJS.ProcessEnv;
  cli(args: string[], options?: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): CliResult;
  cliJson<T = unknown>(args: string[]): T;
  api<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  kill9(): Promise<void>;
  restart(): Promise<void>;
  stop(): Promise<void>;
  /** What the daemon printed (stdout and stderr, every run). */
  log(): string;
}

export function testEnv(dir: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    VMKIT_DIR: dir,
    VMKIT_ACCEL: process.env.VMKIT_TEST_ACCEL ?? 'tcg',
    VMKIT_REMOTE: '',
    VMKIT_TOKEN: '',
    VMKIT_TOKEN_FILE: '',
    // The CLI's remotes (vmkit remote add) stay in the test's folder, not the user's ~/.config.
    VMKIT_CONFIG_DIR: join(dir, 'cli-config'),
    ...extra,
  };
}

// A daemon starts in ≈ 1 s; on a 2-core machine loaded by many test runs it took over 20 s.
async function waitForSocket(path: string, proc: ChildProcess, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`daemon exited with ${proc.exitCode}`);
    const ok = await new Promise<boolean>((res) => {
      const s = net.connect(path, () => {
        s.destroy();
        res(true);
      });
      s.on('error', () => res(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`daemon socket ${path} did not appear`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function startTestDaemon(options: { extraArgs?: string[]; env?: NodeJS.ProcessEnv; netns?: string; dir?: string } = {}): Promise<TestDaemon> {
  // Short paths: QEMU's unix sockets live below the data folder (107-byte limit).
  const dir = options.dir ?? mkdtempSync('/tmp/vmkt-');
  const env = testEnv(dir, options.env);
  let log = '';
  const spawnDaemon = () => {
    const daemonArgv = [process.execPath, VMKIT_BIN, 'daemon', '--dir', dir, ...(options.extraArgs ?? [])];
    // In a network namespace every bridge, tap, rule and dnsmasq the daemon makes lives there.
    // nsenter, not `ip netns exec`: that one remounts /sys, and the cgroup hierarchies under
    // /sys/fs/cgroup (where the daemon puts each QEMU) would be gone for the daemon.
    const argv = options.netns ? ['nsenter', `--net=/run/netns/${options.netns}`, '--', ...daemonArgv] : daemonArgv;
    const proc = spawn(argv[0]!, argv.slice(1), {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout?.on('data', (d: Buffer) => (log += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    return proc;
  };
  const d: TestDaemon = {
    dir,
    env,
    proc: spawnDaemon(),
    cli(args, o = {}) {
      const r = spawnSync(process.execPath, [VMKIT_BIN, ...args], {
        env: { ...env, ...o.env },
        input: o.input,
        encoding: 'utf8',
        timeout: o.timeoutMs ?? 120_000,
      });
      return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
    },
    cliJson<T>(args: string[]): T {
      const r = d.cli([...args, '--format', 'json']);
      if (r.code !== 0) throw new Error(`vmkit ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
      return JSON.parse(r.stdout) as T;
    },
    api(method, path, body) {
      return unixRequest(join(dir, 'vmkit.sock'), method, path, body);
    },
    log() {
      return log;
    },
    async kill9() {
      d.proc.kill('SIGKILL');
      await new Promise((r) => (d.proc.exitCode !== null || d.proc.signalCode ? r(null) : d.proc.once('exit', r)));
    },
    async restart() {
      d.proc = spawnDaemon();
      await waitForSocket(join(dir, 'vmkit.sock'), d.proc);
    },
    async stop() {
      // Delete every instance the test left (this kills their QEMU), then the daemon.
      const qemus = qemuPidsUnder(dir);
      if (d.proc.exitCode === null && !d.proc.signalCode) {
        d.proc.kill('SIGTERM');
        await new Promise((r) => d.proc.once('exit', r));
      }
      for (const pid of qemus.concat(qemuPidsUnder(dir))) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await waitForSocket(join(dir, 'vmkit.sock'), d.proc);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${log}`);
  }
  return d;
}

/** QEMU processes whose command line mentions a folder (the test's data folder). */
export function qemuPidsUnder(dir: string): number[] {
  const pids: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8');
      if (cmd.startsWith('qemu-system') || cmd.includes('/qemu-system')) {
        if (cmd.includes(dir)) pids.push(Number(e));
      }
    } catch {
      /* raced */
    }
  }
  return pids;
}

export function processAlive(pid: number): boolean {
  if (!existsSync(`/proc/${pid}`)) return false;
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/**
 * A request over the daemon's socket through the project's API client, answered as it came:
 * the status and the parsed JSON (or the text), error answers included — tests assert on
 * them. A string body is sent as it is (malformed JSON is a test case).
 */
export async function unixRequest<T>(socketPath: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: T }> {
  const client = new ApiClient({
    transport: unixTransport(socketPath),
    // A test that cannot reach its daemon fails on the socket's own error.
    unreachable: (err) => {
      throw err;
    },
  });
  const res =
    typeof body === 'string'
      ? await client.sendRaw(method, path, body, { 'content-type': 'application/json', ...headers }, { accept: '*/*' })
      : await client.raw(method, path, body, { headers, accept: '*/*' });
  const text = res.body.toString('utf8');
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* text answer */
  }
  return { status: res.status, body: parsed as T };
}

export async function httpGet(url: string, timeoutMs = 2000): Promise<{ status: number; body: string }> {
  const ctrl = new AbortController();
  const t = setTimeout(() => ctrl.abort(), timeoutMs);
  try {
    const res = await fetch(url, { signal: ctrl.signal });
    return { status: res.status, body: await res.text() };
  } finally {
    clearTimeout(t);
  }
}

/** Polls until the guest answers HTTP through a forward. */
export async function waitForHttp(url: string, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const r = await httpGet(url, 1500);
      if (r.status === 200) return r.body;
    } catch (err) {
      last = err;
    }
    await sleep(200);
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms: ${String(last)}`);
}

/** A TCP port nobody listens on right now (the kernel picks it). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => res(port));
    });
    s.on('error', rej);
  });
}

export interface GuestStatus {
  hostname: string;
  uptime: number;
  bootCount: number;
  ipv4: string[];
  nics: Array<{ name: string; mac: string; driver: string; ipv4: string[] }>;
  counter: number;
}

export async function guestStatus(port: number): Promise<GuestStatus> {
  return JSON.parse(await waitForHttp(`http://127.0.0.1:${port}/status`)) as GuestStatus;
}

/**
 * Waits for the appliance's "ready" console line (its hostname and address are set) and
 * returns the IPv4 address it reports ('' without one).
 */
export async function waitApplianceReady(d: TestDaemon, name: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const m = /vmkit-appliance: ready hostname=(\S+) ipv4=(\S*)/.exec(d.cli(['logs', name]).stdout);
    if (m) return m[2]!;
    await sleep(500);
  }
  throw new Error(`${name} did not become ready:\n${d.cli(['logs', name]).stdout.slice(-2000)}`);
}

/** A token in a file of its own (mode 0600), for --token-file. */
export function tokenFile(token: string): string {
  const file = join(mkdtempSync('/tmp/vmkt-token-'), 'token');
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return file;
}

/** Types a command on the guest's serial shell and hangs up (the command goes on in the guest). */
export function serialSend(socketPath: string, command: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath, () => {
      s.write(`\n${command}\n`, () =>
        setTimeout(() => {
          s.destroy();
          resolve();
        }, 300),
      );
    });
    s.on('data', () => undefined);
    s.on('error', reject);
  });
}
