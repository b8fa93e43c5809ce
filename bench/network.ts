#!/usr/bin/env node
// Network throughput: QEMU user-mode NAT (slirp) vs a tap on a vmkit nat network, and a
// port forward through user-mode hostfwd vs nftables DNAT. Not a test: prints MB/s and ratios.
//
//   node dist-bench/network.js [--mib 64]          (as root; needs a built appliance)
//
// Everything runs in a network namespace the script creates and removes (vmkt-bench-…):
// the daemon, the bridge, the taps and the rules live there; the machine's own network is
// never touched. One guest with two NICs: nic0 on "user", nic1 on the nat network "lan".
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseArgs } from './args.js';
import { makeApi } from './lib.js';

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin', 'vmkit.js');
const { mib: MIB } = parseArgs('node dist-bench/network.js [--mib N (64)]', { mib: { flag: '--mib', kind: 'int', min: 1, default: 64 } });
const NS = `vmkt-bench-${randomBytes(3).toString('hex')}`;
const DIR = mkdtempSync('/tmp/vmkt-bench-');
const env = { ...process.env, VMKIT_DIR: DIR, VMKIT_ACCEL: process.env.VMKIT_ACCEL ?? 'tcg' };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function cli(...args) {
  const r = spawnSync(process.execPath, [BIN, ...args], { env, encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`vmkit ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
// vmkit's API client (src/client) over the daemon's socket (a file: reachable from outside the namespace).
const client = makeApi(join(DIR, 'vmkit.sock'));
const api = (method: string, path: string, body?: unknown) => client.request(method, path, body);
function inNs(argv, opts = {}) {
  return spawnSync('ip', ['netns', 'exec', NS, ...argv], { encoding: 'utf8', ...opts });
}
/** A command on the guest's serial console; resolves with its output. */
function guest(sock, command, timeoutMs = 300_000) {
  const mark = `__B${Math.random().toString(36).slice(2, 8)}__`;
  return new Promise((res, rej) => {
    const s = net.connect(sock);
    let buf = '';
    const t = setTimeout(() => (s.destroy(), rej(new Error(`timeout: ${command}`))), timeoutMs);
    s.on('data', (d) => {
      buf += d;
      const m = new RegExp(`${mark}(\\d+)`).exec(buf);
      if (m) {
        clearTimeout(t);
        s.destroy();
        res(buf.slice(buf.indexOf(`${mark}$?`) + mark.length + 3, m.index));
      }
    });
    s.on('connect', () => s.write(`\n${command}; echo ${mark}$?\n`));
    s.on('error', rej);
  });
}

/** Host → guest: curl in the namespace downloads the guest's file; MB/s from curl's own timing. */
function download(url) {
  const r = inNs(['curl', '-s', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', '-m', '600', url]);
  const [size, secs] = r.stdout.trim().split(' ').map(Number);
  if (!size || size < MIB * 1024 * 1024) throw new Error(`download of ${url} failed: ${r.stdout} ${r.stderr}`);
  return size / 1024 / 1024 / secs;
}

async function main() {
  execFileSync('ip', ['netns', 'add', NS]);
  execFileSync('ip', ['netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up']);
  const daemon = spawn('ip', ['netns', 'exec', NS, process.execPath, BIN, 'daemon', '--dir', DIR], { env, stdio: 'ignore' });
  let sink;
  try {
    for (let i = 0; i < 100 && !spawnSync('test', ['-S', join(DIR, 'vmkit.sock')]).status === false; i++) await sleep(100);
    await sleep(1500);
    cli('network', 'create', 'lan', '--mode', 'nat', '--subnet', '10.80.0.0/24');
    cli('launch', 'appliance', 'bench', '--memory', '256', '--nic', 'user', '--nic', 'lan', '--forward', '127.0.0.1:18001:8000');
    const info = JSON.parse(cli('info', 'bench', '--format', 'json'));
    const tapIp = info.nics[1].ipv4;
    const fwd = await api('POST', '/1.0/instances/bench/forwards', { hostPort: 18002, guestPort: 8000, nic: 'nic1' });
    if (fwd.type === 'error') throw new Error(JSON.stringify(fwd));
    const sock = join(DIR, 'instances', info.id, 'run', 'serial.sock');
    for (let i = 0; i < 240; i++) {
      if (/vmkit-appliance: ready/.test(cli('logs', 'bench'))) break;
      await sleep(500);
    }
    await guest(sock, `mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/big bs=1M count=${MIB} 2>/dev/null && httpd -p 8000 -h /tmp/www`);
    await sleep(500);

    // A sink in the daemon's namespace for guest → host (counts bytes, times them).
    const results: Record<string, number> = {};
    const runs = {
      'host→guest user-mode hostfwd (127.0.0.1:18001)': () => download('http://127.0.0.1:18001/big'),
      'host→guest nftables DNAT forward (127.0.0.1:18002)': () => download('http://127.0.0.1:18002/big'),
      [`host→guest tap direct (${tapIp}:8000)`]: () => download(`http://${tapIp}:8000/big`),
    };
    for (const [k, f] of Object.entries(runs)) results[k] = f();

    // guest → host: the guest downloads MIB from a server in the daemon's namespace.
    sink = spawn(
      'ip',
      [
        'netns',
        'exec',
        NS,
        process.execPath,
        '-e',
        `
      const http = require('node:http'); const buf = Buffer.alloc(1 << 20);
      http.createServer((q, r) => { r.writeHead(200, {'content-length': ${MIB} * buf.length});
        let n = 0; const t0 = Date.now();
        const w = () => { while (n < ${MIB}) { n++; if (!r.write(buf)) return r.once('drain', w); } r.end(); };
        r.on('finish', () => console.log(((${MIB}) / ((Date.now() - t0) / 1000)).toFixed(1))); w(); }).listen(19000, '0.0.0.0');`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await sleep(800);
    const lines = [];
    sink.stdout.on('data', (d) => lines.push(...String(d).trim().split('\n')));
    const guestGet = async (url) => {
      const before = lines.length;
      await guest(sock, `wget -q -O /dev/null ${url}`);
      for (let i = 0; i < 50 && lines.length === before; i++) await sleep(100);
      return Number(lines[lines.length - 1]);
    };
    results['guest→host user-mode (10.0.2.2:19000)'] = await guestGet('http://10.0.2.2:19000/');
    results['guest→host tap (10.80.0.1:19000)'] = await guestGet('http://10.80.0.1:19000/');

    console.log(`# ${MIB} MiB per transfer, accel ${env.VMKIT_ACCEL}, ${new Date().toISOString()}`);
    for (const [k, v] of Object.entries(results)) console.log(`${k.padEnd(55)} ${v.toFixed(1).padStart(8)} MB/s`);
    const v = Object.values(results);
    console.log(`ratio host→guest tap / user-mode:        ${(v[2] / v[0]).toFixed(2)}x`);
    console.log(`ratio forward DNAT / user-mode hostfwd:  ${(v[1] / v[0]).toFixed(2)}x`);
    console.log(`ratio guest→host tap / user-mode:        ${(v[4] / v[3]).toFixed(2)}x`);
  } finally {
    sink?.kill('SIGKILL');
    spawnSync(process.execPath, [BIN, 'delete', 'bench', '--force'], { env, timeout: 60_000 });
    daemon.kill('SIGTERM');
    await sleep(500);
    for (const pid of (spawnSync('ip', ['netns', 'pids', NS], { encoding: 'utf8' }).stdout || '').split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await sleep(300);
    spawnSync('ip', ['netns', 'del', NS]);
    rmSync(DIR, { recursive: true, force: true });
  }
}
main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
