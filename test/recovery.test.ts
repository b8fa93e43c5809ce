import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { join } from 'node:path';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { freePort, guestStatus, httpGet, processAlive, sleep, startTestDaemon, waitForHttp, type TestDaemon } from './helpers.js';

interface InstanceJson {
  state: string;
  stateReason?: string;
  runtime: { pid?: number };
}

/** Collects SSE events from the daemon's event stream. */
function subscribe(socketPath: string): { events: Array<{ action: string; target?: string }>; close: () => void } {
  const events: Array<{ action: string; target?: string }> = [];
  const req = http.request({ socketPath, path: '/1.0/events?type=lifecycle' }, (res) => {
    let buf = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of block.split('\n')) if (line.startsWith('data: ')) events.push(JSON.parse(line.slice(6)));
      }
    });
  });
  req.on('error', () => undefined);
  req.end();
  return { events, close: () => req.destroy() };
}

describe('the daemon can die at any moment', () => {
  let d: TestDaemon;
  let port: number;

  before(async () => {
    d = await startTestDaemon();
    port = await freePort();
    assert.equal(d.cli(['launch', 'appliance', 'vm1', '--forward', `${port}:80`]).code, 0);
    await waitForHttp(`http://127.0.0.1:${port}/`);
  });
  after(async () => {
    await d.stop();
  });

  it('running VMs survive kill -9 of the daemon and are re-attached with the same pid', async () => {
    const pid = d.cliJson<InstanceJson>(['info', 'vm1']).runtime.pid!;
    const before = (await guestStatus(port)).uptime;
    await d.kill9();
    // The VM keeps serving while no daemon runs.
    assert.match((await httpGet(`http://127.0.0.1:${port}/`)).body, /vm1/);
    assert.ok(processAlive(pid));
    const down = d.cli(['list']);
    assert.equal(down.code, 2, 'daemon unreachable has its own exit code');
    assert.match(down.stderr, /VMKIT_DAEMON_UNREACHABLE/);
    await d.restart();
    const info = d.cliJson<InstanceJson>(['info', 'vm1']);
    assert.equal(info.state, 'running');
    assert.equal(info.runtime.pid, pid);
    assert.ok((await guestStatus(port)).uptime > before, 'not rebooted');
    // And it is really attached: QMP works (pause/resume through the new daemon).
    assert.equal(d.cli(['pause', 'vm1']).code, 0);
    assert.equal(d.cli(['resume', 'vm1']).code, 0);
    assert.equal((await guestStatus(port)).hostname, 'vm1');
  });

  it('kill -9 of QEMU puts the instance in error with an event and releases its forward', async () => {
    const sub = subscribe(join(d.dir, 'vmkit.sock'));
    await sleep(200);
    const pid = d.cliJson<InstanceJson>(['info', 'vm1']).runtime.pid!;
    process.kill(pid, 'SIGKILL');
    let info: InstanceJson | undefined;
    for (let i = 0; i < 50; i++) {
      info = d.cliJson<InstanceJson>(['info', 'vm1']);
      if (info.state === 'error') break;
      await sleep(100);
    }
    // spawnSync blocks this process's event loop: let the stream deliver what it received.
    await sleep(500);
    sub.close();
    assert.equal(info?.state, 'error');
    assert.match(info?.stateReason ?? '', /unexpectedly/);
    assert.equal(info?.runtime.pid, undefined);
    assert.ok(
      sub.events.some((e) => e.action === 'instance-crashed' && e.target === 'vm1'),
      JSON.stringify(sub.events),
    );
    await assert.rejects(httpGet(`http://127.0.0.1:${port}/`, 1000));
    // It can be started again, on the same forward.
    assert.equal(d.cli(['start', 'vm1']).code, 0);
    assert.equal((await guestStatus(port)).hostname, 'vm1');
  });

  it('a QEMU that ended while the daemon was down is reported stopped after restart', async () => {
    const pid = d.cliJson<InstanceJson>(['info', 'vm1']).runtime.pid!;
    await d.kill9();
    process.kill(pid, 'SIGKILL');
    await sleep(300);
    await d.restart();
    const info = d.cliJson<InstanceJson>(['info', 'vm1']);
    assert.equal(info.state, 'stopped');
    assert.match(info.stateReason ?? '', /daemon was not running/);
    assert.equal(d.cli(['delete', 'vm1']).code, 0);
  });

  it('a restart removes what an interrupted create or delete left behind', async () => {
    assert.equal(d.cli(['create', 'appliance', 'half']).code, 0);
    const id = d.cliJson<{ id: string }>(['info', 'half']).id;
    await d.kill9();
    // As if the daemon died after cloning a disk but before writing its row …
    mkdirSync(join(d.dir, 'instances', 'deadbeef0001'));
    writeFileSync(join(d.dir, 'instances', 'deadbeef0001', 'root.qcow2'), 'partial');
    // … and in the middle of deleting "half" (row marked, files partly gone).
    const db = new Database(join(d.dir, 'vmkit.db'));
    const row = db.prepare("SELECT value FROM objects WHERE kind = 'instances' AND key = 'half'").get() as { value: string };
    db.prepare("UPDATE objects SET value = ? WHERE kind = 'instances' AND key = 'half'").run(JSON.stringify({ ...JSON.parse(row.value), state: 'deleting' }));
    db.close();
    await d.restart();
    assert.equal(existsSync(join(d.dir, 'instances', 'deadbeef0001')), false, 'orphan folder removed');
    assert.equal(existsSync(join(d.dir, 'instances', id)), false, 'interrupted delete finished');
    assert.deepEqual(d.cliJson<unknown[]>(['list']), []);
  });
});
