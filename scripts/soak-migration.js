#!/usr/bin/env node
// Soak loop for live migration (issue: floating forwards must never drop a request): runs the
// cluster integration test file N times in a row and prints, per run, what the client polling
// through the floating forward saw, QEMU's downtime and the end-to-end migration time.
//
//   npm run test:soak-migration                  # 10 runs
//   npm run test:soak-migration -- --runs 5 --load   # 5 runs with `stress-ng --cpu 2` alongside
//
// Stops at the first failing run (exit 1) and keeps its full output in the log folder.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

const args = process.argv.slice(2);
const runs = Number(args[args.indexOf('--runs') + 1] ?? 10) || 10;
const load = args.includes('--load');
const file = 'dist-test/cluster.test.js';
const logs = mkdtempSync(join(tmpdir(), 'vmkit-soak-'));

let stress;
if (load) {
  if (spawnSync('sh', ['-c', 'command -v stress-ng'], { stdio: 'ignore' }).status !== 0) {
    console.error('stress-ng is missing: apt-get install stress-ng (the loaded soak needs it)');
    process.exit(2);
  }
  stress = spawn('stress-ng', ['--cpu', '2', '--timeout', '7200s'], { stdio: 'ignore' });
  console.log(`load: stress-ng --cpu 2 (pid ${stress.pid})`);
}

function runOnce(i) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--test', '--test-reporter=spec', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => {
      writeFileSync(join(logs, `run-${i}.log`), out);
      resolve({ code, out, seconds: Math.round((Date.now() - started) / 1000) });
    });
  });
}

let failed = 0;
const rows = [];
try {
  for (let i = 1; i <= runs; i++) {
    const r = await runOnce(i);
    const m = /polling through the floating forward during the migration: (\{[^}]*\}), downtime (\d+) ms, end to end (\d+) ms/.exec(r.out);
    const gap = /released on the source ([-\d.]+) ms before the target claimed it/.exec(r.out);
    const polled = m ? JSON.parse(m[1]) : undefined;
    const row = {
      run: i,
      result: r.code === 0 ? 'pass' : 'FAIL',
      ok: polled?.ok ?? '?',
      fail: polled?.fail ?? '?',
      slowestMs: polled?.slowestMs ?? '?',
      downtimeMs: m ? Number(m[2]) : '?',
      endToEndMs: m ? Number(m[3]) : '?',
      addressGapMs: gap ? Number(gap[1]) : '?',
      seconds: r.seconds,
    };
    rows.push(row);
    console.log(
      Object.entries(row)
        .map(([k, v]) => `${k}=${v}`)
        .join(' '),
    );
    if (r.code !== 0) {
      failed++;
      console.log(`run ${i} failed: its output is in ${join(logs, `run-${i}.log`)}`);
      break;
    }
  }
} finally {
  stress?.kill('SIGTERM');
}
console.log(`${rows.length - failed} passed, ${failed} failed${load ? ' (under stress-ng --cpu 2)' : ''}; logs in ${logs}`);
process.exit(failed > 0 ? 1 : 0);
