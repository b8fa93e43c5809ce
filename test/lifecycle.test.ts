import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, guestStatus, httpGet, processAlive, qemuPidsUnder, sleep, startTestDaemon, waitForHttp, type TestDaemon } from './helpers.js';

interface InstanceJson {
  id: string;
  name: string;
  state: string;
  cpus: number;
  memoryMiB: number;
  image: string;
  nics: Array<{ mac: string; model: string; network: string }>;
  forwards: Array<{ hostPort: number; guestPort: number; proto: string; hostAddress: string }>;
  runtime: { pid?: number; accel?: string; uptimeSeconds?: number };
}

describe('instance lifecycle against a real daemon and QEMU', () => {
  let d: TestDaemon;
  let port: number;

  before(async () => {
    d = await startTestDaemon();
    port = await freePort();
  });
  after(async () => {
    await d.stop();
  });

  it('lists the built-in appliance', () => {
    const images = d.cliJson<Array<{ name: string; boot?: unknown }>>(['image', 'list']);
    assert.ok(
      images.some((i) => i.name === 'appliance'),
      JSON.stringify(images),
    );
  });

  it('launches an instance that serves its hostname through a user-mode forward', async () => {
    const r = d.cli(['launch', 'appliance', 'web1', '--type', 'small', '--forward', `${port}:80`]);
    assert.equal(r.code, 0, r.stderr);
    const info = d.cliJson<InstanceJson>(['info', 'web1']);
    assert.equal(info.state, 'running');
    assert.equal(info.cpus, 1);
    assert.equal(info.memoryMiB, 256);
    assert.equal(info.runtime.accel, 'tcg');
    assert.ok(info.runtime.pid && processAlive(info.runtime.pid), 'a real QEMU process runs');
    const cmdline = readFileSync(`/proc/${info.runtime.pid}/cmdline`, 'utf8').split('\0');
    assert.ok(cmdline[0]!.endsWith('qemu-system-x86_64'));
    assert.ok(cmdline.includes('-nodefaults') && cmdline.includes('-sandbox'));
    assert.match(info.nics[0]!.mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
    const page = await waitForHttp(`http://127.0.0.1:${port}/`);
    assert.match(page, /web1/);
    const status = await guestStatus(port);
    assert.equal(status.hostname, 'web1');
    assert.deepEqual(status.ipv4, ['10.0.2.15']);
    assert.equal(status.nics[0]!.mac, info.nics[0]!.mac);
    assert.equal(status.bootCount, 1);
  });

  it('shows the instance in list with its forward, in table and json', () => {
    const list = d.cliJson<InstanceJson[]>(['list']);
    const web1 = list.find((i) => i.name === 'web1');
    assert.ok(web1);
    assert.equal(web1.forwards[0]!.hostPort, port);
    const table = d.cli(['list']);
    assert.equal(table.code, 0);
    assert.match(table.stdout, /NAME\s+STATE\s+IMAGE\s+CPUS\s+MEMORY\s+IPV4\s+FORWARDS/);
    assert.match(table.stdout, new RegExp(`web1\\s+running\\s+appliance`));
    const yaml = d.cli(['list', '--format', 'yaml']);
    assert.match(yaml.stdout, /name: web1/);
  });

  it('pauses (guest clock stops) and resumes (it continues)', async () => {
    const t0 = Date.now();
    const before = (await guestStatus(port)).uptime;
    assert.equal(d.cli(['pause', 'web1']).code, 0);
    const pausedAt = Date.now();
    assert.equal(d.cliJson<InstanceJson>(['info', 'web1']).state, 'paused');
    // A paused guest does not answer.
    await assert.rejects(httpGet(`http://127.0.0.1:${port}/status`, 1500));
    await sleep(2000);
    const resumingAt = Date.now();
    assert.equal(d.cli(['resume', 'web1']).code, 0);
    assert.equal(d.cliJson<InstanceJson>(['info', 'web1']).state, 'running');
    const afterUptime = (await guestStatus(port)).uptime;
    // The guest was surely paused from the pause's return to the resume's start (≥ 3.5 s): its
    // clock may count the rest of the wall time (CLI start-ups on a busy host), never that.
    const runnableS = (Date.now() - t0 - (resumingAt - pausedAt)) / 1000;
    assert.ok(afterUptime > before, `uptime continues (${before} -> ${afterUptime})`);
    assert.ok(afterUptime - before <= runnableS + 0.5, `uptime did not advance while paused (${before} -> ${afterUptime}; at most ${runnableS.toFixed(2)} s were not paused)`);
  });

  it('adds, lists and removes a forward while the VM runs', async () => {
    const extra = await freePort();
    assert.equal(d.cli(['forward', 'add', 'web1', `${extra}:80`]).code, 0);
    assert.match(await waitForHttp(`http://127.0.0.1:${extra}/`, 10_000), /web1/);
    const list = d.cliJson<Array<{ hostPort: number }>>(['forward', 'list', 'web1']);
    assert.deepEqual(list.map((f) => f.hostPort).sort(), [port, extra].sort());
    assert.equal(d.cli(['forward', 'remove', 'web1', String(extra)]).code, 0);
    await assert.rejects(httpGet(`http://127.0.0.1:${extra}/`, 1500));
    assert.deepEqual(
      d.cliJson<Array<{ hostPort: number }>>(['forward', 'list', 'web1']).map((f) => f.hostPort),
      [port],
    );
  });

  it('shows the serial console output and takes commands on the console', () => {
    const logs = d.cli(['logs', 'web1']);
    assert.equal(logs.code, 0);
    assert.match(logs.stdout, /vmkit-appliance: userspace/);
    assert.match(logs.stdout, /vmkit-appliance: ready hostname=web1/);
    const c = d.cli(['console', 'web1'], { input: 'echo console-$((6*7))\n', timeoutMs: 30_000 });
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /console-42/);
  });

  it('stops gracefully (guest agent, else ACPI), starts and restarts (boot count on disk grows)', async () => {
    const pid = d.cliJson<InstanceJson>(['info', 'web1']).runtime.pid!;
    const t0 = Date.now();
    const stop = d.cli(['stop', 'web1', '--timeout', '30']);
    assert.equal(stop.code, 0, stop.stderr);
    assert.ok(Date.now() - t0 < 20_000);
    const stopped = d.cliJson<InstanceJson & { stateReason?: string }>(['info', 'web1']);
    assert.equal(stopped.state, 'stopped');
    assert.equal(stopped.stateReason, undefined, 'not forced: the guest powered off');
    assert.equal(processAlive(pid), false);
    // guest-shutdown through the appliance's qemu-ga first; the ACPI button when no agent answered yet.
    assert.match(d.cli(['logs', 'web1']).stdout, /vmkit-appliance: (guest agent asked to poweroff|power button)/, 'the guest shut itself down');

    assert.equal(d.cli(['start', 'web1']).code, 0);
    assert.equal((await guestStatus(port)).bootCount, 2);
    const pid2 = d.cliJson<InstanceJson>(['info', 'web1']).runtime.pid!;
    assert.equal(d.cli(['restart', 'web1']).code, 0);
    const pid3 = d.cliJson<InstanceJson>(['info', 'web1']).runtime.pid!;
    assert.notEqual(pid2, pid3);
    assert.equal((await guestStatus(port)).bootCount, 3);
  });

  it('creates a stopped instance with explicit vCPUs and memory', () => {
    const r = d.cli(['create', 'appliance', 'web2', '--cpus', '2', '--memory', '512']);
    assert.equal(r.code, 0, r.stderr);
    const info = d.cliJson<InstanceJson>(['info', 'web2']);
    assert.equal(info.state, 'stopped');
    assert.equal(info.cpus, 2);
    assert.equal(info.memoryMiB, 512);
    assert.equal(info.runtime.pid, undefined);
    // The disk is a linked clone: a small qcow2 overlay backed by the image.
    const disk = join(d.dir, 'instances', info.id, 'root.qcow2');
    assert.ok(existsSync(disk));
    assert.equal(d.cli(['delete', 'web2']).code, 0);
    assert.equal(existsSync(join(d.dir, 'instances', info.id)), false);
  });

  it('refuses to delete a running instance unless forced, then removes everything', async () => {
    const info = d.cliJson<InstanceJson>(['info', 'web1']);
    const refused = d.cli(['delete', 'web1']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /VMKIT_INSTANCE_RUNNING/);
    assert.ok(processAlive(info.runtime.pid!));
    const forced = d.cli(['delete', 'web1', '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(processAlive(info.runtime.pid!), false);
    assert.equal(existsSync(join(d.dir, 'instances', info.id)), false);
    assert.deepEqual(qemuPidsUnder(d.dir), []);
    assert.equal(d.cliJson<unknown[]>(['list']).length, 0);
    // The forward's port is free again.
    await assert.rejects(httpGet(`http://127.0.0.1:${port}/`, 1000));
  });

  it('lists instance types and runs the host doctor', () => {
    const types = d.cliJson<Array<{ name: string; cpus: number; memoryMiB: number }>>(['types']);
    assert.deepEqual(types.map((t) => t.name).slice(0, 4), ['tiny', 'small', 'medium', 'large']);
    const doctor = d.cli(['doctor', '--format', 'json']);
    assert.equal(doctor.code, 0, doctor.stderr);
    const report = JSON.parse(doctor.stdout) as { ok: boolean; checks: Array<{ name: string; ok: boolean }> };
    assert.equal(report.ok, true);
    assert.ok(report.checks.find((c) => c.name === 'qemu')?.ok);
  });
});
