#!/usr/bin/env node
// Debian boot-to-ssh benchmark: the same Debian 12 cloud image (vmkit image build-debian, cached
// in .cache/debian-bookworm) booted under raw QEMU, libvirt and vmkit, in the same run; the
// clock runs from the start call to the first successful ssh login with the key cloud-init
// installed. Every boot is a first boot (fresh overlay, new instance-id): cloud-init runs its
// per-instance modules (host keys, the key for "debian") in all three.
//
//   node dist-bench/debian-boot.js [--runs N (1)] [--memory MiB (512)] [--image DIR]
//                                  [--skip-libvirt] [--no-kvm-fix] [--timeout S (900)]
//
// Runs as root. It re-executes itself in a network namespace of its own (unshare --net), so
// the vmkit daemon's nftables table and every forward stay out of the host's network; the
// libvirtd it starts runs there too (one that already runs elsewhere cannot be measured: the
// bench says so; --skip-libvirt). See bench/README.md, "Debian boot to ssh".

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  ROOT,
  VMKIT_BIN,
  DOMAIN,
  VIRSH,
  die,
  log,
  sleep,
  onCleanup,
  cleanupAll,
  killPid,
  median,
  run,
  startDaemon,
  freePort,
  ensureLibvirtInstalled,
  startLibvirtDaemons,
  normalizeDevKvm,
  isCleaningUp,
  enterOwnNetns,
  rawArgv,
  domainXml,
  defineDomain,
  requireBuild,
  makeWorkDir,
  type BenchGuest,
} from './lib.js';
import { parseArgs } from './args.js';
import { writeConfigDrive } from '../dist/storage/config-drive.js';

const USAGE = 'node dist-bench/debian-boot.js [--runs N (1)] [--memory MiB (512)] [--image DIR] [--skip-libvirt] [--no-kvm-fix] [--timeout S (900)]';

function options() {
  return parseArgs(USAGE, {
    runs: { flag: '--runs', kind: 'int', min: 1, default: 1 },
    memory: { flag: '--memory', kind: 'int', min: 256, default: 512 },
    timeoutS: { flag: '--timeout', kind: 'int', min: 60, default: 900 },
    imageDir: { flag: '--image', kind: 'path', default: path.join(ROOT, '.cache', 'debian-bookworm') },
    libvirt: { flag: '--skip-libvirt', kind: 'clear' },
    kvmFix: { flag: '--no-kvm-fix', kind: 'clear' },
  });
}

const LIBVIRT_DOMAIN = `${DOMAIN}-debian`;

interface Boot {
  /** Start call → first successful ssh login (ms). */
  sshMs: number;
  /** Start call → the start call returned (virsh start, vmkit's start operation; raw: spawn). */
  ctlMs: number;
  /**
   * CPU time QEMU used until ssh answered (user + system, s): the work of the boot, apart from
   * how much of the host's CPU the scheduler gave it (on a busy host, wall time depends on the
   * CPU weight of QEMU's cgroup: vmkit's guests weigh as vCPUs + 1 tasks, see security.md).
   */
  qemuCpuS?: number;
}

/** user + system CPU seconds of a process so far (undefined once it is gone). */
function cpuSeconds(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return undefined;
  }
}

interface Contender {
  name: string;
  run(round: number): Promise<Boot>;
  stop(): Promise<void>;
}

/** What every contender boots: the same files, guest size and key. */
interface Guest {
  work: string;
  base: string;
  key: string;
  pubKey: string;
  memoryMiB: number;
  timeoutMs: number;
  /** The cached build (`<cache>/debian-<release>`): vmkit's build-debian imports it from there. */
  imageDir: string;
}

// ---- ssh -----------------------------------------------------------------------------------

/**
 * One TCP connection to 127.0.0.1:port: resolves true once the server's SSH banner arrives,
 * false when the connection is refused or closed first, or nothing came for `quietMs`.
 */
function bannerOnce(port: number, quietMs = 5000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let text = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), quietMs);
    sock.on('data', (d) => {
      text += d.toString('latin1');
      if (text.includes('SSH-')) done(true);
    });
    sock.on('error', () => done(false));
    sock.on('close', () => done(false));
  });
}

/** One ssh login with the bench's key, left to finish (or fail) by itself. */
function sshLogin(g: Guest, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = spawn(
      'ssh',
      [
        '-i',
        g.key,
        '-p',
        String(port),
        '-o',
        'BatchMode=yes',
        '-o',
        'StrictHostKeyChecking=no',
        '-o',
        'UserKnownHostsFile=/dev/null',
        '-o',
        'LogLevel=ERROR',
        '-o',
        'ConnectTimeout=60',
        'debian@127.0.0.1',
        'true',
      ],
      { stdio: 'ignore' },
    );
    const timer = setTimeout(() => c.kill('SIGKILL'), 120_000);
    c.on('exit', (code) => {
      clearTimeout(timer);
      resolve(code === 0);
    });
  });
}

/**
 * Resolves with performance.now() at the first ssh login that works. Never more than one
 * connection at a time: first the SSH banner is awaited on a plain TCP connection (a refused
 * one is retried 250 ms later), then logins with the key follow one another until one works
 * (sshd answers before cloud-init has installed the key). Polling harder fills the slow
 * guest's sshd with unauthenticated connections ("Exceeded MaxStartups": it then drops new
 * ones, and the measured boot grows by minutes). `alive` ends the wait when QEMU is gone.
 */
async function waitSsh(g: Guest, port: number, label: string, alive: () => boolean): Promise<number> {
  const deadline = performance.now() + g.timeoutMs;
  let banner = false;
  while (performance.now() < deadline) {
    if (isCleaningUp()) throw new Error('interrupted');
    if (!alive()) throw new Error(`${label}: the guest's QEMU is gone before ssh answered`);
    if (!banner) banner = await bannerOnce(port);
    if (banner && (await sshLogin(g, port))) return performance.now();
    await sleep(banner ? 1000 : 250);
  }
  throw new Error(`${label}: ssh did not answer within ${g.timeoutMs / 1000} s`);
}

/** A first-boot NoCloud drive exactly as vmkit writes it (src/storage/config-drive.ts). */
async function seed(g: Guest, file: string, name: string, mac: string): Promise<void> {
  await writeConfigDrive(file, {
    instanceId: `${name}-${Date.now().toString(36)}`,
    identity: `${name}-${Date.now().toString(36)}`,
    hostname: name,
    nics: [{ id: 'nic0', model: 'virtio-net', mac, network: 'user' }],
    cloudInit: { sshKeys: [g.pubKey] },
  });
  await fsp.chmod(file, 0o644);
}

async function overlay(g: Guest, file: string): Promise<void> {
  await fsp.rm(file, { force: true });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', g.base, file]);
  await fsp.chmod(file, 0o666);
}

// ---- contender 1: raw QEMU -----------------------------------------------------------------

/** The guest as bench/lib.ts's rawArgv and domainXml take it: one vCPU, booting from its disk. */
const benchGuest = (g: Guest): BenchGuest => ({ cpus: 1, memoryMiB: g.memoryMiB, base: g.base });

function makeRaw(g: Guest): Contender {
  let child: ReturnType<typeof spawn> | null = null;
  const stop = async () => {
    const c = child;
    child = null;
    if (c?.pid) await killPid(c.pid, 'raw QEMU');
  };
  onCleanup('raw QEMU', stop);
  const mac = '52:54:00:de:b1:01';
  return {
    name: 'raw QEMU',
    async run(round) {
      const disk = path.join(g.work, 'raw.qcow2');
      const cidata = path.join(g.work, 'raw-cidata.img');
      await overlay(g, disk);
      await seed(g, cidata, `raw${round}`, mac);
      const port = await freePort();
      const t0 = performance.now();
      const c = spawn(
        'qemu-system-x86_64',
        rawArgv({ accel: 'tcg' }, benchGuest(g), {
          name: 'debian-raw',
          overlay: disk,
          cidata,
          console: path.join(g.work, 'raw-console.log'),
          mac,
          hostfwd: [`tcp:127.0.0.1:${port}-:22`],
        }),
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      child = c;
      let stderr = '';
      c.stderr!.on('data', (d) => (stderr += d));
      const ctl = performance.now();
      try {
        const t1 = await waitSsh(g, port, 'raw QEMU', () => c.exitCode === null && c.signalCode === null);
        return { sshMs: t1 - t0, ctlMs: ctl - t0, qemuCpuS: cpuSeconds(c.pid) };
      } catch (err) {
        throw new Error(`${(err as Error).message} ${stderr.trim()}`);
      }
    },
    stop,
  };
}

// ---- contender 2: libvirt ------------------------------------------------------------------

/** The bench reaches forwards on its own loopback: a QEMU elsewhere (a libvirtd that ran before, outside this namespace) cannot be measured. */
async function sameNetns(pid: number | undefined): Promise<void> {
  const mine = await fsp.readlink('/proc/self/ns/net');
  const theirs = pid ? await fsp.readlink(`/proc/${pid}/ns/net`).catch(() => '?') : '?';
  if (theirs !== mine) {
    throw new Error(
      `libvirt's QEMU (pid ${pid}) is in network namespace ${theirs}, the bench in ${mine}: a libvirtd that already ran is used as it is; stop it (the bench then starts its own in its namespace) or use --skip-libvirt`,
    );
  }
}

async function libvirtQemuPid(): Promise<number | undefined> {
  const text = await fsp.readFile(`/run/libvirt/qemu/${LIBVIRT_DOMAIN}.pid`, 'utf8').catch(() => '');
  const pid = Number(text.trim());
  return pid > 0 ? pid : undefined;
}

async function makeLibvirt(g: Guest, o: { kvmFix: boolean; accel: string }): Promise<Contender> {
  await ensureLibvirtInstalled();
  await normalizeDevKvm(o);
  await startLibvirtDaemons();
  const disk = path.join(g.work, 'libvirt.qcow2');
  const cidata = path.join(g.work, 'libvirt-cidata.img');
  const mac = '52:54:00:de:b1:02';
  await overlay(g, disk);
  await seed(g, cidata, 'lv0', mac);
  const xml = domainXml({ accel: 'tcg' }, benchGuest(g), { name: LIBVIRT_DOMAIN, overlay: disk, cidata, mac, console: path.join(g.work, 'libvirt-console.log') });
  const domain = await defineDomain(LIBVIRT_DOMAIN, xml, path.join(g.work, 'debian-domain.xml'));
  let pid: number | undefined;
  return {
    name: 'libvirt',
    async run(round) {
      // A fresh overlay and drive at the same paths (libvirt's dynamic ownership gives them to libvirt-qemu).
      await overlay(g, disk);
      await seed(g, cidata, `lv${round}`, mac);
      const port = await freePort();
      const t0 = performance.now();
      await domain.start();
      const ctl = performance.now();
      // libvirt 9.0 has no port forwards for a user-mode (slirp) interface: the same hostfwd
      // vmkit and raw QEMU put on their command line is added over the monitor (the guest is
      // still in its firmware by then).
      pid = await libvirtQemuPid();
      await run('virsh', [...VIRSH, 'qemu-monitor-command', LIBVIRT_DOMAIN, '--hmp', `hostfwd_add hostnet0 tcp:127.0.0.1:${port}-:22`]);
      await sameNetns(pid);
      const t1 = await waitSsh(g, port, 'libvirt', () => !!pid && fs.existsSync(`/proc/${pid}`));
      return { sshMs: t1 - t0, ctlMs: ctl - t0, qemuCpuS: cpuSeconds(pid) };
    },
    stop: domain.stop,
  };
}

// ---- contender 3: vmkit --------------------------------------------------------------------

async function makeVmkit(g: Guest, o: { accel: string }): Promise<Contender> {
  const dir = path.join(g.work, 'vmkit');
  await fsp.mkdir(dir);
  const daemon = await startDaemon(dir, { accel: o.accel, applianceDir: path.join(ROOT, '.cache', 'appliance') }, { VMKIT_BUILD_CACHE: path.dirname(g.imageDir) });
  log(`vmkit daemon pid ${daemon.pid}, accelerator ${daemon.info.accel}, data folder ${dir}`);
  const cli = (args: string[]) => run(process.execPath, [VMKIT_BIN, ...args], { env: daemon.env });
  // build-debian finds the build in VMKIT_BUILD_CACHE (same inputs hash) and only imports it.
  const t = performance.now();
  await cli(['image', 'build-debian', 'debian']);
  log(`vmkit: image build-debian imported the cached build in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  let current: string | undefined;
  const stop = async () => {
    if (!current) return;
    const name = current;
    current = undefined;
    const r = await daemon.api.request('PUT', `/1.0/instances/${name}/state`, { action: 'stop', force: true });
    await daemon.api.waitOp(r.operation, 60);
    await cli(['delete', name]);
  };
  return {
    name: 'vmkit',
    async run(round) {
      const name = `deb${round}`;
      const port = await freePort();
      // Created (not timed: an O(1) overlay), then started: a new instance, so a first boot.
      await cli(['create', 'debian', name, '--memory', String(g.memoryMiB), '--ssh-key', g.pubKey, '-p', `${port}:22`]);
      current = name;
      const t0 = performance.now();
      const accepted = await daemon.api.request('PUT', `/1.0/instances/${name}/state`, { action: 'start' });
      await daemon.api.waitOp(accepted.operation, 300);
      const ctl = performance.now();
      const inst = (await daemon.api.request('GET', `/1.0/instances/${name}`)).metadata;
      const pid = inst.runtime?.pid as number | undefined;
      const t1 = await waitSsh(g, port, 'vmkit', () => !!pid && fs.existsSync(`/proc/${pid}`));
      return { sshMs: t1 - t0, ctlMs: ctl - t0, qemuCpuS: cpuSeconds(pid) };
    },
    stop,
  };
}

// ---- main ----------------------------------------------------------------------------------

async function main() {
  const o = options();
  if (process.getuid?.() !== 0) die('run as root (libvirt, the vmkit daemon and the network namespace need it)');
  enterOwnNetns();
  requireBuild();
  const baseSrc = path.join(o.imageDir, 'root.qcow2');
  if (!fs.existsSync(baseSrc)) die(`no Debian build in ${o.imageDir} (scripts/setup.sh, or: bash guest/debian/build.sh ${o.imageDir})`);

  const work = await makeWorkDir('vmkit-bench-deb-');
  // A copy of the image for raw QEMU and libvirt (libvirt's dynamic ownership chowns the backing
  // file; the shared cache must stay as it is). Reading it also warms the page cache for all.
  const base = path.join(work, 'debian-base.qcow2');
  await fsp.copyFile(baseSrc, base);
  await fsp.chmod(base, 0o644);
  const key = path.join(work, 'id_ed25519');
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'vmkit-bench', '-f', key]);
  const g: Guest = {
    work,
    base,
    key,
    pubKey: (await fsp.readFile(`${key}.pub`, 'utf8')).trim(),
    memoryMiB: o.memory,
    timeoutMs: o.timeoutS * 1000,
    imageDir: o.imageDir,
  };
  log(`work folder ${work}; TCG; ${o.runs} round(s); guest ${o.memory} MiB, 1 vCPU; image ${o.imageDir}`);

  const ctx = { accel: 'tcg', kvmFix: o.kvmFix };
  const contenders: Contender[] = [makeRaw(g)];
  if (o.libvirt) contenders.push(await makeLibvirt(g, ctx));
  contenders.push(await makeVmkit(g, ctx));

  const results = new Map<string, Boot[]>(contenders.map((c) => [c.name, []]));
  const load0 = os.loadavg().map((x) => x.toFixed(2));
  for (let round = 1; round <= o.runs; round++) {
    for (const c of contenders) {
      if (isCleaningUp()) return;
      const b = await c.run(round);
      await c.stop();
      log(
        `round ${round}/${o.runs} ${c.name.padEnd(8)} ssh after ${(b.sshMs / 1000).toFixed(1)} s (start call returned after ${(b.ctlMs / 1000).toFixed(2)} s; QEMU CPU ${b.qemuCpuS?.toFixed(1) ?? '?'} s)`,
      );
      results.get(c.name)!.push(b);
      await sleep(1000);
    }
  }
  const load1 = os.loadavg().map((x) => x.toFixed(2));

  const s = (xs: number[]) => (median(xs) / 1000).toFixed(1);
  const out: string[] = [];
  out.push('', `## Debian 12 boot to ssh (TCG, ${o.memory} MiB, 1 vCPU; ${o.runs} round(s), alternating; s)`, '');
  out.push('| | median | min | max | start call returned (median) | QEMU CPU s until ssh (median) | runs |', '|---|---:|---:|---:|---:|---:|---|');
  for (const [name, bs] of results) {
    const ms = bs.map((b) => b.sshMs);
    out.push(
      `| ${name} | ${s(ms)} | ${(Math.min(...ms) / 1000).toFixed(1)} | ${(Math.max(...ms) / 1000).toFixed(1)} | ${s(bs.map((b) => b.ctlMs))} | ${median(bs.map((b) => b.qemuCpuS ?? NaN)).toFixed(1)} | ${ms.map((x) => (x / 1000).toFixed(1)).join(', ')} |`,
    );
  }
  out.push('', `host: ${os.cpus().length} CPUs; load average before ${load0.join(' ')}, after ${load1.join(' ')}`, '');
  const med = (n: string) => median(results.get(n)!.map((b) => b.sshMs));
  const cpu = (n: string) => median(results.get(n)!.map((b) => b.qemuCpuS ?? NaN));
  out.push(`wall:     vmkit / raw QEMU = ${(med('vmkit') / med('raw QEMU')).toFixed(3)}`);
  if (results.has('libvirt')) out.push(`wall:     vmkit / libvirt  = ${(med('vmkit') / med('libvirt')).toFixed(3)}`);
  out.push(`QEMU CPU: vmkit / raw QEMU = ${(cpu('vmkit') / cpu('raw QEMU')).toFixed(3)}`);
  if (results.has('libvirt')) out.push(`QEMU CPU: vmkit / libvirt  = ${(cpu('vmkit') / cpu('libvirt')).toFixed(3)}`);
  else out.push('libvirt skipped (--skip-libvirt)');
  out.push("(on a busy host the wall times follow each QEMU's share of the CPU: its cgroup's weight; the CPU seconds are the work of the boot)");
  process.stdout.write(out.join('\n') + '\n');
}

main()
  .then(
    () => cleanupAll(),
    async (err) => {
      console.error(`bench: ${err.stack || err.message}`);
      await cleanupAll();
      process.exitCode = 1;
    },
  )
  .then(() => process.exit());
