#!/usr/bin/env node
// Images benchmark (not a test): linked-clone creation time and full-copy throughput.
//
//   node dist-bench/images.js [--clones N] [--data-mib N] [--reps N] [--ova-reps N] [--dir PATH]
//
// 1. Linked clones of a 1 GiB and a 50 GiB sparse image: the raw qcow2 overlay creation
//    (src/storage/qemu-img.ts) and an end-to-end `create` through the daemon's API
//    (what `vmkit launch IMAGE NAME --count N` does per replica, minus the boot). Target < 50 ms.
// 2. Import, export (qcow2, vmdk, OVA) and full clone of a 2 GiB image holding --data-mib of
//    random data, against `qemu-img convert` of the same file on the same disk. Throughput
//    ratio = time(qemu-img convert) / time(vmkit); target >= 0.9.
//
// Compiled by bench/tsconfig.json to dist-bench/ (npm run build:bench); it drives dist/ and
// bin/vmkit.js, and the daemon through the API client of src/client.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

import { createLinkedClone } from '../dist/storage/qemu-img.js';
import { parseArgs } from './args.js';
import { ROOT, makeApi } from './lib.js';

const opts = parseArgs('node dist-bench/images.js [--clones N (20)] [--data-mib N (1024)] [--reps N (5)] [--ova-reps N (1)] [--dir PATH (/var/tmp)]', {
  clones: { flag: '--clones', kind: 'int', min: 1, default: 20 },
  dataMiB: { flag: '--data-mib', kind: 'int', min: 1, default: 1024 },
  reps: { flag: '--reps', kind: 'int', min: 1, default: 5 },
  ovaReps: { flag: '--ova-reps', kind: 'int', min: 1, default: 1 },
  dir: { flag: '--dir', kind: 'path', default: '/var/tmp' },
});

const work = fs.mkdtempSync(path.join(opts.dir, 'vmkit-bench-img-'));
const dataDir = fs.mkdtempSync('/tmp/vmkb-');
const q = (...args) => {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`qemu-img ${args.join(' ')}: ${r.stderr}`);
};
const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)], mean: s.reduce((a, b) => a + b, 0) / s.length, min: s[0], max: s.at(-1) };
};
const fmt = (ms) => `${ms.toFixed(1)} ms`;
const syncDisk = () => spawnSync('sync');

// vmkit's API client (src/client) over the daemon's socket: answers as envelopes, errors thrown.
const client = makeApi(path.join(dataDir, 'vmkit.sock'));
const api = (method: string, p: string, body?: unknown) => client.request(method, p, body);
async function op(method: string, p: string, body?: unknown) {
  const a = await api(method, p, body);
  if (a.type !== 'async') throw new Error(JSON.stringify(a));
  return (await client.waitOp(`/1.0/operations/${a.metadata.id}`, 3600)).result as any;
}
async function timed(fn) {
  syncDisk();
  const t = performance.now();
  await fn();
  const ms = performance.now() - t;
  return ms;
}
/** Alternates baseline and vmkit runs (so page cache and other load hit both alike); best of each. */
async function pair(reps, base, baseCleanup, mine, mineCleanup) {
  const b = [];
  const m = [];
  for (let i = 0; i < reps; i++) {
    b.push(await timed(base));
    await baseCleanup?.();
    m.push(await timed(mine));
    await mineCleanup?.();
  }
  return [Math.min(...b), Math.min(...m)];
}

const daemon = spawn(process.execPath, [path.join(ROOT, 'bin', 'vmkit.js'), 'daemon', '--dir', dataDir], {
  env: { ...process.env, VMKIT_ACCEL: 'tcg' },
  stdio: ['ignore', 'ignore', 'inherit'],
});
try {
  for (let i = 0; i < 200 && !fs.existsSync(path.join(dataDir, 'vmkit.sock')); i++) await new Promise((r) => setTimeout(r, 50));
  console.log(`vmkit images benchmark — ${new Date().toISOString()}, qemu-img ${spawnSync('qemu-img', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]}`);
  console.log(`work folder ${work}, data folder ${dataDir}\n`);

  // ---- 1. linked clones ------------------------------------------------------------------
  console.log(`1. Linked clones (${opts.clones} each; target < 50 ms per clone)`);
  for (const gib of [1, 50]) {
    const base = path.join(work, `sparse-${gib}g.qcow2`);
    q('create', '-q', '-f', 'qcow2', base, `${gib}G`);
    const raw = [];
    for (let i = 0; i < opts.clones; i++) {
      const t = performance.now();
      await createLinkedClone(base, 'qcow2', path.join(work, `c-${gib}-${i}.qcow2`));
      raw.push(performance.now() - t);
    }
    await op('POST', '/1.0/images', { source: base, name: `sparse-${gib}g` });
    const e2e = [];
    for (let i = 0; i < opts.clones; i++) {
      const t = performance.now();
      await op('POST', '/1.0/instances', { name: `r${gib}-${i}`, image: `sparse-${gib}g` });
      e2e.push(performance.now() - t);
    }
    const r = stats(raw);
    const e = stats(e2e);
    console.log(
      `   ${String(gib).padStart(2)} GiB image: qcow2 overlay median ${fmt(r.median)} (min ${fmt(r.min)}, max ${fmt(r.max)}); API create (launch --count per replica, no boot) median ${fmt(e.median)} (min ${fmt(e.min)}, max ${fmt(e.max)})`,
    );
    for (let i = 0; i < opts.clones; i++) await op('DELETE', `/1.0/instances/r${gib}-${i}`);
  }

  // ---- 2. throughput ---------------------------------------------------------------------
  console.log(
    `\n2. Full copies of a 2 GiB qcow2 holding ${opts.dataMiB} MiB of random data (best of ${opts.reps} alternating runs, OVA ${opts.ovaReps}; ratio = qemu-img time / vmkit time, target >= 0.9)`,
  );
  const rawData = path.join(work, 'data.raw');
  const fd = fs.openSync(rawData, 'w');
  const chunk = randomBytes(16 * 1024 * 1024);
  for (let i = 0; i < opts.dataMiB / 16; i++) fs.writeSync(fd, chunk);
  fs.ftruncateSync(fd, 2 * 1024 ** 3);
  fs.closeSync(fd);
  const src = path.join(work, 'data.qcow2');
  q('convert', '-f', 'raw', '-O', 'qcow2', rawData, src);
  fs.rmSync(rawData);
  const rm = (p) => fs.rmSync(p, { force: true });
  const rows = [];
  const row = (label, base, mine) => rows.push({ label, base, mine, ratio: base / mine, mibs: (opts.dataMiB / (mine / 1000)).toFixed(0) });

  // import (qcow2 → qcow2 under prlimit, after inspection) vs qemu-img convert
  const [baseImport, mineImport] = await pair(
    opts.reps,
    async () => q('convert', '-f', 'qcow2', '-O', 'qcow2', src, path.join(work, 'b.qcow2')),
    () => rm(path.join(work, 'b.qcow2')),
    () => op('POST', '/1.0/images', { source: src, name: 'data' }),
    () => api('DELETE', '/1.0/images/data'),
  );
  row('import qcow2', baseImport, mineImport);
  await op('POST', '/1.0/images', { source: src, name: 'data' });
  const stored = path.join(dataDir, 'images', 'data', 'root.qcow2');

  for (const f of ['qcow2', 'vmdk']) {
    const out = path.join(work, `e.${f}`);
    const [base, mine] = await pair(
      opts.reps,
      async () => q('convert', '-f', 'qcow2', '-O', f, stored, out),
      () => rm(out),
      () => op('POST', '/1.0/images/data/export', { path: out }),
      () => rm(out),
    );
    row(`export ${f}`, base, mine);
  }
  {
    const out = path.join(work, 'e.ova');
    const vm = path.join(work, 's.vmdk');
    const [base, mine] = await pair(
      opts.ovaReps,
      async () => q('convert', '-f', 'qcow2', '-O', 'vmdk', '-o', 'subformat=streamOptimized', stored, vm),
      () => rm(vm),
      () => op('POST', '/1.0/images/data/export', { path: out }),
      () => rm(out),
    );
    row('export OVA (vs stream-optimized VMDK convert alone)', base, mine);
  }
  {
    await op('POST', '/1.0/instances', { name: 'src', image: 'data' });
    const inst = (await api('GET', '/1.0/instances/src')).metadata;
    const chain = path.join(dataDir, 'instances', inst.id, 'root.qcow2');
    const out = path.join(work, 'f.qcow2');
    const [base, mine] = await pair(
      opts.reps,
      async () => q('convert', '-f', 'qcow2', '-O', 'qcow2', chain, out),
      () => rm(out),
      () => op('POST', '/1.0/instances/src/clone', { name: 'full', full: true }),
      () => op('DELETE', '/1.0/instances/full'),
    );
    row('full clone', base, mine);
  }
  for (const r of rows) {
    console.log(`   ${r.label.padEnd(52)} qemu-img ${fmt(r.base).padStart(10)}  vmkit ${fmt(r.mine).padStart(10)}  ratio ${r.ratio.toFixed(2)}  (${r.mibs} MiB/s of data)`);
  }
} finally {
  daemon.kill('SIGTERM');
  await new Promise((r) => daemon.once('exit', r));
  fs.rmSync(work, { recursive: true, force: true });
  fs.rmSync(dataDir, { recursive: true, force: true });
}
