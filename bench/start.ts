#!/usr/bin/env node
// Start-latency benchmark: raw QEMU vs libvirt vs vmkit, same guest, TCG by default.
// Then the daemon's RSS and GET /1.0/instances latency with 1,000 defined instances.
//
//   node dist-bench/start.js [--runs N] [--accel tcg|kvm] [--warmup N] [--instances N]
//                       [--list-requests N] [--parallel N] [--skip-libvirt] [--skip-list] [--no-kvm-fix]
//                       [--skip-root]
//
// Compiled by bench/tsconfig.json to dist-bench/ (npm run build:bench); it drives the built
// CLI/daemon in dist/ through bin/vmkit.js and the API client of src/client.
// Run as root (libvirt's system daemon and apt-get need it). See bench/README.md.

import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  ROOT,
  VMKIT_BIN,
  POLL_MS,
  DOMAIN,
  log,
  sleep,
  onCleanup,
  killPid,
  fileSize,
  waitForMarker,
  median,
  percentile,
  run,
  startDaemon,
  cpuMs,
  rssKiB,
  freePort,
  waitHttp200,
  prepareGuest,
  rawArgv,
  ensureLibvirtInstalled,
  startLibvirtDaemons,
  domainXml,
  requireApplianceBench,
  makeWorkDir,
  defineDomain,
  normalizeDevKvm,
  fmtMs,
  mib,
  isCleaningUp,
  runBench,
  enterOwnNetns,
} from './lib.js';
import { parseArgs } from './args.js';

// ---- options ------------------------------------------------------------------------------

const USAGE =
  'node dist-bench/start.js [--runs N (5)] [--accel tcg|kvm] [--warmup N (1)] [--instances N (1000)]\n' +
  '                          [--list-requests N (300)] [--parallel N (8)] [--appliance DIR] [--skip-libvirt] [--skip-list] [--no-kvm-fix] [--skip-root]';

function options() {
  return parseArgs(USAGE, {
    runs: { flag: '--runs', kind: 'int', min: 1, default: 5 },
    warmup: { flag: '--warmup', kind: 'int', min: 0, default: 1 },
    instances: { flag: '--instances', kind: 'int', min: 1, default: 1000 },
    listRequests: { flag: '--list-requests', kind: 'int', min: 1, default: 300 },
    parallel: { flag: '--parallel', kind: 'int', min: 1, default: 8 },
    accel: { flag: '--accel', kind: 'choice', values: ['tcg', 'kvm'], default: 'tcg' },
    applianceDir: { flag: '--appliance', kind: 'path', default: process.env.VMKIT_APPLIANCE_DIR || path.join(ROOT, '.cache', 'appliance') },
    libvirt: { flag: '--skip-libvirt', kind: 'clear' },
    list: { flag: '--skip-list', kind: 'clear' },
    kvmFix: { flag: '--no-kvm-fix', kind: 'clear' },
    root: { flag: '--skip-root', kind: 'clear' },
  });
}

/** One start of a contender: the boot time, and for libvirt and vmkit when their start call returned. */
interface StartRun {
  ms: number;
  ctlMs?: number;
  [k: string]: number | undefined;
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
    async run(): Promise<StartRun> {
      const offset = fileSize(guest.rawConsole);
      const t0 = performance.now();
      const seen = waitForMarker(guest.rawConsole, offset);
      child = spawn('qemu-system-x86_64', rawArgv(o, guest), { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const died = new Promise<never>((_, rej) => child.once('exit', (c, s) => rej(new Error(`raw QEMU exited (${c ?? s}): ${stderr.trim()}`))));
      const t1 = await Promise.race([seen, died]);
      died.catch(() => undefined);
      return { ms: t1 - t0 };
    },
    stop,
  };
}

async function makeLibvirt(o, guest, work) {
  await ensureLibvirtInstalled();
  await normalizeDevKvm(o);
  const daemonPids = await startLibvirtDaemons();
  const domain = await defineDomain(DOMAIN, domainXml(o, guest), path.join(work, 'domain.xml'));
  return {
    name: 'libvirt',
    async run(): Promise<StartRun> {
      const offset = fileSize(guest.libvirtConsole);
      const pids = await daemonPids();
      const cpu0 = await cpuMs(pids);
      const t0 = performance.now();
      const seen = waitForMarker(guest.libvirtConsole, offset);
      const started = domain.start().then(
        () => performance.now(),
        (e) => Promise.reject(new Error(`virsh start: ${(e.stderr || e.message).trim()}`)),
      );
      const t1 = await Promise.race([seen, started.then(() => seen)]);
      const cpu = (await cpuMs(pids)) - cpu0;
      return { ms: t1 - t0, ctlMs: (await started) - t0, cpu };
    },
    stop: domain.stop,
  };
}

// ---- contender 3: vmkit -------------------------------------------------------------------

// `asRoot`: the same daemon with VMKIT_QEMU_AS_ROOT=1 — QEMU as root in the daemon's cgroup,
// without its own uid, cgroup or bounded TCG cache (the set-up before issue 12). A switch for
// this bench only, to measure what the confinement costs in the same run; not a user setting.
async function makeVmkit(o, work, { name = 'vmkit', asRoot = false } = {}) {
  const dir = path.join(work, asRoot ? 'vmkit-root' : 'vmkit-start');
  await fsp.mkdir(dir);
  const daemon = await startDaemon(dir, o, asRoot ? { VMKIT_QEMU_AS_ROOT: '1' } : {});
  log(`${name} daemon pid ${daemon.pid}, accelerator ${daemon.info.accel}, data folder ${dir}`);
  // A user-mode forward to the guest's web server: the start is also timed to its first HTTP answer.
  const port = await freePort();
  await run(process.execPath, [VMKIT_BIN, 'create', 'appliance', 'benchvm', '--forward', `${port}:80`], { env: daemon.env });
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
    name,
    daemon,
    inst,
    async run(): Promise<StartRun> {
      const offset = fileSize(consoleLog);
      const cpu0 = await cpuMs([daemon.pid]);
      const t0 = performance.now();
      const seen = waitForMarker(consoleLog, offset);
      running = true;
      const accepted = await daemon.api.request('PUT', '/1.0/instances/benchvm/state', { action: 'start' });
      const opDone = daemon.api.waitOp(accepted.operation, 120).then(() => performance.now());
      const t1 = await Promise.race([seen, opDone.then(() => seen)]);
      const cpu = (await cpuMs([daemon.pid])) - cpu0;
      // Polled once the start call returned (the guest runs: never poll a paused one).
      const tHttp = await opDone.then(() => waitHttp200(port));
      return { ms: t1 - t0, ctlMs: (await opDone) - t0, cpu, httpMs: tHttp - t0 };
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

async function main() {
  const o = options();
  enterOwnNetns();
  requireApplianceBench(o);

  const work = await makeWorkDir('vmkit-bench-');
  log(`work folder ${work}; accel ${o.accel}; ${o.runs} runs each (+${o.warmup} warm-up); console poll ${POLL_MS} ms`);

  const guest = await prepareGuest(o, work);
  const contenders = [makeRaw(o, guest)];
  if (o.libvirt) contenders.push(await makeLibvirt(o, guest, work));
  const vmkit = await makeVmkit(o, work);
  contenders.push(vmkit);
  const vmkitRoot = o.root ? await makeVmkit(o, work, { name: 'vmkit as root', asRoot: true }) : undefined;
  if (vmkitRoot) contenders.push(vmkitRoot);

  const results = new Map(contenders.map((c) => [c.name, []]));
  const load0 = os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
  const total = o.warmup + o.runs;
  for (let round = 0; round < total; round++) {
    const warm = round < o.warmup;
    for (const c of contenders) {
      if (isCleaningUp()) return; // interrupted: the signal handler cleans up and exits
      const r = await c.run();
      await c.stop();
      log(
        `${warm ? 'warm-up' : `run ${round - o.warmup + 1}/${o.runs}`} ${c.name.padEnd(8)} ${fmtMs(r.ms)} ms` +
          (r.ctlMs !== undefined ? ` (start call done after ${fmtMs(r.ctlMs)} ms)` : ''),
      );
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
      med: median(ms),
      min: Math.min(...ms),
      max: Math.max(...ms),
      all: ms,
      http: rs.filter((r) => r.httpMs !== undefined).map((r) => r.httpMs),
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
  p(
    `host: ${os.cpus().length} CPUs, ${os.cpus()[0]?.model ?? '?'}; load average before ${load0}, after ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
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
  if (stats.has('vmkit as root')) {
    const u = stats.get('vmkit').http;
    const r = stats.get('vmkit as root').http;
    const ratio = median(u) / median(r);
    const ok = ratio <= 1.05;
    verdict &&= ok;
    p();
    p(`## vmkit: QEMU unprivileged (own uid, no capabilities, own cgroup) vs QEMU as root (VMKIT_QEMU_AS_ROOT=1), start -> first HTTP 200 (ms)`);
    p();
    p('| | median | min | max | runs |');
    p('|---|---:|---:|---:|---|');
    for (const [label, xs] of [
      ['vmkit (unprivileged QEMU)', u],
      ['vmkit (QEMU as root)', r],
    ])
      p(`| ${label} | ${fmtMs(median(xs))} | ${fmtMs(Math.min(...xs))} | ${fmtMs(Math.max(...xs))} | ${xs.map(fmtMs).join(', ')} |`);
    p();
    p(`unprivileged / root = ${ratio.toFixed(3)}   target <= 1.05: ${ok ? 'MET' : 'NOT MET'}`);
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
  await vmkitRoot?.daemon.stop();

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
    p(
      `RSS: fresh ${mib(l.rssStart)} MiB, after creating ${mib(l.rssAfterCreate)} MiB, after the list requests ${mib(l.rssAfterList)} MiB   target < 120 MiB: ${rss2Ok ? 'MET' : 'NOT MET'}`,
    );
  }
  p();
  p(`all targets met: ${verdict ? 'yes' : 'no'}`);
  process.stdout.write(out.join('\n') + '\n');
}

runBench(main);
