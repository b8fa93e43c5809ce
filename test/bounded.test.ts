import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, statSync, statfsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { freePort, sleep, startTestDaemon, waitForHttp, type TestDaemon, serialSend } from './helpers.js';
import { guestExec } from './netns.js';

/**
 * Bounded resources (issue 12, item 4): a guest flooding its console, a guest filling the
 * disk under the data folder, a damaged row in the store. None of them may take the daemon
 * down or grow without bound.
 */

interface InstanceJson {
  id: string;
  state: string;
  stateReason?: string;
  runtime: { pid?: number; qemuStatus?: string };
}

function size(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** User + system CPU time of a process so far (from /proc/PID/stat, in seconds). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function serialSocket(d: TestDaemon, id: string): string {
  return join(d.dir, 'instances', id, 'run', 'serial.sock');
}

async function waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs: number, stepMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(stepMs);
  }
}

describe('a guest flooding its serial console', () => {
  const CAP = 256 * 1024;
  let d: TestDaemon;
  let log: string;
  let socket: string;

  before(async () => {
    // A 256 KiB cap (the default is 8 MiB) so the flood rotates the log many times even when a
    // busy host slows the guest's serial port down (260 KB/s on an idle host, 20 KB/s under load).
    d = await startTestDaemon({ env: { VMKIT_CONSOLE_LOG_MAX_BYTES: String(CAP) } });
    const port = await freePort();
    assert.equal(d.cli(['launch', 'appliance', 'flood', '--forward', `${port}:80`]).code, 0);
    await waitForHttp(`http://127.0.0.1:${port}/`);
    const id = d.cliJson<InstanceJson>(['info', 'flood']).id;
    log = join(d.dir, 'instances', id, 'console.log');
    socket = serialSocket(d, id);
    assert.equal((await guestExec(socket, 'echo shell-ready')).code, 0);
  });
  after(async () => {
    await d.stop();
  });

  /** Samples both files every 20 ms until `rotationsWanted` rotations: the largest total seen, bytes written, rotations. */
  async function sample(rotationsWanted: number, timeoutMs: number): Promise<{ most: number; written: number; rotations: number; ms: number }> {
    let most = 0;
    let written = 0;
    let rotations = 0;
    let prev = size(log);
    const start = Date.now();
    while (Date.now() < start + timeoutMs && rotations < rotationsWanted) {
      const cur = size(log);
      const old = size(`${log}.1`);
      most = Math.max(most, cur + old);
      written += cur >= prev ? cur - prev : cur;
      if (cur < prev) rotations++;
      prev = cur;
      await sleep(20);
    }
    return { most, written, rotations, ms: Date.now() - start };
  }

  it('never takes console.log + console.log.1 past the cap, also after a daemon restart', async (t) => {
    await serialSend(socket, '(yes > /dev/ttyS0 & p=$!; sleep 240; kill $p) >/dev/null 2>&1 &');
    const cpu0 = cpuSeconds(d.proc.pid!);
    const first = await sample(4, 120_000);
    const cpu = cpuSeconds(d.proc.pid!) - cpu0;
    t.diagnostic(`flood with the daemon up: ${first.written} bytes in ${first.ms} ms, ${first.rotations} rotations, largest total ${first.most} of ${CAP}`);
    t.diagnostic(`the daemon's CPU meanwhile (watching, rotating, answering): ${cpu.toFixed(2)} s in ${(first.ms / 1000).toFixed(1)} s`);
    assert.ok(first.written > CAP, `the guest really flooded (${first.written} bytes)`);
    assert.ok(first.rotations >= 4, 'the log was rotated while the guest ran');
    assert.ok(first.most <= CAP, `both files stayed under the cap: ${first.most} > ${CAP}`);

    // While no daemon runs nothing caps the log; the restarted one takes over at once.
    await d.kill9();
    await d.restart();
    await waitFor('the restarted daemon to bring the log under its cap', () => size(log) + size(`${log}.1`) <= CAP, 5_000, 20);
    const second = await sample(3, 90_000);
    t.diagnostic(`after the restart: ${second.written} bytes in ${second.ms} ms, ${second.rotations} rotations, largest total ${second.most} of ${CAP}`);
    assert.ok(second.rotations >= 3, 'the watch resumed for the running guest');
    assert.ok(second.most <= CAP, `both files stayed under the cap after the restart: ${second.most} > ${CAP}`);

    const tail = d.cli(['logs', 'flood']);
    assert.equal(tail.code, 0);
    assert.ok(Buffer.byteLength(tail.stdout) <= CAP, 'logs shows at most the cap');
    assert.match(tail.stdout.slice(-100), /y\r?\n/);
    assert.equal(d.proc.exitCode, null, 'the daemon runs');
    await serialSend(socket, 'kill %1; pkill yes');
  });
});

describe('a guest filling the disk under the data folder', () => {
  let mountPoint: string;
  let d: TestDaemon;
  let port: number;
  const filler = () => join(mountPoint, 'filler');

  before(async () => {
    // A small tmpfs of our own as the data folder's file system (removed in after()).
    mountPoint = mkdtempSync('/tmp/vmkt-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=200m,mode=0755', 'tmpfs', mountPoint]);
    mkdirSync(join(mountPoint, 'd'));
    d = await startTestDaemon({ dir: join(mountPoint, 'd') });
    port = await freePort();
    assert.equal(d.cli(['launch', 'appliance', 'io1', '--forward', `${port}:80`]).code, 0);
    await waitForHttp(`http://127.0.0.1:${port}/`);
  });
  after(async () => {
    await d?.stop().catch(() => undefined);
    await rm(filler(), { force: true }).catch(() => undefined);
    if (spawnSync('umount', [mountPoint]).status !== 0) spawnSync('umount', ['-l', mountPoint]);
    rmdirSync(mountPoint);
  });

  it('pauses the guest with reason io-error, keeps the daemon up, and resumes once space is back', async (t) => {
    const id = d.cliJson<InstanceJson>(['info', 'io1']).id;
    const socket = serialSocket(d, id);
    assert.equal((await guestExec(socket, 'echo shell-ready')).code, 0);
    // Leave 24 MiB free; the guest then writes 64 MiB (its disk has room, the host has not).
    const fs = statfsSync(mountPoint);
    const free = fs.bavail * fs.bsize;
    execFileSync('fallocate', ['-l', String(free - 24 * 1024 * 1024), filler()]);
    t.diagnostic(`tmpfs: ${Math.round(free / 1048576)} MiB free before the filler, 24 MiB after`);
    await serialSend(socket, 'dd if=/dev/zero of=/data/fill bs=1M count=64 conv=fsync 2>/dev/null; echo dd-done-$?');

    const paused = await waitFor(
      'the guest to be paused on the I/O error',
      () => {
        assert.equal(d.proc.exitCode, null, `the daemon must keep running:\n${d.log().slice(-3000)}`);
        const i = d.cliJson<InstanceJson>(['info', 'io1']);
        return i.state === 'paused' && i.stateReason === 'io-error' ? i : undefined;
      },
      120_000,
      500,
    );
    assert.equal(paused.runtime.qemuStatus, 'io-error');
    assert.match(d.cli(['info', 'io1']).stdout, /paused \(io-error\)/);
    assert.match(d.cli(['list']).stdout, /io1\s+paused \(io-error\)/);
    // (The daemon's output reaches this process between event-loop turns: wait for it.)
    await waitFor('the daemon to log the I/O error', () => /io1: disk I\/O error on root.*no space left/.test(d.log()), 5_000, 100);
    await assert.rejects(waitForHttp(`http://127.0.0.1:${port}/`, 3_000), 'a paused guest does not answer');

    // A daemon restart on the full disk reads QEMU's own run state: still io-error.
    await d.kill9();
    await d.restart();
    const again = d.cliJson<InstanceJson>(['info', 'io1']);
    assert.equal(again.state, 'paused');
    assert.equal(again.stateReason, 'io-error');

    // Space comes back.
    await rm(filler());

    const r = d.cli(['resume', 'io1']);
    assert.equal(r.code, 0, r.stderr);
    await waitForHttp(`http://127.0.0.1:${port}/`, 60_000);
    await waitFor('the guest to finish writing', () => /dd-done-0/.test(d.cli(['logs', 'io1']).stdout), 60_000, 500);
    const after = d.cliJson<InstanceJson>(['info', 'io1']);
    assert.equal(after.state, 'running');
    assert.equal(after.stateReason, undefined);
    assert.equal(d.proc.exitCode, null);
    // What the daemon said while its disk was full (store writes refused and retried, if any).
    for (const line of d
      .log()
      .split('\n')
      .filter((l) => /store refused|is stored now|storage failure|I\/O error|no room|warning/.test(l)))
      t.diagnostic(line);
  });
});

describe('a damaged row in the store', () => {
  let d: TestDaemon;

  before(async () => {
    d = await startTestDaemon();
  });
  after(async () => {
    await d.stop();
  });

  it('is quarantined at start-up: the daemon starts, the others list, doctor names it', async () => {
    for (const n of ['good1', 'torn1', 'bare1']) assert.equal(d.cli(['create', 'appliance', n]).code, 0);
    const ids = Object.fromEntries(['good1', 'torn1', 'bare1'].map((n) => [n, d.cliJson<InstanceJson>(['info', n]).id]));
    assert.equal(d.cli(['snapshot', 'create', 'bare1', 'before']).code, 0);
    await d.kill9();

    // A torn write (JSON cut short) and a row without its NICs, written behind the daemon's back.
    const db = new Database(join(d.dir, 'vmkit.db'));
    db.prepare("UPDATE objects SET value = substr(value, 1, 60) WHERE kind = 'instances' AND key = 'torn1'").run();
    const bare = JSON.parse((db.prepare("SELECT value FROM objects WHERE kind = 'instances' AND key = 'bare1'").get() as { value: string }).value);
    delete bare.nics;
    db.prepare("UPDATE objects SET value = ? WHERE kind = 'instances' AND key = 'bare1'").run(JSON.stringify(bare));
    db.close();

    await d.restart();
    assert.match(d.log(), /store row instances\/torn1 quarantined .*not valid JSON/);
    assert.match(d.log(), /store row instances\/bare1 quarantined .*"nics" is missing/);
    const names = d.cliJson<Array<{ name: string }>>(['list']).map((i) => i.name);
    assert.deepEqual(names, ['good1']);
    const doctor = d.cli(['doctor']);
    assert.equal(doctor.code, 0, 'a quarantined row is a warning, not a failed host check');
    assert.match(doctor.stdout, /store\s+warn\s+2 damaged rows quarantined/);
    assert.match(doctor.stdout, /instances\/torn1 \(not valid JSON/);
    assert.match(doctor.stdout, /instances\/bare1 \("nics" is missing/);
    // Their files are kept: a quarantined row is damaged, not gone.
    for (const n of ['torn1', 'bare1']) assert.ok(existsSync(join(d.dir, 'instances', ids[n]!)), `the folder of ${n} is kept`);
    const ro = new Database(join(d.dir, 'vmkit.db'), { readonly: true });
    const snapRows = ro.prepare("SELECT key FROM objects WHERE kind = 'snapshots'").all() as Array<{ key: string }>;
    const quarantine = ro.prepare('SELECT kind, key, value FROM quarantine ORDER BY id').all() as Array<{ kind: string; key: string; value: string }>;
    ro.close();
    assert.equal(snapRows.length, 1, 'the snapshot rows of a quarantined instance are kept');
    assert.equal(quarantine.find((q) => q.key === 'torn1')?.value.length, 60, 'the damaged text is kept as it was');

    // The daemon works as before, and a second start quarantines nothing twice.
    assert.equal(d.cli(['start', 'good1']).code, 0);
    await d.kill9();
    await d.restart();
    const report = d.cliJson<{ quarantined: Array<{ kind: string; key: string }> }>(['doctor']);
    assert.deepEqual(report.quarantined.map((q) => `${q.kind}/${q.key}`).sort(), ['instances/bare1', 'instances/torn1']);
    assert.equal(d.cliJson<InstanceJson>(['info', 'good1']).state, 'running');
  });
});
