// Shared machinery of the vmkit benchmarks (bench/*.ts, compiled to dist-bench/ by
// bench/tsconfig.json). Importing it installs the clean-up handlers (exit on failure, Ctrl-C,
// SIGTERM, SIGHUP: everything registered with onCleanup() runs, last first). The daemon is
// spoken to with vmkit's own API client (src/client), raw QEMU with vmkit's QMP client
// (src/qemu/qmp.ts), both from the build (../dist/).

import { spawn, spawnSync, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { ApiClient } from '../dist/client/client.js';
import { unixTransport } from '../dist/client/transport.js';
import { TCG_CPU_MODEL } from '../dist/qemu/argv.js';
import { connectWithRetry, type QmpClient } from '../dist/qemu/qmp.js';
import { runJob } from '../dist/qemu/jobs.js';
import type { Operation } from '../dist/wire/types.js';

export const execFileP = promisify(execFile);
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const VMKIT_BIN = path.join(ROOT, 'bin', 'vmkit.js');

/**
 * The guest CPU model vmkit gives TCG guests (src/qemu/argv.ts), from the build itself: every
 * contender boots the same model, or the comparison measures CPU models instead of toolstacks
 * (`max` boots the appliance ≈15 % slower than this one under TCG).
 */
export { TCG_CPU_MODEL };
export const MARKER = 'vmkit-appliance: userspace';
export const POLL_MS = 5; // the same console poll for all three
export const BOOT_TIMEOUT_MS = 120_000;
export const DOMAIN = 'vmkit-bench';
export const VIRSH = ['-c', 'qemu:///system'];

import { die } from './args.js';
export { die };

export const log = (msg) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 23)}] ${msg}\n`);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- clean-up registry (runs on success, failure and Ctrl-C) -----------------------------

const cleanups = []; // LIFO
let cleaning = null;
export function onCleanup(name, fn) {
  const entry = { name, fn };
  cleanups.push(entry);
  return () => {
    const i = cleanups.indexOf(entry);
    if (i >= 0) cleanups.splice(i, 1);
  };
}
/** True once the clean-up has begun (a signal or a failure): long loops should stop. */
export function isCleaningUp() {
  return cleaning !== null;
}
export async function cleanupAll() {
  if (cleaning) return cleaning;
  cleaning = (async () => {
    while (cleanups.length) {
      const { name, fn } = cleanups.pop();
      try {
        await fn();
      } catch (err) {
        log(`clean-up "${name}" failed: ${err.message}`);
      }
    }
  })();
  return cleaning;
}
// A closed stdout/stderr (e.g. "| head") must not kill the bench before it cleans up.
for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
for (const ev of ['uncaughtException', 'unhandledRejection']) {
  process.on(ev, (err) => {
    try {
      log(`${ev}: ${err?.stack ?? err}`);
    } catch {
      /* stderr gone */
    }
    cleanupAll().finally(() => process.exit(1));
  });
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    log(`${sig}: cleaning up`);
    cleanupAll().finally(() => process.exit(130));
  });
}

// ---- helpers ------------------------------------------------------------------------------

export function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

export async function waitPidGone(pid, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!pidAlive(pid)) return true;
    // a zombie child of ours counts as gone
    const st = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (!st || / Z /.test(st.slice(st.lastIndexOf(')')))) return true;
    await sleep(20);
  }
  return !pidAlive(pid);
}

export async function killPid(pid, label) {
  if (!pid || !pidAlive(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  if (await waitPidGone(pid, 5000)) return;
  log(`${label} (pid ${pid}) ignored SIGTERM, sending SIGKILL`);
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
  await waitPidGone(pid, 5000);
}

export function fileSize(file) {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/**
 * Resolves with performance.now() when `marker` (default MARKER) shows up in `file` after
 * byte `offset`. The same 5 ms poll for all contenders (QEMU itself writes the file in all cases).
 */
export function waitForMarker(file: string, offset: number, timeoutMs = BOOT_TIMEOUT_MS, marker = MARKER): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const started = performance.now();
    let pos = offset;
    let text = '';
    let fd = -1;
    const buf = Buffer.alloc(64 * 1024);
    const finish = (fn, v) => {
      clearInterval(timer);
      if (fd >= 0)
        try {
          fs.closeSync(fd);
        } catch {
          /* ignore */
        }
      fn(v);
    };
    const tick = () => {
      const now = performance.now();
      try {
        if (fd < 0) fd = fs.openSync(file, 'r');
        for (;;) {
          const n = fs.readSync(fd, buf, 0, buf.length, pos);
          if (n <= 0) break;
          pos += n;
          text += buf.toString('latin1', 0, n);
        }
      } catch (e) {
        if (e.code !== 'ENOENT') return finish(reject, e);
      }
      if (text.includes(marker)) return finish(resolve, now);
      if (text.length > 1 << 20) text = text.slice(-4096);
      if (now - started > timeoutMs) finish(reject, new Error(`"${marker}" did not appear in ${file} within ${timeoutMs} ms`));
    };
    const timer = setInterval(tick, POLL_MS);
    tick();
  });
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
export function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

export async function run(cmd, args, opts = {}) {
  return execFileP(cmd, args, { maxBuffer: 16 << 20, ...opts });
}

// ---- HTTP over the daemon's unix socket --------------------------------------------------

/** What the benches ask of a daemon: answers as envelopes, operations waited for. */
export interface BenchApi {
  /** The answer envelope (`raw`: status and text, whatever the status). */
  request(method: string, urlPath: string, body?: unknown, opts?: { raw?: boolean }): Promise<any>;
  /** Waits for the operation at `opPath` (/1.0/operations/ID); throws its error when it failed. */
  waitOp(opPath: string, timeoutS?: number): Promise<Operation>;
  close(): void;
}

/** vmkit's own API client (src/client) over the daemon's unix socket. */
export function makeApi(socketPath: string): BenchApi {
  const client = new ApiClient({
    transport: unixTransport(socketPath),
    // The bench reports the socket's own error (ENOENT while the daemon starts, …).
    unreachable: (err) => {
      throw err;
    },
  });
  return {
    async request(method, urlPath, body, opts = {}) {
      if (!opts.raw) return client.request(method, urlPath, body);
      const r = await client.raw(method, urlPath, body);
      return { status: r.status, text: r.body.toString('utf8') };
    },
    async waitOp(opPath, timeoutS = 120) {
      const id = opPath.split('/').pop()!;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`operation ${id} did not end within ${timeoutS} s`)), timeoutS * 1000);
      });
      try {
        return await Promise.race([client.waitOperation(id), timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
    close() {},
  };
}

// ---- vmkit daemon -------------------------------------------------------------------------

/** A vmkit daemon the bench started (and stops at clean-up). */
export interface BenchDaemon {
  pid: number;
  dir: string;
  api: BenchApi;
  child: ReturnType<typeof spawn>;
  env: NodeJS.ProcessEnv;
  /** GET /1.0 once it answered. */
  info?: any;
  stop(): Promise<void>;
}

export async function startDaemon(dir: string, o: { accel: string; applianceDir: string }, extraEnv: NodeJS.ProcessEnv = {}): Promise<BenchDaemon> {
  const env = { ...process.env, VMKIT_ACCEL: o.accel, VMKIT_APPLIANCE_DIR: o.applianceDir, VMKIT_DIR: dir, ...extraEnv };
  const errLog = fs.openSync(path.join(dir, '..', `${path.basename(dir)}.daemon.log`), 'a');
  const child = spawn(process.execPath, [VMKIT_BIN, 'daemon', '--dir', dir], { env, stdio: ['ignore', errLog, errLog] });
  fs.closeSync(errLog);
  let exited = null;
  child.on('exit', (code, sig) => (exited = code ?? sig));
  const api = makeApi(path.join(dir, 'vmkit.sock'));
  let stopped = false;
  const daemon: BenchDaemon = { pid: child.pid!, dir, api, child, env, stop: async () => {}, info: undefined };
  daemon.stop = async () => {
    if (stopped) return;
    stopped = true;
    // Force-stop every instance still running (QEMU outlives the daemon by design).
    try {
      const list = await api.request('GET', '/1.0/instances');
      for (const inst of list.metadata) {
        if (inst.state === 'stopped') continue;
        try {
          const r = await api.request('PUT', `/1.0/instances/${inst.name}/state`, { action: 'stop', force: true });
          await api.waitOp(r.operation, 30);
        } catch (e) {
          log(`stopping ${inst.name}: ${e.message}`);
        }
      }
    } catch (e) {
      log(`listing instances at daemon stop: ${e.message}`);
    }
    api.close();
    if (exited === null) await killPid(child.pid, 'vmkit daemon');
    // Belt and braces: any QEMU left behind in this data folder.
    for (const pidFile of await findFiles(path.join(dir, 'instances'), 'qemu.pid')) {
      const pid = Number((await fsp.readFile(pidFile, 'utf8').catch(() => '')).trim());
      if (pid && (await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).includes(dir)) await killPid(pid, 'leftover QEMU');
    }
  };
  onCleanup(`vmkit daemon ${dir}`, () => daemon.stop());
  const end = Date.now() + 30_000;
  for (;;) {
    if (exited !== null) throw new Error(`vmkit daemon exited (${exited}); see ${dir}.daemon.log`);
    try {
      const info = await api.request('GET', '/1.0');
      daemon.info = info.metadata;
      break;
    } catch {
      if (Date.now() > end) throw new Error('vmkit daemon did not answer within 30 s');
      await sleep(50);
    }
  }
  return daemon;
}

export async function findFiles(dir, base, depth = 3) {
  const out = [];
  let entries;
  try {
    entries = await fsp.readdir(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && depth > 0) out.push(...(await findFiles(p, base, depth - 1)));
    else if (e.name === base) out.push(p);
  }
  return out;
}

/** CPU time (user + system, ms) used so far by the given processes (0 for vanished ones). */
export async function cpuMs(pids) {
  let ticks = 0;
  for (const pid of pids) {
    const st = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (!st) continue;
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    ticks += Number(f[11]) + Number(f[12]); // utime, stime
  }
  return (ticks * 1000) / CLK_TCK;
}
export const CLK_TCK = 100;

export async function rssKiB(pid) {
  const st = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(st)[1]);
}

// ---- the guest ----------------------------------------------------------------------------

export async function prepareGuest(o, work) {
  const manifest = JSON.parse(await fsp.readFile(path.join(o.applianceDir, 'image.json'), 'utf8'));
  // Private copies in a world-readable folder: libvirt's QEMU runs as libvirt-qemu and its
  // dynamic ownership relabels (chowns) every file of the domain incl. the backing file, so
  // nothing of the shared .cache/appliance is handed to it.
  const g = path.join(work, 'guest');
  await fsp.mkdir(g, { mode: 0o755 });
  await fsp.chmod(g, 0o755);
  const files: Record<string, string> = {};
  for (const [key, name] of [
    ['kernel', manifest.boot.kernel],
    ['initrd', manifest.boot.initrd],
    ['base', manifest.disks[0].file],
  ]) {
    files[key] = path.join(g, name);
    await fsp.copyFile(path.join(o.applianceDir, name), files[key]);
    await fsp.chmod(files[key], 0o644);
  }
  const overlay = async (name) => {
    const f = path.join(g, name);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', manifest.disks[0].format, '-b', files.base, f]);
    await fsp.chmod(f, 0o666);
    return f;
  };
  return {
    manifest,
    cmdline: manifest.boot.cmdline,
    memoryMiB: manifest.defaults.memoryMiB,
    cpus: manifest.defaults.cpus,
    ...files,
    dir: g,
    overlay, // (file name) => path of a new qcow2 overlay of the base image in the guest folder
    rawOverlay: await overlay('raw-overlay.qcow2'),
    libvirtOverlay: await overlay('libvirt-overlay.qcow2'),
    rawConsole: path.join(g, 'raw-console.log'),
    libvirtConsole: path.join(g, 'libvirt-console.log'),
  };
}

// ---- contender 1: raw QEMU ----------------------------------------------------------------

/** Options of one guest's argv or domain (each has a default). */
export interface GuestOptions {
  name?: string;
  memoryMiB?: number;
  overlay?: string;
  console?: string;
  mac?: string;
  qmp?: string;
  hostfwd?: string[];
  /** A NoCloud drive (raw, read-only) attached as a second virtio disk. */
  cidata?: string;
}

/**
 * What rawArgv and domainXml boot: the appliance (prepareGuest: its kernel, initrd and command
 * line) or, without `kernel`, a disk image that boots by itself (the Debian cloud image).
 */
export interface BenchGuest {
  cpus: number;
  memoryMiB: number;
  /** The overlays' read-only backing file. */
  base: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  rawOverlay?: string;
  rawConsole?: string;
  libvirtOverlay?: string;
  libvirtConsole?: string;
}

/**
 * A minimal QEMU argv for a bench guest. `opts` (all optional) override the defaults of
 * bench/start.js: name, memoryMiB, overlay (root disk), console (serial log file), mac,
 * qmp (path of a QMP unix socket to serve), hostfwd ("tcp::HOST-:GUEST" list), cidata.
 */
export function rawArgv(o: { accel: string }, guest: BenchGuest, opts: GuestOptions = {}): string[] {
  const argv = [
    '-name',
    `guest=${opts.name ?? 'bench-raw'}`,
    '-nodefaults',
    '-no-user-config',
    '-machine',
    `pc,accel=${o.accel}`,
    '-cpu',
    o.accel === 'kvm' ? 'host' : TCG_CPU_MODEL,
    '-smp',
    String(guest.cpus),
    '-m',
    `${opts.memoryMiB ?? guest.memoryMiB}M`,
    '-display',
    'none',
    '-vga',
    'none',
    '-chardev',
    `file,id=serial0,path=${opts.console ?? guest.rawConsole},append=on`,
    '-serial',
    'chardev:serial0',
    ...(guest.kernel ? ['-kernel', guest.kernel, '-initrd', guest.initrd, '-append', guest.cmdline] : []),
    '-blockdev',
    JSON.stringify({ driver: 'file', filename: opts.overlay ?? guest.rawOverlay, 'node-name': 'root-file' }),
    '-blockdev',
    JSON.stringify({ driver: 'qcow2', file: 'root-file', 'node-name': 'root' }),
    '-device',
    'virtio-blk-pci,drive=root,id=root-dev,bootindex=1',
  ];
  if (opts.cidata) {
    argv.push(
      '-blockdev',
      JSON.stringify({ driver: 'file', filename: opts.cidata, 'node-name': 'cidata-file', 'read-only': true }),
      '-blockdev',
      JSON.stringify({ driver: 'raw', file: 'cidata-file', 'node-name': 'cidata', 'read-only': true }),
      '-device',
      'virtio-blk-pci,drive=cidata,id=cidata-dev',
    );
  }
  argv.push(
    '-netdev',
    `user,id=nic0${(opts.hostfwd ?? []).map((f) => `,hostfwd=${f}`).join('')}`,
    '-device',
    `virtio-net-pci,netdev=nic0,mac=${opts.mac ?? '52:54:00:be:4c:01'},id=nic0-dev`,
  );
  if (opts.qmp) argv.push('-chardev', `socket,id=qmp,path=${opts.qmp},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control');
  return argv;
}
// ---- contender 2: libvirt -----------------------------------------------------------------

export async function procsNamed(name) {
  const pids = [];
  for (const d of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const comm = (await fsp.readFile(`/proc/${d}/comm`, 'utf8').catch(() => '')).trim();
    if (comm !== name) continue;
    // A zombie is not running: the libvirtd/virtlogd of the previous bench run stays one until
    // PID 1 reaps it (slow on this host), and was then taken for a running daemon ("already
    // runs; using it", then "libvirtd does not answer").
    const st = await fsp.readFile(`/proc/${d}/stat`, 'utf8').catch(() => '');
    if (!st || st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3) === 'Z') continue;
    pids.push(Number(d));
  }
  return pids;
}

export async function haveCmd(cmd) {
  try {
    await run('sh', ['-c', `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

export async function ensureLibvirtInstalled() {
  if ((await haveCmd('virsh')) && (await haveCmd('libvirtd')) && (await haveCmd('virtlogd'))) return;
  if (process.getuid() !== 0) throw new Error('libvirt is not installed and this is not root');
  log('installing libvirt (apt-get install libvirt-daemon-system libvirt-clients)');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'libvirt-daemon-system', 'libvirt-clients'], { env });
  try {
    await install();
  } catch {
    await run('apt-get', ['update', '-qq'], { env });
    await install();
  }
}

export async function startLibvirtDaemons() {
  const pids = async () => [...(await procsNamed('libvirtd')), ...(await procsNamed('virtlogd'))];
  await startLibvirtDaemonsOnly();
  return pids;
}

export async function startLibvirtDaemonsOnly() {
  for (const name of ['virtlogd', 'libvirtd']) {
    if ((await procsNamed(name)).length) {
      log(`${name} already runs; using it (and leaving it running)`);
      continue;
    }
    const before = new Set(await procsNamed(name));
    await run(name, ['-d']);
    let mine = [];
    for (let i = 0; i < 100 && !mine.length; i++) {
      mine = (await procsNamed(name)).filter((p) => !before.has(p));
      if (!mine.length) await sleep(50);
    }
    if (!mine.length) throw new Error(`${name} -d did not leave a running ${name}`);
    log(`started ${name} (pid ${mine.join(',')})`);
    onCleanup(`stop ${name}`, async () => {
      for (const p of mine) await killPid(p, name);
      log(`stopped ${name}`);
    });
  }
  // libvirtd needs a moment before its socket answers
  for (let i = 0; ; i++) {
    try {
      await run('virsh', [...VIRSH, 'version']);
      return;
    } catch (e) {
      if (i > 100) throw new Error(`libvirtd does not answer: ${e.stderr || e.message}`);
      await sleep(100);
    }
  }
}

/** TCG_CPU_MODEL as libvirt's <cpu> element (model + required features); host-passthrough on KVM. */
export function libvirtCpu(accel) {
  if (accel === 'kvm') return "<cpu mode='host-passthrough'/>";
  const [model, ...features] = TCG_CPU_MODEL.split(',');
  const feats = features.map((f) => `<feature policy='require' name='${f.replace(/^\+/, '')}'/>`).join('');
  return `<cpu mode='custom' match='exact'><model fallback='forbid'>${model}</model>${feats}</cpu>`;
}

/**
 * The libvirt domain of bench/start.js: the same guest as rawArgv. `opts` (all optional):
 * name, memoryMiB, overlay (root disk), console (serial log file), mac, cidata.
 */
export function domainXml(o: { accel: string }, guest: BenchGuest, opts: GuestOptions = {}): string {
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;');
  const boot = guest.kernel
    ? `<kernel>${esc(guest.kernel)}</kernel>
    <initrd>${esc(guest.initrd)}</initrd>
    <cmdline>${esc(guest.cmdline)}</cmdline>`
    : "<boot dev='hd'/>";
  const cidata = opts.cidata
    ? `
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='${esc(opts.cidata)}'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>`
    : '';
  return `<domain type='${o.accel === 'kvm' ? 'kvm' : 'qemu'}'>
  <name>${opts.name ?? DOMAIN}</name>
  <memory unit='MiB'>${opts.memoryMiB ?? guest.memoryMiB}</memory>
  <vcpu>${guest.cpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    ${boot}
  </os>
  <features><acpi/></features>
  ${libvirtCpu(o.accel)}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${esc(opts.overlay ?? guest.libvirtOverlay)}'/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='${esc(guest.base)}'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>${cidata}
    <interface type='user'>
      <mac address='${opts.mac ?? '52:54:00:be:4c:02'}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='${esc(opts.console ?? guest.libvirtConsole)}' append='on'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

/**
 * Defines the libvirt domain `name` from `xml` (written to `xmlFile`), first dropping one an
 * interrupted run left behind; it is undefined at clean-up. `start()` is virsh start; `stop()`
 * destroys the domain if it was started (and runs at clean-up too).
 */
export async function defineDomain(name: string, xml: string, xmlFile: string): Promise<{ start(): Promise<unknown>; stop(): Promise<void> }> {
  await run('virsh', [...VIRSH, 'destroy', name]).catch(() => undefined);
  await run('virsh', [...VIRSH, 'undefine', name]).catch(() => undefined);
  await fsp.writeFile(xmlFile, xml);
  await run('virsh', [...VIRSH, 'define', xmlFile]);
  onCleanup('undefine libvirt domain', async () => {
    await run('virsh', [...VIRSH, 'undefine', name]);
    log(`undefined libvirt domain ${name}`);
  });
  let running = false;
  const stop = async () => {
    if (!running) return;
    running = false;
    await run('virsh', [...VIRSH, 'destroy', name]);
  };
  onCleanup('destroy libvirt domain', stop);
  return {
    start() {
      running = true;
      return run('virsh', [...VIRSH, 'start', name]);
    },
    stop,
  };
}

/**
 * libvirt probes QEMU once and caches the capabilities, but it throws the cache away (and
 * re-probes, ~2-4 s, on every "virsh start") when the probe saw KVM and /dev/kvm is not
 * read-writable by its qemu user ("KVM was enabled when probing ..., but it is not available
 * now"). Here /dev/kvm is root:root 0600 (no udev); a normal host has root:kvm 0660 and
 * libvirt-qemu in group kvm. So for the duration of the run /dev/kvm gets the normal mode,
 * and its original owner/mode is restored at the end (--no-kvm-fix leaves it alone).
 */
export async function normalizeDevKvm(o) {
  if (!o.kvmFix) return;
  let st;
  try {
    st = fs.statSync('/dev/kvm');
  } catch {
    return; // no KVM at all: libvirt's cache stays valid
  }
  let kvmGid;
  let qemuGroups;
  try {
    kvmGid = Number((await run('getent', ['group', 'kvm'])).stdout.split(':')[2]);
    qemuGroups = (await run('id', ['-G', 'libvirt-qemu'])).stdout.trim().split(/\s+/).map(Number);
  } catch {
    return;
  }
  const mode = st.mode & 0o777;
  const ok = (qemuGroups.includes(st.gid) && (mode & 0o060) === 0o060) || (mode & 0o006) === 0o006;
  if (ok || !qemuGroups.includes(kvmGid)) return;
  fs.chownSync('/dev/kvm', st.uid, kvmGid);
  fs.chmodSync('/dev/kvm', mode | 0o060);
  log(`/dev/kvm: ${mode.toString(8)} ${st.uid}:${st.gid} -> ${(mode | 0o060).toString(8)} ${st.uid}:${kvmGid} (group kvm, as udev sets it) for libvirt; restored at the end`);
  onCleanup('restore /dev/kvm', () => {
    fs.chownSync('/dev/kvm', st.uid, st.gid);
    fs.chmodSync('/dev/kvm', mode);
    log(`/dev/kvm restored to ${mode.toString(8)} ${st.uid}:${st.gid}`);
  });
}

// ---- main ---------------------------------------------------------------------------------

/** Exits with what to do when the daemon's build (dist/) is missing. */
export function requireBuild(): void {
  if (!fs.existsSync(path.join(ROOT, 'dist', 'daemon.js'))) die('dist/ is missing: run "npx tsc -p tsconfig.json" (npm run build) first');
}

/** Exits with what to do when the build, the appliance or (with --accel kvm) /dev/kvm is missing. */
export function requireApplianceBench(o: { applianceDir: string; accel: string }): void {
  requireBuild();
  if (!fs.existsSync(path.join(o.applianceDir, 'image.json'))) die(`no appliance in ${o.applianceDir} (run "npm run setup")`);
  if (o.accel === 'kvm' && !fs.existsSync('/dev/kvm')) die('--accel kvm needs /dev/kvm');
}

/** A new work folder under the temp folder (`prefix` + random), readable by libvirt-qemu, removed at clean-up. */
export async function makeWorkDir(prefix: string): Promise<string> {
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  await fsp.chmod(work, 0o755); // libvirt-qemu must reach the guest files
  onCleanup('remove temp folder', () => fsp.rm(work, { recursive: true, force: true }));
  return work;
}

export function fmtMs(x) {
  return x === undefined ? '-' : x >= 100 ? x.toFixed(0) : x.toFixed(1);
}
export const mib = (kib) => (kib / 1024).toFixed(1);

// ---- QMP (raw QEMU) -------------------------------------------------------------------------

/** vmkit's QMP client (src/qemu/qmp.ts), retrying until QEMU has made its socket (up to `timeoutMs`). */
export function qmpConnect(socketPath: string, timeoutMs = 30_000): Promise<QmpClient> {
  return connectWithRetry(socketPath, { totalMs: timeoutMs, intervalMs: 20, commandTimeoutMs: 300_000 });
}

/** A QMP job (snapshot-save/-load/-delete) run to its end exactly as vmkit runs it (src/qemu/jobs.ts). */
export function qmpRunJob(qmp: QmpClient, command: string, args: Record<string, unknown>): Promise<void> {
  return runJob(qmp, command, args);
}

// ---- TCP / HTTP ---------------------------------------------------------------------------

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** One GET, no keep-alive; resolves with the status code, rejects on any socket error/timeout. */
export function httpGetStatus(port, urlPath = '/status', timeoutMs = 2000) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/**
 * Resolves with performance.now() at the first 200 answer of GET http://127.0.0.1:PORT/status.
 * One attempt at a time (the appliance's HTTP server, busybox `nc -ll -e`, serves one
 * connection after the other, ≈ 0.2–0.4 s each under TCG, so parallel attempts would queue
 * behind each other); a new one starts `pollMs` after the previous one failed, each given up
 * after `attemptTimeoutMs`. Refused/reset connections (QEMU not listening yet, no listener in
 * the guest) mean "not yet". Do not poll a paused guest with this: slirp accepts the host
 * connection but the guest cannot answer the SYN, and that attempt only goes on after
 * slirp's TCP retransmit (≈ 1–2 s).
 */
export function waitHttp200(port: number, { timeoutMs = BOOT_TIMEOUT_MS, pollMs = 20, urlPath = '/status', attemptTimeoutMs = 2000, maxInFlight = 1 } = {}): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const start = performance.now();
    let done = false;
    let inFlight = 0;
    let last = '';
    const finish = () => {
      done = true;
      clearInterval(timer);
    };
    const attempt = () => {
      if (done) return;
      if (performance.now() - start > timeoutMs) {
        finish();
        reject(new Error(`http://127.0.0.1:${port}${urlPath} did not answer 200 within ${timeoutMs} ms (last: ${last})`));
        return;
      }
      if (inFlight >= maxInFlight) return;
      inFlight++;
      httpGetStatus(port, urlPath, attemptTimeoutMs)
        .then(
          (st) => {
            if (st === 200 && !done) {
              const t = performance.now();
              finish();
              resolve(t);
            } else last = `HTTP ${st}`;
          },
          (e) => (last = e.code || e.message),
        )
        .finally(() => inFlight--);
    };
    const timer = setInterval(attempt, pollMs);
    attempt();
  });
}

/** Runs a bench's main: cleans up what it started whether it succeeds or fails, then exits (1 on failure). */
export function runBench(main: () => Promise<void>): void {
  main()
    .then(
      () => cleanupAll(),
      async (err: Error) => {
        console.error(`bench: ${err.stack || err.message}`);
        await cleanupAll();
        process.exitCode = 1;
      },
    )
    .then(() => process.exit());
}

/**
 * Re-runs this bench in a network namespace of its own (unshare --net, loopback up) and exits
 * with its status: the vmkit daemon it starts puts nftables tables (the guest guard) and
 * bridges in the namespace it runs in, and a bench never touches the machine's own network.
 */
export function enterOwnNetns(): void {
  if (process.env.VMKIT_BENCH_NETNS) return;
  const r = spawnSync('unshare', ['--net', '--', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', process.execPath, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, VMKIT_BENCH_NETNS: '1' },
  });
  process.exit(r.status ?? 1);
}
