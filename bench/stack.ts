#!/usr/bin/env node
// Stacks: `vmkit apply` of 3 replicas until all are healthy, against `vmkit launch --count 3`
// plus waiting until each guest answers HTTP — same run, same appliance, same network mode;
// then the failover time after SIGKILL of one replica's QEMU. Not a test: prints times and a ratio.
//
//   node dist-bench/stack.js [--runs N (1)]          (as root; needs a built appliance)
//
// It re-runs itself in a network namespace of its own (unshare --net): the daemon, bridges,
// taps and nftables tables live there and go with it; the machine's network is never touched.
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from './args.js';
import { enterOwnNetns, makeApi } from './lib.js';

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin', 'vmkit.js');

enterOwnNetns();

const { runs: RUNS } = parseArgs('node dist-bench/stack.js [--runs N (1)]', { runs: { flag: '--runs', kind: 'int', min: 1, default: 1 } });
const DIR = mkdtempSync('/tmp/vmkt-bench-stack-');
const env = { ...process.env, VMKIT_DIR: DIR, VMKIT_ACCEL: process.env.VMKIT_ACCEL ?? 'tcg' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 23)}] ${msg}\n`);

function cli(...args: string[]): string {
  const r = spawnSync(process.execPath, [BIN, ...args], { env, encoding: 'utf8', timeout: 600_000 });
  if (r.status !== 0) throw new Error(`vmkit ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
const client = makeApi(join(DIR, 'vmkit.sock'));
const api = async (method: string, path: string, body?: unknown) => (await client.request(method, path, body)).metadata;

/** One GET on a new connection: the hostname that answered, or undefined. */
function getStatus(host: string, port: number, timeoutMs: number, onError?: (err: string) => void): Promise<string | undefined> {
  return new Promise((res) => {
    const req = http.get({ host, port, path: '/status', agent: false, timeout: timeoutMs }, (r) => {
      let body = '';
      r.on('data', (d) => (body += d));
      r.on('end', () => {
        try {
          res(r.statusCode === 200 ? (JSON.parse(body) as { hostname: string }).hostname : undefined);
        } catch {
          res(undefined);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      onError?.(err.code ?? err.message);
      res(undefined);
    });
  });
}

const stackFile = (name: string, subnet: string, port: number) => `name: ${name}
networks:
  - name: ${name}net
    mode: nat
    subnet: ${subnet}
services:
  - name: web
    image: appliance
    type: small
    replicas: 3
    networks: [${name}net]
    port: ${port}
    guestPort: 80
    health: { http: /status, intervalMs: 1000, failures: 3 }
    update: { maxUnavailable: 0, maxSurge: 1 }
`;

async function main(): Promise<void> {
  const daemon = spawnSync('sh', ['-c', `${process.execPath} ${BIN} daemon --dir ${DIR} > ${DIR}.log 2>&1 & echo $!`], { env, encoding: 'utf8' });
  const daemonPid = Number(daemon.stdout.trim());
  for (let i = 0; ; i++) {
    try {
      await api('GET', '/1.0');
      break;
    } catch {
      if (i > 600) throw new Error('the daemon did not start');
      await sleep(50);
    }
  }
  cli('network', 'create', 'benchnet', '--mode', 'nat', '--subnet', '10.91.0.0/24');
  const rows: Array<{ apply: number; launch: number; failoverRules: number; failoverService: number; failed: number }> = [];
  try {
    for (let run = 1; run <= RUNS; run++) {
      const name = `bench${run}`;
      const applyRun = async (): Promise<number> => {
        // 1. apply of 3 replicas until the view says every replica is healthy and serving.
        const t0 = performance.now();
        await api('POST', '/1.0/stacks', { file: stackFile(name, `10.92.${run}.0/24`, 8080 + run) });
        for (;;) {
          const v = await api('GET', `/1.0/stacks/${name}`);
          if (v.ready) break;
          await sleep(50);
        }
        const ms = performance.now() - t0;
        log(`run ${run}: apply → 3 healthy replicas in ${ms.toFixed(0)} ms`);
        return ms;
      };
      const launchRun = async (): Promise<number> => {
        // 2. launch --count 3 on a nat network, then wait until each answers HTTP on port 80.
        const t1 = performance.now();
        cli('launch', 'appliance', `l${run}`, '--count', '3', '--type', 'small', '--nic', 'benchnet');
        const ips: string[] = [];
        for (let i = 1; i <= 3; i++) ips.push((await api('GET', `/1.0/instances/l${run}-${i}`)).nics[0].ipv4);
        await Promise.all(
          ips.map(async (ip) => {
            while (!(await getStatus(ip, 80, 1000))) await sleep(20);
          }),
        );
        const ms = performance.now() - t1;
        log(`run ${run}: launch --count 3 + HTTP in ${ms.toFixed(0)} ms`);
        for (let i = 1; i <= 3; i++) cli('delete', `l${run}-${i}`, '--force');
        return ms;
      };
      // Turn about (the host's load drifts): odd runs apply first, even runs launch first.
      let applyMs: number;
      let launchMs: number;
      if (run % 2 === 1) {
        applyMs = await applyRun();
        launchMs = await launchRun();
      } else {
        launchMs = await launchRun();
        applyMs = await applyRun();
      }

      // 3. failover: SIGKILL one replica's QEMU while a client asks every 10 ms.
      const view = await api('GET', `/1.0/stacks/${name}`);
      const victim = view.services[0].members[1];
      const pid = JSON.parse(cli('info', victim.instance, '--format', 'json')).runtime.pid as number;
      const samples: Array<{ t: number; host?: string; err?: string }> = [];
      let polling = true;
      const poller = (async () => {
        while (polling) {
          const t = performance.now();
          let err: string | undefined;
          void getStatus('127.0.0.1', 8080 + run, 1000, (e) => (err = e)).then((host) => samples.push({ t, host, err }));
          await sleep(10);
        }
      })();
      await sleep(1000);
      const killedAt = performance.now();
      process.kill(pid, 'SIGKILL');
      let rulesMs = NaN;
      for (;;) {
        const nft = spawnSync('nft', ['list', 'table', 'inet', 'vmkit-stacks'], { encoding: 'utf8' }).stdout;
        if (!nft.includes(`${victim.ipv4} `)) {
          rulesMs = performance.now() - killedAt;
          break;
        }
        await sleep(2);
      }
      await sleep(4000);
      polling = false;
      await poller;
      await sleep(1100);
      const afterKill = samples.filter((s) => s.t >= killedAt);
      const bad = afterKill.filter((s) => !s.host || s.host === victim.instance);
      const lastBad = bad.length ? Math.max(...bad.map((s) => s.t)) - killedAt : 0;
      for (const b of bad) log(`  bad request started ${(b.t - killedAt).toFixed(0)} ms after the kill: ${b.host ? `answered by ${b.host}` : (b.err ?? 'no answer')}`);
      log(
        `run ${run}: failover: rules without ${victim.instance} after ${rulesMs.toFixed(1)} ms; last bad answer started ${lastBad.toFixed(0)} ms after the kill (${bad.length} of ${afterKill.length} requests)`,
      );
      rows.push({ apply: applyMs, launch: launchMs, failoverRules: rulesMs, failoverService: lastBad, failed: bad.length });
      await api('DELETE', `/1.0/stacks/${name}`);
    }
  } finally {
    for (const i of JSON.parse(cli('list', '--format', 'json')) as Array<{ name: string }>) spawnSync(process.execPath, [BIN, 'delete', i.name, '--force'], { env });
    // Its dnsmasq would outlive the daemon (by design) and the namespace.
    spawnSync(process.execPath, [BIN, 'network', 'delete', 'benchnet'], { env });
    try {
      process.kill(daemonPid, 'SIGTERM');
    } catch {
      /* gone */
    }
    await sleep(1000);
    rmSync(DIR, { recursive: true, force: true });
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const apply = med(rows.map((r) => r.apply));
  const launch = med(rows.map((r) => r.launch));
  console.log(`stack bench (${env.VMKIT_ACCEL}, ${RUNS} run(s), medians)`);
  console.log(`  apply 3 replicas → all healthy:        ${(apply / 1000).toFixed(1)} s`);
  console.log(`  launch --count 3 + waiting for HTTP:   ${(launch / 1000).toFixed(1)} s`);
  console.log(`  ratio apply / launch:                  ${(apply / launch).toFixed(2)}`);
  console.log(`  failover, SIGKILL → rules without it (nft polled, an upper bound):  ${med(rows.map((r) => r.failoverRules)).toFixed(1)} ms`);
  console.log(`  failover, SIGKILL → only healthy answer: ${med(rows.map((r) => r.failoverService)).toFixed(0)} ms (${rows.map((r) => r.failed).join(', ')} request(s) failed)`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
