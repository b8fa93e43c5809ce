import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { InstanceView, Operation } from '../domain/types.js';
import { FakeDaemon, withDaemon } from './fake-daemon.test-support.js';

const BIN = fileURLToPath(new URL('../../bin/vmkit.js', import.meta.url));

function vmkit(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, VMKIT_REMOTE: '', VMKIT_TOKEN: '', ...env } }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 99) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const WEB1: InstanceView = {
  id: 'abc',
  name: 'web1',
  image: 'appliance',
  imageVersion: '1',
  type: 'small',
  cpus: 1,
  memoryMiB: 256,
  state: 'running',
  host: 'node1',
  nics: [{ id: 'nic0', model: 'virtio-net', mac: '52:54:00:00:00:01', network: 'user', ipv4: '10.0.2.15' }],
  forwards: [{ proto: 'tcp', hostAddress: '127.0.0.1', hostPort: 8080, guestPort: 80, nic: 'nic0' }],
  disks: [{ name: 'root', file: 'root.qcow2', format: 'qcow2' }],
  createdAt: 't',
  updatedAt: 't',
  runtime: { pid: 1234, accel: 'tcg', qemuStatus: 'running', uptimeSeconds: 75 },
};

function op(status: Operation['status'], extra: Partial<Operation> = {}): Operation {
  return { id: 'op1', kind: 'instance.create', description: 'Creating web1', status, progress: { phase: 'x' }, mayCancel: false, createdAt: 't', updatedAt: 't', ...extra };
}

test('list prints a table, --format json the exact metadata', () =>
  withDaemon(async (d) => {
    d.sync('GET /1.0/instances', [WEB1]);
    const table = await vmkit(['--dir', d.dir, 'list']);
    assert.equal(table.code, 0, table.stderr);
    assert.equal(table.stdout, 'NAME  STATE    IMAGE      CPUS  MEMORY  IPV4       FORWARDS\nweb1  running  appliance  1     256MiB  10.0.2.15  127.0.0.1:8080->80/tcp\n');
    const json = await vmkit(['list', '--format', 'json'], { VMKIT_DIR: d.dir });
    assert.deepEqual(JSON.parse(json.stdout), [WEB1]);
  }));

test('info shows runtime details', () =>
  withDaemon(async (d) => {
    d.sync('GET /1.0/instances/web1', WEB1);
    const r = await vmkit(['--dir', d.dir, 'info', 'web1']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^PID:\s+1234$/m);
    assert.match(r.stdout, /^Accelerator:\s+tcg$/m);
    assert.match(r.stdout, /^Uptime:\s+1m15s$/m);
  }));

test('launch posts the body, waits for the operation and reports success', () =>
  withDaemon(async (d) => {
    d.routes.set('POST /1.0/instances', { status: 202, json: { type: 'async', status_code: 202, operation: '/1.0/operations/op1', metadata: op('pending') } });
    d.sync('GET /1.0/operations/op1/wait?timeout=1', op('success'));
    const r = await vmkit(['--dir', d.dir, 'launch', 'appliance', 'web1', '--cpus', '2', '--memory', '512', '-p', '8080:80', '--forward', '0.0.0.0:5353:53/udp']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'Instance web1 created and started.\n');
    assert.equal(r.stderr, '', 'no progress drawing when stderr is not a TTY');
    assert.deepEqual(d.seen[0].body, {
      name: 'web1',
      image: 'appliance',
      start: true,
      cpus: 2,
      memoryMiB: 512,
      forwards: [
        { hostPort: 8080, guestPort: 80, proto: 'tcp' },
        { hostPort: 5353, guestPort: 53, proto: 'udp', hostAddress: '0.0.0.0' },
      ],
    });
  }));

test('exit codes: 4xx → 1, unreachable → 2, failed operation → 3', () =>
  withDaemon(async (d) => {
    d.routes.set('DELETE /1.0/instances/web1', {
      status: 409,
      json: { type: 'error', status_code: 409, error: { code: 'VMKIT_INSTANCE_RUNNING', message: 'web1 is running.', hint: 'Stop it or use --force.' } },
    });
    const conflict = await vmkit(['--dir', d.dir, 'delete', 'web1']);
    assert.equal(conflict.code, 1);
    assert.equal(conflict.stderr, 'Error: web1 is running.\nHint: Stop it or use --force.\n(code VMKIT_INSTANCE_RUNNING)\n');
    const json = await vmkit(['--dir', d.dir, '--format', 'json', 'delete', 'web1']);
    assert.deepEqual(JSON.parse(json.stderr), { error: { code: 'VMKIT_INSTANCE_RUNNING', message: 'web1 is running.', hint: 'Stop it or use --force.' } });

    d.routes.set('PUT /1.0/instances/web1/state', { status: 202, json: { type: 'async', status_code: 202, operation: '/1.0/operations/op1', metadata: op('running') } });
    d.sync('GET /1.0/operations/op1/wait?timeout=1', op('failure', { error: { code: 'VMKIT_QEMU_FAILED', message: 'QEMU exited.' } }));
    const failed = await vmkit(['--dir', d.dir, 'start', 'web1']);
    assert.equal(failed.code, 3);
    assert.match(failed.stderr, /code VMKIT_QEMU_FAILED/);
    assert.deepEqual(d.seen.at(-2)?.body, { action: 'start' });

    const unreachable = await vmkit(['--dir', `${d.dir}/nowhere`, 'list']);
    assert.equal(unreachable.code, 2);
    assert.match(unreachable.stderr, /VMKIT_DAEMON_UNREACHABLE/);

    const usage = await vmkit(['--dir', d.dir, 'launch', 'appliance', 'web1', '--forward', 'nope']);
    assert.equal(usage.code, 1);
    assert.match(usage.stderr, /VMKIT_INVALID_ARGUMENT/);
  }));

test('a stop that had to force the power-off says so and exits 3', () =>
  withDaemon(async (d) => {
    d.routes.set('PUT /1.0/instances/web1/state', { status: 202, json: { type: 'async', status_code: 202, operation: '/1.0/operations/op1', metadata: op('running') } });
    const stopped = { ...WEB1, state: 'stopped', stateReason: 'forced off after 30 s: the guest did not power off' };
    d.sync('GET /1.0/operations/op1/wait?timeout=1', op('success', { result: stopped }));
    const forced = await vmkit(['--dir', d.dir, 'stop', 'web1']);
    assert.equal(forced.code, 3, forced.stderr);
    assert.match(forced.stdout, /Instance web1 forced off after 30 s: the guest did not power off/);
    d.sync('GET /1.0/operations/op1/wait?timeout=1', op('success', { result: { ...WEB1, state: 'stopped' } }));
    const clean = await vmkit(['--dir', d.dir, 'stop', 'web1']);
    assert.equal(clean.code, 0, clean.stderr);
    assert.equal(clean.stdout, 'Instance web1 stopped.\n');
  }));

test('stop --force --timeout and --no-wait', () =>
  withDaemon(async (d) => {
    d.routes.set('PUT /1.0/instances/web1/state', { status: 202, json: { type: 'async', status_code: 202, operation: '/1.0/operations/op1', metadata: op('pending') } });
    const r = await vmkit(['--dir', d.dir, 'stop', 'web1', '--force', '--timeout', '5', '--no-wait']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Operation op1 started/);
    assert.deepEqual(d.seen[0].body, { action: 'stop', force: true, timeout: 5 });
  }));

test('doctor exits 3 when a required check fails', () =>
  withDaemon(async (d) => {
    d.sync('GET /1.0/doctor', {
      checks: [
        { name: 'qemu', ok: true, detail: '8.2' },
        { name: 'kvm', ok: false, detail: 'no /dev/kvm', hint: 'enable KVM' },
      ],
    });
    const r = await vmkit(['--dir', d.dir, 'doctor']);
    assert.equal(r.code, 3);
    assert.match(r.stdout, /^kvm\s+FAIL\s+no \/dev\/kvm$/m);
    assert.match(r.stdout, /kvm: enable KVM/);
  }));

test('--remote sends the bearer token from VMKIT_TOKEN', async () => {
  const d = new FakeDaemon();
  const url = await d.listen(true);
  try {
    d.sync('GET /1.0/types', [{ name: 'small', cpus: 1, memoryMiB: 256, description: 'Small' }]);
    const r = await vmkit(['--remote', url, 'types'], { VMKIT_TOKEN: 'tok' });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'NAME   CPUS  MEMORY  DESCRIPTION\nsmall  1     256MiB  Small\n');
    assert.equal(d.seen[0].headers.authorization, 'Bearer tok');
  } finally {
    await d.close();
  }
});

test('image build-cache list prints the entries; prune sends what to remove and prints what went', () =>
  withDaemon(async (d) => {
    const key = 'ab'.repeat(32);
    d.sync('GET /1.0/images/build/cache', {
      entries: [{ key, bytes: 3 * 2 ** 20, createdAt: '2026-01-01T00:00:00.000Z', lastUsed: '2026-01-02T03:04:05.678Z', step: 'run: echo hi', image: 'web', inUse: true }],
      bytes: 3 * 2 ** 20,
      limits: { maxBytes: 10 * 2 ** 30, maxEntries: 0 },
    });
    const l = await vmkit(['--dir', d.dir, 'image', 'build-cache', 'list']);
    assert.equal(l.code, 0, l.stderr);
    assert.match(l.stdout, /^KEY\s+IMAGE\s+STEP\s+SIZE\s+LAST USED\s+IN USE$/m);
    assert.match(l.stdout, /^abababababab\s+web\s+run: echo hi\s+3MiB\s+2026-01-02T03:04:05Z\s+yes$/m);
    assert.match(l.stdout, /1 entries, 3MiB; kept after each build: 10\.0GiB/);
    d.sync('POST /1.0/images/build/cache/prune', { removed: [{ key, bytes: 2 ** 20, lastUsed: 't', step: 'run: echo hi' }], freedBytes: 2 ** 20, kept: 0, keptBytes: 0 });
    const p = await vmkit(['--dir', d.dir, 'image', 'build-cache', 'prune', '--older-than', '7d']);
    assert.equal(p.code, 0, p.stderr);
    assert.deepEqual(d.seen.at(-1)!.body, { olderThanSeconds: 604800 });
    assert.match(p.stdout, /^Removed 1 cache entry \(1MiB\); 0 kept/);
    const all = await vmkit(['--dir', d.dir, 'image', 'build-cache', 'prune', '--all']);
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual(d.seen.at(-1)!.body, { all: true });
    const none = await vmkit(['--dir', d.dir, 'image', 'build-cache', 'prune']);
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /--all or --older-than/);
  }));
