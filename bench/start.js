#!/usr/bin/env node
// Start-latency benchmark: raw QEMU vs libvirt vs vmkit, same guest, TCG by default.
// Then the daemon's RSS and GET /1.0/instances latency with 1,000 defined instances.
//
//   node bench/start.js [--runs N] [--accel tcg|kvm] [--warmup N] [--instances N]
//                       [--list-requests N] [--parallel N] [--skip-libvirt] [--skip-list] [--no-kvm-fix]
//
// Plain Node ESM, no build step (it drives the built CLI/daemon in dist/ through bin/vmkit.js).
// Run as root (libvirt's system daemon and apt-get need it). See bench/README.md.

import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import http from 'node:http';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const execFileP = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const VMKIT_BIN = path.join(ROOT, 'bin', 'vmkit.js');
const MARKER = 'vmkit-appliance: userspace';
const POLL_MS = 5; // the same console poll for all three
const BOOT_TIMEOUT_MS = 120_000;
const DOMAIN = 'vmkit-bench';
const VIRSH = ['-c', 'qemu:///system'];

// ---- options ------------------------------------------------------------------------------

function parseArgs(argv) {
  const o = {
    runs: 5,
    warmup: 1,
    accel: 'tcg',
    instances: 1000,
    listRequests: 300,
    parallel: 8,
    libvirt: true,
    kvmFix: true,
    list: true,
    applianceDir: process.env.VMKIT_APPLIANCE_DIR || path.join(ROOT, '.cache', 'appliance'),
  };
  const num = (i, name, min) => {
    const v = Number(argv[i + 1]);
    if (!Number.isInteger(v) || v < min) die(`${name} needs an integer >= ${min}`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--runs': o.runs = num(i++, a, 1); break;
      case '--warmup': o.warmup = num(i++, a, 0); break;
      case '--instances': o.instances = num(i++, a, 1); break;
      case '--list-requests': o.listRequests = num(i++, a, 1); break;
      case '--parallel': o.parallel = num(i++, a, 1); break;
      case '--accel':
        o.accel = argv[++i];
        if (o.accel !== 'tcg' && o.accel !== 'kvm') die('--accel is tcg or kvm');
        break;
      case '--appliance': o.applianceDir = path.resolve(argv[++i] ?? ''); break;
      case '--skip-libvirt': o.libvirt = false; break;
      case '--skip-list': o.list = false; break;
      case '--no-kvm-fix': o.kvmFix = false; break;
      case '-h': case '--help':
        console.log('usage: node bench/start.js [--runs N (5)] [--accel tcg|kvm] [--warmup N (1)] [--instances N (1000)]\n' +
          '                          [--list-requests N (300)] [--parallel N (8)] [--appliance DIR] [--skip-libvirt] [--skip-list] [--no-kvm-fix]');
        process.exit(0);
        break;
      default: die(`unknown option ${a} (see --help)`);
    }
  }
  return o;
}

function die(msg) {
  console.error(`bench: ${msg}`);
  process.exit(2);
}

const log = (msg) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 23)}] ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- clean-up registry (runs on success, failure and Ctrl-C) -----------------------------

const cleanups = []; // LIFO
let cleaning = null;
function onCleanup(name, fn) {
  const entry = { name, fn };
  cleanups.push(entry);
  return () => {
    const i = cleanups.indexOf(entry);
    if (i >= 0) cleanups.splice(i, 1);
  };
}
async function cleanupAll() {
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
    try { log(`${ev}: ${err?.stack ?? err}`); } catch { /* stderr gone */ }
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

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

async function waitPidGone(pid, ms) {
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

async function killPid(pid, label) {
  if (!pid || !pidAlive(pid)) return;
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  if (await waitPidGone(pid, 5000)) return;
  log(`${label} (pid ${pid}) ignored SIGTERM, sending SIGKILL`);
  try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  await waitPidGone(pid, 5000);
}

function fileSize(file) {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/**
 * Resolves with performance.now() when MARKER shows up in `file` after byte `offset`.
 * The same 5 ms poll for all three contenders (QEMU itself writes the file in all cases).
 */
function waitForMarker(file, offset, timeoutMs = BOOT_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let pos = offset;
    let text = '';
    let fd = -1;
    const buf = Buffer.alloc(64 * 1024);
    const finish = (fn, v) => {
      clearInterval(timer);
      if (fd >= 0) try { fs.closeSync(fd); } catch { /* ignore */ }
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
      if (text.includes(MARKER)) return finish(resolve, now);
      if (text.length > 1 << 20) text = text.slice(-4096);
      if (now - started > timeoutMs) finish(reject, new Error(`"${MARKER}" did not appear in ${file} within ${timeoutMs} ms`));
    };
    const timer = setInterval(tick, POLL_MS);
    tick();
  });
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

async function run(cmd, args, opts = {}) {
  return execFileP(cmd, args, { maxBuffer: 16 << 20, ...opts });
}

// ---- HTTP over the daemon's unix socket --------------------------------------------------

function makeApi(socketPath) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const request = (method, urlPath, body, { raw = false } = {}) =>
    new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = http.request(
        {
          socketPath,
          agent,
          method,
          path: urlPath,
          headers: data ? { 'content-type': 'application/json', 'content-length': data.length } : {},
        },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (raw) return resolve({ status: res.statusCode, text });
            let json;
            try {
              json = JSON.parse(text);
            } catch {
              return reject(new Error(`${method} ${urlPath}: HTTP ${res.statusCode}, not JSON: ${text.slice(0, 200)}`));
            }
            if (json.type === 'error') {
              const e = new Error(`${method} ${urlPath}: ${json.error?.code}: ${json.error?.message}`);
              e.code = json.error?.code;
              return reject(e);
            }
            resolve(json);
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(data);
    });
  const waitOp = async (opPath, timeoutS = 120) => {
    const r = await request('GET', `${opPath}/wait?timeout=${timeoutS}`);
    const op = r.metadata;
    if (op.status !== 'success') throw new Error(`operation ${op.kind} ${op.target}: ${op.status}: ${op.error?.code ?? ''} ${op.error?.message ?? ''}`);
    return op;
  };
  return { request, waitOp, close: () => agent.destroy() };
}

// ---- vmkit daemon -------------------------------------------------------------------------

async function startDaemon(dir, o) {
  const env = { ...process.env, VMKIT_ACCEL: o.accel, VMKIT_APPLIANCE_DIR: o.applianceDir, VMKIT_DIR: dir };
  const errLog = fs.openSync(path.join(dir, '..', `${path.basename(dir)}.daemon.log`), 'a');
  const child = spawn(process.execPath, [VMKIT_BIN, 'daemon', '--dir', dir], { env, stdio: ['ignore', errLog, errLog] });
  fs.closeSync(errLog);
  let exited = null;
  child.on('exit', (code, sig) => (exited = code ?? sig));
  const api = makeApi(path.join(dir, 'vmkit.sock'));
  const daemon = { pid: child.pid, dir, api, child, env };
  let stopped = false;
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

async function findFiles(dir, base, depth = 3) {
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
async function cpuMs(pids) {
  let ticks = 0;
  for (const pid of pids) {
    const st = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (!st) continue;
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    ticks += Number(f[11]) + Number(f[12]); // utime, stime
  }
  return (ticks * 1000) / CLK_TCK;
}
const CLK_TCK = 100;

async function rssKiB(pid) {
  const st = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(st)[1]);
}

// ---- the guest ----------------------------------------------------------------------------

async function prepareGuest(o, work) {
  const manifest = JSON.parse(await fsp.readFile(path.join(o.applianceDir, 'image.json'), 'utf8'));
  // Private copies in a world-readable folder: libvirt's QEMU runs as libvirt-qemu and its
  // dynamic ownership relabels (chowns) every file of the domain incl. the backing file, so
  // nothing of the shared .cache/appliance is handed to it.
  const g = path.join(work, 'guest');
  await fsp.mkdir(g, { mode: 0o755 });
  await fsp.chmod(g, 0o755);
  const files = {};
  for (const [key, name] of [['kernel', manifest.boot.kernel], ['initrd', manifest.boot.initrd], ['base', manifest.disks[0].file]]) {
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
    rawOverlay: await overlay('raw-overlay.qcow2'),
    libvirtOverlay: await overlay('libvirt-overlay.qcow2'),
    rawConsole: path.join(g, 'raw-console.log'),
    libvirtConsole: path.join(g, 'libvirt-console.log'),
  };
}

// ---- contender 1: raw QEMU ----------------------------------------------------------------

function rawArgv(o, guest) {
  return [
    '-name', 'guest=bench-raw',
    '-nodefaults', '-no-user-config',
    '-machine', `pc,accel=${o.accel}`,
    '-cpu', o.accel === 'kvm' ? 'host' : 'max',
    '-smp', String(guest.cpus),
    '-m', `${guest.memoryMiB}M`,
    '-display', 'none', '-vga', 'none',
    '-chardev', `file,id=serial0,path=${guest.rawConsole},append=on`,
    '-serial', 'chardev:serial0',
    '-kernel', guest.kernel, '-initrd', guest.initrd, '-append', guest.cmdline,
    '-blockdev', JSON.stringify({ driver: 'file', filename: guest.rawOverlay, 'node-name': 'root-file' }),
    '-blockdev', JSON.stringify({ driver: 'qcow2', file: 'root-file', 'node-name': 'root' }),
    '-device', 'virtio-blk-pci,drive=root,id=root-dev,bootindex=1',
    '-netdev', 'user,id=nic0',
    '-device', 'virtio-net-pci,netdev=nic0,mac=52:54:00:be:4c:01,id=nic0-dev',
  ];
}

function makeRaw(o, guest) {
  let child = null;
  const stop = async () => {
    if (!child) return;
    const c = child;
    child = null;
    await killPid(c.pid, 'raw QEMU');
  };
  onCleanup('raw QEMU', stop);
  return {
    name: 'raw QEMU',
    async run() {
      const offset = fileSize(guest.rawConsole);
      const t0 = performance.now();
      const seen = waitForMarker(guest.rawConsole, offset);
      child = spawn('qemu-system-x86_64', rawArgv(o, guest), { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const died = new Promise((_, rej) => child.once('exit', (c, s) => rej(new Error(`raw QEMU exited (${c ?? s}): ${stderr.trim()}`))));
      const t1 = await Promise.race([seen, died]);
      died.catch(() => undefined);
      return { ms: t1 - t0 };
    },
    stop,
  };
}

// ---- contender 2: libvirt -----------------------------------------------------------------

async function procsNamed(name) {
  const pids = [];
  for (const d of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const comm = (await fsp.readFile(`/proc/${d}/comm`, 'utf8').catch(() => '')).trim();
    if (comm === name) pids.push(Number(d));
  }
  return pids;
}

async function haveCmd(cmd) {
  try {
    await run('sh', ['-c', `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

async function ensureLibvirtInstalled() {
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

async function startLibvirtDaemons() {
  const pids = async () => [...(await procsNamed('libvirtd')), ...(await procsNamed('virtlogd'))];
  await startLibvirtDaemonsOnly();
  return pids;
}

async function startLibvirtDaemonsOnly() {
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

function domainXml(o, guest) {
  const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;');
  return `<domain type='${o.accel === 'kvm' ? 'kvm' : 'qemu'}'>
  <name>${DOMAIN}</name>
  <memory unit='MiB'>${guest.memoryMiB}</memory>
  <vcpu>${guest.cpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${esc(guest.kernel)}</kernel>
    <initrd>${esc(guest.initrd)}</initrd>
    <cmdline>${esc(guest.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='${o.accel === 'kvm' ? 'host-passthrough' : 'maximum'}'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${esc(guest.libvirtOverlay)}'/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='${esc(guest.base)}'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'>
      <mac address='52:54:00:be:4c:02'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='${esc(guest.libvirtConsole)}' append='on'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

/**
 * libvirt probes QEMU once and caches the capabilities, but it throws the cache away (and
 * re-probes, ~2-4 s, on every "virsh start") when the probe saw KVM and /dev/kvm is not
 * read-writable by its qemu user ("KVM was enabled when probing ..., but it is not available
 * now"). Here /dev/kvm is root:root 0600 (no udev); a normal host has root:kvm 0660 and
 * libvirt-qemu in group kvm. So for the duration of the run /dev/kvm gets the normal mode,
 * and its original owner/mode is restored at the end (--no-kvm-fix leaves it alone).
 */
async function normalizeDevKvm(o) {
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

async function makeLibvirt(o, guest, work) {
  await ensureLibvirtInstalled();
  await normalizeDevKvm(o);
  const daemonPids = await startLibvirtDaemons();
  // A domain left over from an interrupted run
  await run('virsh', [...VIRSH, 'destroy', DOMAIN]).catch(() => undefined);
  await run('virsh', [...VIRSH, 'undefine', DOMAIN]).catch(() => undefined);
  const xmlFile = path.join(work, 'domain.xml');
  await fsp.writeFile(xmlFile, domainXml(o, guest));
  await run('virsh', [...VIRSH, 'define', xmlFile]);
  onCleanup('undefine libvirt domain', async () => {
    await run('virsh', [...VIRSH, 'undefine', DOMAIN]);
    log(`undefined libvirt domain ${DOMAIN}`);
  });
  let running = false;
  const stop = async () => {
    if (!running) return;
    running = false;
    await run('virsh', [...VIRSH, 'destroy', DOMAIN]);
  };
  onCleanup('destroy libvirt domain', stop);
  return {
    name: 'libvirt',
    async run() {
      const offset = fileSize(guest.libvirtConsole);
      const pids = await daemonPids();
      const cpu0 = await cpuMs(pids);
      const t0 = performance.now();
      const seen = waitForMarker(guest.libvirtConsole, offset);
      running = true;
      const started = run('virsh', [...VIRSH, 'start', DOMAIN]).then(
        () => performance.now(),
        (e) => Promise.reject(new Error(`virsh start: ${(e.stderr || e.message).trim()}`)),
      );
      const t1 = await Promise.race([seen, started.then(() => seen)]);
      const cpu = (await cpuMs(pids)) - cpu0;
      return { ms: t1 - t0, ctlMs: (await started) - t0, cpu };
    },
    stop,
  };
}

// ---- contender 3: vmkit -------------------------------------------------------------------

async function makeVmkit(o, work) {
  const dir = path.join(work, 'vmkit-start');
  await fsp.mkdir(dir);
  const daemon = await startDaemon(dir, o);
  log(`vmkit daemon pid ${daemon.pid}, accelerator ${daemon.info.accel}, data folder ${dir}`);
  await run(process.execPath, [VMKIT_BIN, 'create', 'appliance', 'benchvm'], { env: daemon.env });
  const inst = (await daemon.api.request('GET', '/1.0/instances/benchvm')).metadata;
  const consoleLog = path.join(dir, 'instances', inst.id, 'console.log');
  let running = false;
  const stop = async () => {
    if (!running) return;
    running = false;
    const r = await daemon.api.request('PUT', '/1.0/instances/benchvm/state', { action: 'stop', force: true });
    await daemon.api.waitOp(r.operation, 60);
  };
  return {
    name: 'vmkit',
    daemon,
    inst,
    async run() {
      const offset = fileSize(consoleLog);
      const cpu0 = await cpuMs([daemon.pid]);
      const t0 = performance.now();
      const seen = waitForMarker(consoleLog, offset);
      running = true;
      const accepted = await daemon.api.request('PUT', '/1.0/instances/benchvm/state', { action: 'start' });
      const opDone = daemon.api.waitOp(accepted.operation, 120).then(() => performance.now());
      const t1 = await Promise.race([seen, opDone.then(() => seen)]);
      const cpu = (await cpuMs([daemon.pid])) - cpu0;
      return { ms: t1 - t0, ctlMs: (await opDone) - t0, cpu };
    },
    stop,
  };
}

// ---- list benchmark -----------------------------------------------------------------------

async function listBench(o, work) {
  const dir = path.join(work, 'vmkit-list');
  await fsp.mkdir(dir);
  const daemon = await startDaemon(dir, o);
  const api = daemon.api;
  const rssStart = await rssKiB(daemon.pid);
  log(`list benchmark: fresh daemon pid ${daemon.pid}; creating ${o.instances} instances (parallelism ${o.parallel})`);
  const t0 = performance.now();
  let next = 0;
  let done = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= o.instances) return;
      const r = await api.request('POST', '/1.0/instances', { name: `b${String(i).padStart(4, '0')}`, image: 'appliance' });
      await api.waitOp(r.operation, 120);
      if (++done % 200 === 0) log(`  ${done}/${o.instances} created`);
    }
  };
  await Promise.all(Array.from({ length: o.parallel }, worker));
  const createS = (performance.now() - t0) / 1000;
  const check = await api.request('GET', '/1.0/instances');
  if (check.metadata.length !== o.instances) throw new Error(`expected ${o.instances} instances, the daemon lists ${check.metadata.length}`);
  const rssAfterCreate = await rssKiB(daemon.pid);
  // warm-up (JIT, caches), not counted
  for (let i = 0; i < 20; i++) await api.request('GET', '/1.0/instances', undefined, { raw: true });
  const lat = [];
  let bytes = 0;
  for (let i = 0; i < o.listRequests; i++) {
    const s = performance.now();
    const r = await api.request('GET', '/1.0/instances', undefined, { raw: true });
    lat.push(performance.now() - s);
    if (r.status !== 200) throw new Error(`GET /1.0/instances: HTTP ${r.status}`);
    bytes = r.text.length;
  }
  const rssAfterList = await rssKiB(daemon.pid);
  return { createS, lat, bytes, rssStart, rssAfterCreate, rssAfterList, pid: daemon.pid };
}

// ---- main ---------------------------------------------------------------------------------

function fmtMs(x) {
  return x === undefined ? '-' : x >= 100 ? x.toFixed(0) : x.toFixed(1);
}
const mib = (kib) => (kib / 1024).toFixed(1);

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(path.join(ROOT, 'dist', 'daemon.js'))) die('dist/ is missing: run "npx tsc -p tsconfig.json" (npm run build) first');
  if (!fs.existsSync(path.join(o.applianceDir, 'image.json'))) die(`no appliance in ${o.applianceDir} (run "npm run setup")`);
  if (o.accel === 'kvm' && !fs.existsSync('/dev/kvm')) die('--accel kvm needs /dev/kvm');

  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'vmkit-bench-'));
  await fsp.chmod(work, 0o755); // libvirt-qemu must reach the guest files
  onCleanup('remove temp folder', () => fsp.rm(work, { recursive: true, force: true }));
  log(`work folder ${work}; accel ${o.accel}; ${o.runs} runs each (+${o.warmup} warm-up); console poll ${POLL_MS} ms`);

  const guest = await prepareGuest(o, work);
  const contenders = [makeRaw(o, guest)];
  if (o.libvirt) contenders.push(await makeLibvirt(o, guest, work));
  const vmkit = await makeVmkit(o, work);
  contenders.push(vmkit);

  const results = new Map(contenders.map((c) => [c.name, []]));
  const load0 = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  const total = o.warmup + o.runs;
  for (let round = 0; round < total; round++) {
    const warm = round < o.warmup;
    for (const c of contenders) {
      if (cleaning) return; // interrupted: the signal handler cleans up and exits
      const r = await c.run();
      await c.stop();
      log(`${warm ? 'warm-up' : `run ${round - o.warmup + 1}/${o.runs}`} ${c.name.padEnd(8)} ${fmtMs(r.ms)} ms` +
        (r.ctlMs !== undefined ? ` (start call done after ${fmtMs(r.ctlMs)} ms)` : ''));
      if (!warm) results.get(c.name).push(r);
      await sleep(300); // let the host settle (QEMU teardown, page cache writeback)
    }
  }
  const rssAfterStarts = await rssKiB(vmkit.daemon.pid);

  // ---- report: start
  const stats = new Map();
  for (const [name, rs] of results) {
    const ms = rs.map((r) => r.ms);
    const ctl = rs.filter((r) => r.ctlMs !== undefined).map((r) => r.ctlMs);
    const boot = rs.filter((r) => r.ctlMs !== undefined).map((r) => r.ms - r.ctlMs);
    const cpu = rs.filter((r) => r.cpu !== undefined).map((r) => r.cpu);
    stats.set(name, {
      med: median(ms), min: Math.min(...ms), max: Math.max(...ms), all: ms,
      ctl: ctl.length ? median(ctl) : undefined,
      boot: boot.length ? median(boot) : undefined,
      cpu: cpu.length ? median(cpu) : undefined,
    });
  }
  const out = [];
  const p = (s = '') => out.push(s);
  p();
  p(`## Start to first userspace line (${o.accel.toUpperCase()}, ${o.runs} runs each, alternating; ms)`);
  p();
  p('| | median | min | max | start call returned (median) | line after call returned (median) | manager CPU ms (median) | runs |');
  p('|---|---:|---:|---:|---:|---:|---:|---|');
  for (const [name, s] of stats) {
    p(`| ${name} | ${fmtMs(s.med)} | ${fmtMs(s.min)} | ${fmtMs(s.max)} | ${fmtMs(s.ctl)} | ${fmtMs(s.boot)} | ${fmtMs(s.cpu)} | ${s.all.map(fmtMs).join(', ')} |`);
  }
  p('(manager CPU: user+system time of libvirtd+virtlogd, or of the vmkit daemon, from the start call to the line)');
  p();
  p(`host: ${os.cpus().length} CPUs, ${os.cpus()[0]?.model ?? '?'}; load average before ${load0}, after ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  p();
  const v = stats.get('vmkit').med;
  const raw = stats.get('raw QEMU').med;
  p(`vmkit / raw QEMU = ${(v / raw).toFixed(3)}`);
  let verdict = true;
  if (stats.has('libvirt')) {
    const lv = stats.get('libvirt').med;
    const ok = v <= 0.9 * lv;
    verdict &&= ok;
    p(`vmkit / libvirt  = ${(v / lv).toFixed(3)}   target vmkit <= 0.9 x libvirt (${fmtMs(0.9 * lv)} ms): ${ok ? 'MET' : 'NOT MET'}`);
  } else {
    p('libvirt skipped (--skip-libvirt): the libvirt target is not evaluated');
  }
  p();
  const rssOk = rssAfterStarts < 120 * 1024;
  verdict &&= rssOk;
  p(`## vmkit daemon memory`);
  p();
  p(`RSS after the start runs (pid ${vmkit.daemon.pid}): ${mib(rssAfterStarts)} MiB   target < 120 MiB: ${rssOk ? 'MET' : 'NOT MET'}`);
  process.stdout.write(out.join('\n') + '\n');
  out.length = 0;

  // Stop the start-benchmark contenders before the list benchmark (frees CPU and memory).
  await vmkit.daemon.stop();

  if (o.list) {
    const l = await listBench(o, work);
    const p50 = percentile(l.lat, 50);
    const p95 = percentile(l.lat, 95);
    const p50Ok = p50 < 10;
    const p95Ok = p95 < 10;
    const listOk = p50Ok && p95Ok;
    const rss2Ok = l.rssAfterList < 120 * 1024;
    verdict &&= listOk && rss2Ok;
    p();
    p(`## GET /1.0/instances with ${o.instances} defined (stopped) instances (fresh daemon, pid ${l.pid})`);
    p();
    p(`created ${o.instances} instances through POST /1.0/instances in ${l.createS.toFixed(1)} s (parallelism ${o.parallel})`);
    p(`${o.listRequests} sequential requests (keep-alive, after 20 warm-up), response ${(l.bytes / 1024).toFixed(0)} KiB:`);
    p(`  p50 ${p50.toFixed(2)} ms   p95 ${p95.toFixed(2)} ms   p99 ${percentile(l.lat, 99).toFixed(2)} ms   max ${Math.max(...l.lat).toFixed(2)} ms`);
    p(`  target p50 < 10 ms: ${p50Ok ? 'MET' : 'NOT MET'}   target p95 < 10 ms: ${p95Ok ? 'MET' : 'NOT MET'}`);
    p(`RSS: fresh ${mib(l.rssStart)} MiB, after creating ${mib(l.rssAfterCreate)} MiB, after the list requests ${mib(l.rssAfterList)} MiB   target < 120 MiB: ${rss2Ok ? 'MET' : 'NOT MET'}`);
  }
  p();
  p(`all targets met: ${verdict ? 'yes' : 'no'}`);
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
