#!/usr/bin/env node
// Snapshot benchmark: snapshot create/restore with memory for raw QEMU, libvirt and vmkit
// (256 MiB and 1 GiB guests, side by side in one run), then vmkit's start after suspend vs
// cold boot, to the guest's HTTP answer. TCG by default.
//
//   node dist-bench/snapshot.js [--runs N] [--warmup N] [--sizes 256,1024] [--accel tcg|kvm]
//                          [--settle MS] [--skip-libvirt] [--skip-suspend] [--no-kvm-fix]
//
// Compiled by bench/tsconfig.json to dist-bench/ (npm run build:bench); drives the built daemon
// in dist/ through bin/vmkit.js, the API client of src/client and the QMP client of src/qemu.
// Run as root (libvirt's system daemon). See bench/README.md, section "Snapshots".

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  ROOT,
  VIRSH,
  log,
  sleep,
  onCleanup,
  isCleaningUp,
  killPid,
  fileSize,
  waitForMarker,
  median,
  run,
  startDaemon,
  prepareGuest,
  rawArgv,
  ensureLibvirtInstalled,
  startLibvirtDaemons,
  domainXml,
  requireApplianceBench,
  makeWorkDir,
  normalizeDevKvm,
  fmtMs,
  qmpConnect,
  qmpRunJob,
  freePort,
  waitHttp200,
  httpGetStatus,
  runBench,
  enterOwnNetns,
} from './lib.js';
import { parseArgs } from './args.js';

const READY = 'vmkit-appliance: ready'; // the guest's last boot line: network up, HTTP server started
const DOMAIN = 'vmkit-bench-snap';
const ROOT_NODE = 'root'; // vmkit's root block node name, used by the raw QEMU too

// ---- options ------------------------------------------------------------------------------

const USAGE =
  'node dist-bench/snapshot.js [--runs N (3)] [--warmup N (1)] [--sizes MiB,MiB (256,1024)] [--accel tcg|kvm]\n' +
  '                             [--settle MS (3000)] [--appliance DIR] [--skip-libvirt] [--skip-suspend] [--no-kvm-fix]';

function options() {
  return parseArgs(USAGE, {
    runs: { flag: '--runs', kind: 'int', min: 1, default: 3 },
    warmup: { flag: '--warmup', kind: 'int', min: 0, default: 1 },
    settleMs: { flag: '--settle', kind: 'int', min: 0, default: 3000 },
    sizes: { flag: '--sizes', kind: 'ints', min: 64, default: [256, 1024] },
    accel: { flag: '--accel', kind: 'choice', values: ['tcg', 'kvm'], default: 'tcg' },
    applianceDir: { flag: '--appliance', kind: 'path', default: process.env.VMKIT_APPLIANCE_DIR || path.join(ROOT, '.cache', 'appliance') },
    libvirt: { flag: '--skip-libvirt', kind: 'clear' },
    suspend: { flag: '--skip-suspend', kind: 'clear' },
    kvmFix: { flag: '--no-kvm-fix', kind: 'clear' },
  });
}

const since = (t0) => performance.now() - t0;
const errText = (e) => (e.stderr || e.message || String(e)).trim().replace(/\s+/g, ' ');

// ---- contender 1: raw QEMU with a QMP socket -----------------------------------------------

async function makeRaw(o, guest, work, size) {
  const overlay = await guest.overlay(`raw-${size}.qcow2`);
  const consoleLog = path.join(guest.dir, `raw-${size}-console.log`);
  const qmpPath = path.join(work, `raw-${size}.qmp`);
  const port = await freePort();
  let child = null;
  let qmp = null;
  const shutdown = async () => {
    qmp?.close();
    qmp = null;
    if (!child) return;
    const c = child;
    child = null;
    await killPid(c.pid, 'raw QEMU');
  };
  const forget = onCleanup(`raw QEMU ${size} MiB`, shutdown);
  return {
    name: 'raw QEMU',
    async boot() {
      const offset = fileSize(consoleLog);
      const ready = waitForMarker(consoleLog, offset, undefined, READY);
      ready.catch(() => undefined);
      child = spawn(
        'qemu-system-x86_64',
        rawArgv(o, guest, {
          name: `bench-snap-raw-${size}`,
          memoryMiB: size,
          overlay,
          console: consoleLog,
          qmp: qmpPath,
          hostfwd: [`tcp:127.0.0.1:${port}-:80`],
        }),
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const died = new Promise((_, rej) => child.once('exit', (c, s) => rej(new Error(`raw QEMU exited (${c ?? s}): ${stderr.trim()}`))));
      died.catch(() => undefined);
      qmp = await Promise.race([qmpConnect(qmpPath), died]);
      await Promise.race([ready, died]);
    },
    // The same QMP calls as vmkit (src/snapshots/snapshots.ts): a snapshot-save job with
    // vmstate + devices on the root node; restore = stop, snapshot-load job, cont.
    async save(tag) {
      const t0 = performance.now();
      await qmpRunJob(qmp, 'snapshot-save', { tag, vmstate: ROOT_NODE, devices: [ROOT_NODE] });
      return { ms: since(t0) };
    },
    async restore(tag) {
      const t0 = performance.now();
      await qmp.execute('stop');
      await qmpRunJob(qmp, 'snapshot-load', { tag, vmstate: ROOT_NODE, devices: [ROOT_NODE] });
      await qmp.execute('cont');
      return { ms: since(t0) };
    },
    async check() {
      await waitHttp200(port, { timeoutMs: 20_000, pollMs: 50 });
    },
    async remove(tag) {
      await qmpRunJob(qmp, 'snapshot-delete', { tag, devices: [ROOT_NODE] });
    },
    async shutdown() {
      await shutdown();
      forget();
    },
  };
}

// ---- contender 2: libvirt --------------------------------------------------------------------

const virsh = (...args) => run('virsh', [...VIRSH, ...args]);

/** How many times libvirt has started a QEMU for this domain (its log, one line per start). */
function qemuStarts(name) {
  try {
    return (fs.readFileSync(`/var/log/libvirt/qemu/${name}.log`, 'latin1').match(/: starting up /g) ?? []).length;
  } catch {
    return 0;
  }
}

async function dropDomain(name) {
  await virsh('destroy', name).catch(() => undefined);
  await virsh('undefine', '--snapshots-metadata', name).catch(() => undefined);
}

async function makeLibvirt(o, guest, work, size) {
  const name = `${DOMAIN}-${size}`;
  const overlay = await guest.overlay(`libvirt-${size}.qcow2`);
  const consoleLog = path.join(guest.dir, `libvirt-${size}-console.log`);
  await dropDomain(name); // left over from an interrupted run
  const xmlFile = path.join(work, `${name}.xml`);
  await fsp.writeFile(xmlFile, domainXml(o, guest, { name, memoryMiB: size, overlay, console: consoleLog }));
  await virsh('define', xmlFile);
  const drop = async () => {
    await dropDomain(name);
    log(`libvirt domain ${name}: destroyed, undefined with its snapshot metadata`);
  };
  const forget = onCleanup(`libvirt domain ${name}`, drop);
  return {
    name: 'libvirt',
    async boot() {
      const offset = fileSize(consoleLog);
      const ready = waitForMarker(consoleLog, offset, undefined, READY);
      ready.catch(() => undefined);
      try {
        await virsh('start', name);
      } catch (e) {
        throw new Error(`virsh start: ${errText(e)}`);
      }
      await ready;
    },
    // A running domain with only qcow2 disks: libvirt takes an internal "system checkpoint"
    // (disk + memory + device state in the qcow2) by default; revert returns it running.
    async save(tag) {
      const t0 = performance.now();
      try {
        await virsh('snapshot-create-as', name, tag);
      } catch (e) {
        throw new Error(`virsh snapshot-create-as ${name} ${tag}: ${errText(e)}`);
      }
      return { ms: since(t0) };
    },
    async restore(tag) {
      const starts0 = qemuStarts(name);
      const t0 = performance.now();
      try {
        await virsh('snapshot-revert', name, tag);
      } catch (e) {
        throw new Error(`virsh snapshot-revert ${name} ${tag}: ${errText(e)}`);
      }
      const ms = since(t0);
      // Did libvirt load the snapshot into the running QEMU, or replace the process?
      return { ms, restarted: qemuStarts(name) > starts0 };
    },
    async check() {
      const st = (await virsh('domstate', name)).stdout.trim();
      if (st !== 'running') throw new Error(`domain state after revert: ${st}`);
    },
    async remove(tag) {
      await virsh('snapshot-delete', name, tag);
    },
    async describe(tag) {
      const xml = (await virsh('snapshot-dumpxml', name, tag).catch(() => ({ stdout: '' }))).stdout;
      const mem = /<memory snapshot='(\w+)'/.exec(xml)?.[1];
      const disk = /<disk name='vda' snapshot='(\w+)'/.exec(xml)?.[1];
      return `memory=${mem ?? '?'} disk=${disk ?? '?'}`;
    },
    async shutdown() {
      await drop();
      forget();
    },
  };
}

// ---- contender 3: vmkit -----------------------------------------------------------------------

async function makeVmkit(daemon, size) {
  const api = daemon.api;
  const name = `snap-${size}`;
  const port = await freePort();
  const op = async (method: string, url: string, body?: unknown, timeoutS = 300) => {
    const r = await api.request(method, url, body);
    return api.waitOp(r.operation, timeoutS);
  };
  await op('POST', '/1.0/instances', { name, image: 'appliance', memoryMiB: size, forwards: [{ hostPort: port, guestPort: 80 }] });
  const state = (action, extra = {}) => op('PUT', `/1.0/instances/${name}/state`, { action, ...extra });
  return {
    name: 'vmkit',
    instance: name,
    port,
    state,
    async boot() {
      await state('start');
      await waitHttp200(port);
    },
    // Timed from the request to the end of the operation (GET /1.0/operations/{id}/wait).
    async save(tag) {
      const t0 = performance.now();
      const done = await op('POST', `/1.0/instances/${name}/snapshots`, { name: tag, memory: true });
      return { ms: since(t0), serverMs: done.result?.durationMs, pausedMs: done.result?.snapshot?.pausedMs };
    },
    async restore(tag) {
      const t0 = performance.now();
      const done = await op('POST', `/1.0/instances/${name}/snapshots/${tag}/restore`);
      return { ms: since(t0), serverMs: done.result?.durationMs };
    },
    async check() {
      await waitHttp200(port, { timeoutMs: 20_000, pollMs: 50 });
    },
    async remove(tag) {
      await op('DELETE', `/1.0/instances/${name}/snapshots/${tag}`);
    },
    async shutdown() {
      await state('stop', { force: true });
    },
  };
}

// ---- part 1: snapshot create / restore ----------------------------------------------------

async function snapshotRound(o, size, contenders, results) {
  log(`--- ${size} MiB: booting ${contenders.map((c) => c.name).join(', ')}`);
  const live = [];
  for (const c of contenders) {
    const t0 = performance.now();
    try {
      await c.boot();
      log(`${size} MiB ${c.name}: booted and ready after ${fmtMs(since(t0))} ms`);
      live.push(c);
    } catch (e) {
      log(`${size} MiB ${c.name}: boot failed, left out: ${e.message}`);
      results.notes.push(`${size} MiB ${c.name}: boot failed: ${e.message}`);
    }
  }
  log(`${size} MiB: letting the guests settle for ${o.settleMs} ms (idle)`);
  await sleep(o.settleMs);
  const dead = new Set();
  const total = o.warmup + o.runs;
  for (let round = 0; round < total; round++) {
    const warm = round < o.warmup;
    for (const c of live) {
      if (isCleaningUp()) return;
      if (dead.has(c)) continue;
      const tag = `bench-${round}`;
      const key = `${size}/${c.name}`;
      try {
        const s = await c.save(tag);
        await sleep(300);
        const r = await c.restore(tag);
        let checkNote = '';
        try {
          await c.check();
        } catch (e) {
          checkNote = ` (guest check after restore FAILED: ${e.message})`;
          results.notes.push(`${size} MiB ${c.name} run ${round}: check after restore failed: ${e.message}`);
        }
        let what = '';
        if (c.describe && round === 0) what = ` [${await c.describe(tag)}]`;
        await c.remove(tag);
        log(
          `${warm ? 'warm-up' : `run ${round - o.warmup + 1}/${o.runs}`} ${size} MiB ${c.name.padEnd(8)} create ${fmtMs(s.ms)} ms` +
            (s.serverMs !== undefined ? ` (op ${s.serverMs} ms, paused ${s.pausedMs} ms)` : '') +
            `, restore ${fmtMs(r.ms)} ms` +
            (r.serverMs !== undefined ? ` (op ${r.serverMs} ms)` : '') +
            (r.restarted ? ' (libvirt replaced the QEMU process: new QEMU with -loadvm)' : '') +
            what +
            checkNote,
        );
        if (r.restarted !== undefined) results.restarts.set(key, (results.restarts.get(key) ?? 0) + (r.restarted ? 1 : 0));
        if (!warm) {
          if (!results.snap.has(key)) results.snap.set(key, { create: [], restore: [], createServer: [], paused: [], restoreServer: [] });
          const e = results.snap.get(key);
          e.create.push(s.ms);
          e.restore.push(r.ms);
          if (s.serverMs !== undefined) e.createServer.push(s.serverMs);
          if (s.pausedMs !== undefined) e.paused.push(s.pausedMs);
          if (r.serverMs !== undefined) e.restoreServer.push(r.serverMs);
        }
      } catch (e) {
        log(`${size} MiB ${c.name}: snapshot failed, left out for this size: ${e.message}`);
        results.notes.push(`${size} MiB ${c.name}: ${e.message}`);
        dead.add(c);
      }
      await sleep(500);
    }
  }
}

// ---- part 2: start after suspend vs cold boot (vmkit) ------------------------------------------

/** Duration of one GET /status right after the first 200 (what a request costs once the guest is up). */
async function timedGet(port) {
  const t0 = performance.now();
  const st = await httpGetStatus(port);
  if (st !== 200) throw new Error(`GET /status: HTTP ${st}`);
  return since(t0);
}

async function suspendBench(o, vm) {
  const res = { suspend: [], resume: [], resumeOp: [], cold: [], coldOp: [], nextGet: [] };
  log(`--- suspend/resume vs cold boot: instance ${vm.instance}, GET http://127.0.0.1:${vm.port}/status`);
  await vm.boot();
  await sleep(o.settleMs);
  const total = o.warmup + o.runs;
  for (let round = 0; round < total; round++) {
    if (isCleaningUp()) return res;
    const warm = round < o.warmup;
    let t0 = performance.now();
    await vm.state('suspend');
    const suspendMs = since(t0);
    await sleep(500);
    // start of a suspended instance: QEMU launched (-S), snapshot-load of the suspend tag, cont.
    // The clock runs from the start request to the first 200; the GETs begin when the start
    // operation is done (as in "vmkit start NAME && curl ..."), so none of them enters a
    // paused guest (see waitHttp200 in lib.js). The same for the cold boot.
    t0 = performance.now();
    await vm.state('start');
    const resumeOpMs = since(t0);
    const resumeMs = (await waitHttp200(vm.port)) - t0;
    const warmResume = await timedGet(vm.port);
    await sleep(1000);
    // cold boot: stop --force, then start
    await vm.state('stop', { force: true });
    await sleep(500);
    t0 = performance.now();
    await vm.state('start');
    const opMs = since(t0);
    const coldMs = (await waitHttp200(vm.port)) - t0;
    const warmCold = await timedGet(vm.port);
    log(
      `${warm ? 'warm-up' : `run ${round - o.warmup + 1}/${o.runs}`} suspend ${fmtMs(suspendMs)} ms; ` +
        `start after suspend -> HTTP 200 ${fmtMs(resumeMs)} ms (op ${fmtMs(resumeOpMs)} ms); ` +
        `cold start -> HTTP 200 ${fmtMs(coldMs)} ms (op ${fmtMs(opMs)} ms); ` +
        `next GET ${fmtMs(warmResume)} / ${fmtMs(warmCold)} ms`,
    );
    if (!warm) {
      res.suspend.push(suspendMs);
      res.resume.push(resumeMs);
      res.resumeOp.push(resumeOpMs);
      res.cold.push(coldMs);
      res.coldOp.push(opMs);
      res.nextGet.push(warmResume, warmCold);
    }
    await sleep(o.settleMs); // idle again before the next suspend
  }
  return res;
}

// ---- main ---------------------------------------------------------------------------------

async function main() {
  const o = options();
  enterOwnNetns();
  requireApplianceBench(o);

  const work = await makeWorkDir('vmkit-bench-snap-');
  log(`work folder ${work}; accel ${o.accel}; sizes ${o.sizes.join(', ')} MiB; ${o.runs} runs (+${o.warmup} warm-up)`);
  const load0 = os.loadavg();

  const guest = await prepareGuest(o, work);
  const results = { snap: new Map(), notes: [], restarts: new Map() };

  let libvirtOk = false;
  if (o.libvirt) {
    try {
      await ensureLibvirtInstalled();
      await normalizeDevKvm(o);
      await startLibvirtDaemons();
      libvirtOk = true;
    } catch (e) {
      log(`libvirt unavailable, left out: ${e.message}`);
      results.notes.push(`libvirt unavailable: ${e.message}`);
    }
  }

  const vmkitDir = path.join(work, 'vmkit');
  await fsp.mkdir(vmkitDir);
  const daemon = await startDaemon(vmkitDir, o);
  log(`vmkit daemon pid ${daemon.pid}, accelerator ${daemon.info.accel}, data folder ${vmkitDir}`);

  let vm256 = null;
  for (const size of o.sizes) {
    if (isCleaningUp()) return;
    const contenders = [await makeRaw(o, guest, work, size)];
    if (libvirtOk) {
      try {
        contenders.push(await makeLibvirt(o, guest, work, size));
      } catch (e) {
        log(`libvirt ${size} MiB: cannot define the domain, left out: ${errText(e)}`);
        results.notes.push(`libvirt ${size} MiB: define failed: ${errText(e)}`);
      }
    }
    const vm = await makeVmkit(daemon, size);
    contenders.push(vm);
    await snapshotRound(o, size, contenders, results);
    for (const c of contenders) {
      try {
        await c.shutdown();
      } catch (e) {
        log(`${size} MiB ${c.name}: shutdown: ${e.message}`);
      }
    }
    if (size === Math.min(...o.sizes)) vm256 = vm; // the suspend part uses the smallest guest
    await sleep(500);
  }

  let sus = null;
  if (o.suspend && !isCleaningUp()) {
    try {
      sus = await suspendBench(o, vm256);
    } catch (e) {
      log(`suspend benchmark failed: ${e.message}`);
      results.notes.push(`suspend benchmark failed: ${e.message}`);
    }
  }
  const load1 = os.loadavg();

  // ---- report
  const out = [];
  const p = (s = '') => out.push(s);
  const med = (xs) => (xs && xs.length ? median(xs) : undefined);
  const ratio = (a, b) => (a === undefined || b === undefined ? '-' : (a / b).toFixed(2));
  p();
  p(`## Snapshot with memory: create and restore (${o.accel.toUpperCase()}, ${o.runs} runs each + ${o.warmup} warm-up, alternating; median ms)`);
  p();
  p('| guest | operation | raw QEMU | libvirt | vmkit | vmkit / raw QEMU | vmkit / libvirt |');
  p('|---|---|---:|---:|---:|---:|---:|');
  for (const size of o.sizes) {
    for (const what of ['create', 'restore']) {
      const m = (name) => med(results.snap.get(`${size}/${name}`)?.[what]);
      const raw = m('raw QEMU');
      const lv = m('libvirt');
      const vk = m('vmkit');
      p(`| ${size} MiB | ${what} | ${fmtMs(raw)} | ${fmtMs(lv)} | ${fmtMs(vk)} | ${ratio(vk, raw)} | ${ratio(vk, lv)} |`);
    }
  }
  p();
  p('All runs (ms):');
  for (const [key, e] of results.snap) {
    p(
      `  ${key.padEnd(16)} create ${e.create.map(fmtMs).join(', ')}; restore ${e.restore.map(fmtMs).join(', ')}` +
        (e.createServer.length ? `; vmkit op durationMs create ${e.createServer.join(', ')} (guest paused ${e.paused.join(', ')}), restore ${e.restoreServer.join(', ')}` : ''),
    );
  }
  p('raw QEMU: QMP snapshot-save job / stop + snapshot-load job + cont; libvirt: virsh snapshot-create-as / snapshot-revert');
  p('(process start of virsh included); vmkit: API request -> operation done (GET /1.0/operations/{id}/wait).');
  for (const [key, n] of results.restarts) {
    if (n) p(`${key}: snapshot-revert replaced the running QEMU by a new one started with -loadvm in ${n} of ${o.warmup + o.runs} reverts (its domain log).`);
  }
  p('No target is set for snapshot create/restore: the ratios are informational.');
  let verdict = null;
  if (sus && sus.resume.length) {
    const s = med(sus.suspend);
    const r = med(sus.resume);
    const c = med(sus.cold);
    const fast = c / r;
    verdict = fast >= 10;
    p();
    p(`## vmkit start after suspend vs cold boot, to GET /status = 200 through the port forward (${vm256.instance}, ${o.runs} runs + ${o.warmup} warm-up; ms)`);
    p();
    p('| | median | min | max | runs |');
    p('|---|---:|---:|---:|---|');
    const row = (label, xs) => p(`| ${label} | ${fmtMs(med(xs))} | ${fmtMs(Math.min(...xs))} | ${fmtMs(Math.max(...xs))} | ${xs.map(fmtMs).join(', ')} |`);
    row('suspend (operation)', sus.suspend);
    row('start after suspend -> HTTP 200', sus.resume);
    row('  of which start operation', sus.resumeOp);
    row('cold boot (after stop --force) -> HTTP 200', sus.cold);
    row('  of which start operation', sus.coldOp);
    row('one more GET /status right after (both cases)', sus.nextGet);
    p();
    p(`cold boot / start after suspend = ${fast.toFixed(1)}x   target >= 10x: ${verdict ? 'MET' : 'NOT MET'}` + `   (suspend + start = ${fmtMs(s + r)} ms)`);
  }
  p();
  const la = (l) => l.map((x) => x.toFixed(2)).join(' ');
  p(
    `host: ${os.cpus().length} CPUs, ${os.cpus()[0]?.model ?? '?'}; load average before ${la(load0)}, after ${la(load1)}` +
      (Math.max(load0[0], load1[0]) > 2 ? '  (loaded: > 2, figures are noisy)' : ''),
  );
  if (results.notes.length) {
    p();
    p('Notes:');
    for (const n of results.notes) p(`  - ${n}`);
  }
  p();
  p(`targets met: ${verdict === null ? 'n/a (suspend part skipped)' : verdict ? 'yes' : 'no'}`);
  process.stdout.write(out.join('\n') + '\n');
}

runBench(main);
