#!/usr/bin/env node
// The demo: starts the daemon (if it is not running), launches two instances of the built-in
// appliance with port forwards, waits until each answers HTTP through its forward, and
// prints what to open. Running it again finds them and does not fail.
import { spawn, spawnSync } from 'node:child_process';
import { openSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const bin = join(root, 'bin', 'vmkit.js');
const dir = process.env.VMKIT_DIR || '/var/lib/vmkit';
const env = { ...process.env, VMKIT_DIR: dir };
const DEMO = [
  { name: 'demo1', port: Number(process.env.VMKIT_DEMO_PORT1 ?? 8081) },
  { name: 'demo2', port: Number(process.env.VMKIT_DEMO_PORT2 ?? 8082) },
];

function vmkit(args, { quiet = false } = {}) {
  const r = spawnSync(process.execPath, [bin, ...args], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', quiet ? 'pipe' : 'inherit'] });
  return { code: r.status ?? 1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function socketAnswers(path) {
  return new Promise((res) => {
    const s = net.connect(path, () => {
      s.destroy();
      res(true);
    });
    s.on('error', () => res(false));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function ensureDaemon() {
  const sock = join(dir, 'vmkit.sock');
  if (await socketAnswers(sock)) return false;
  mkdirSync(dir, { recursive: true });
  const logFile = join(dir, 'vmkitd.log');
  const out = openSync(logFile, 'a');
  const child = spawn(process.execPath, [bin, 'daemon', '--dir', dir], { env, detached: true, stdio: ['ignore', out, out] });
  child.unref();
  for (let i = 0; i < 200; i++) {
    if (await socketAnswers(sock)) return true;
    if (child.exitCode !== null) break;
    await sleep(100);
  }
  throw new Error(`the daemon did not start; see ${logFile}`);
}

async function waitForHttp(url, timeoutMs = 90_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1500) });
      if (res.ok) return await res.text();
    } catch {
      /* not yet */
    }
    await sleep(250);
  }
  throw new Error(`${url} did not answer within ${timeoutMs / 1000} s`);
}

const started = await ensureDaemon();
console.log(started ? `Started the vmkit daemon (data folder ${dir}, log ${join(dir, 'vmkitd.log')}).` : `The vmkit daemon already runs (data folder ${dir}).`);
const existing = JSON.parse(vmkit(['list', '--format', 'json']).stdout || '[]');
for (const { name, port } of DEMO) {
  const inst = existing.find((i) => i.name === name);
  let r;
  if (!inst) {
    console.log(`Launching ${name} from the built-in appliance, forwarding 127.0.0.1:${port} -> guest port 80 …`);
    r = vmkit(['launch', 'appliance', name, '--type', 'small', '--forward', `${port}:80`]);
  } else if (inst.state === 'paused') {
    r = vmkit(['resume', name]);
  } else if (inst.state !== 'running') {
    console.log(`Starting ${name} …`);
    r = vmkit(['start', name]);
  } else {
    console.log(`${name} is already running.`);
  }
  if (r && r.code !== 0) process.exit(r.code);
}
const t0 = Date.now();
const pages = await Promise.all(
  DEMO.map(async ({ name }) => {
    const info = JSON.parse(vmkit(['info', name, '--format', 'json']).stdout);
    const f = info.forwards.find((x) => x.guestPort === 80);
    const url = `http://${f.hostAddress}:${f.hostPort}/`;
    const page = await waitForHttp(url);
    const status = JSON.parse(await waitForHttp(`${url}status`));
    return { name, url, page, status };
  }),
);
console.log(`\nBoth guests answer HTTP (waited ${((Date.now() - t0) / 1000).toFixed(1)} s).\n`);
console.log(vmkit(['list']).stdout);
for (const p of pages) {
  console.log(
    `  ${p.url.padEnd(26)} -> ${p.name}: ${p.page.match(/<h1>(.*)<\/h1>/)?.[1] ?? 'page'} (guest ${p.status.ipv4.join(',')}, uptime ${p.status.uptime}s, boot #${p.status.bootCount})`,
  );
  console.log(`  ${(p.url + 'status').padEnd(26)} -> its health document (JSON)`);
}
// The guest agent (qemu-ga in the appliance): a command run inside demo1, no network needed.
let ran;
for (let i = 0; i < 40 && !(ran && ran.code === 0); i++) {
  if (i > 0) await sleep(500);
  ran = vmkit(['exec', 'demo1', '--', 'uname', '-sr'], { quiet: true });
}
console.log(ran.code === 0 ? `\n  vmkit exec demo1 -- uname -sr  ->  ${ran.stdout.trim()}` : `\n  (the guest agent of demo1 did not answer: ${ran.stderr.trim()})`);
console.log(`
Try:
  export VMKIT_DIR=${dir}
  ./bin/vmkit.js list                     # or "vmkit list" after "npm link"
  ./bin/vmkit.js console demo1            # serial console, Ctrl-] detaches
  ./bin/vmkit.js forward add demo1 9090:80
  ./bin/vmkit.js exec demo1 -- cat /proc/cpuinfo   # through the guest agent; file push/pull too
  ./bin/vmkit.js apply -f doc/examples/shop.yaml  # 3 replicas behind one kernel-balanced port (doc/stacks.md)
  ./bin/vmkit.js stop demo1 ; ./bin/vmkit.js start demo1

To stop:
  ./bin/vmkit.js delete demo1 --force ; ./bin/vmkit.js delete demo2 --force
  kill $(cat ${join(dir, 'vmkitd.pid')})        # the daemon (VMs keep running without it)
`);
