import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Operation, Snapshot } from '../domain/types.js';
import { withDaemon } from './fake-daemon.test-support.js';
import { formatBytes } from './snapshot.js';

const BIN = fileURLToPath(new URL('../../bin/vmkit.js', import.meta.url));

function vmkit(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, VMKIT_REMOTE: '', VMKIT_TOKEN: '' } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 99) : 0, stdout, stderr });
    });
  });
}

const S1: Snapshot = {
  instance: 'web1',
  instanceId: 'abc',
  name: 'before-upgrade',
  description: 'pre apt',
  createdAt: '2026-01-01T00:00:00.000Z',
  withMemory: true,
  vmState: 'running',
  pausedMs: 142,
  size: 98_467_840,
};
const S2: Snapshot = {
  instance: 'web1',
  instanceId: 'abc',
  name: 'disk',
  parent: 'before-upgrade',
  createdAt: '2026-01-01T00:01:00.000Z',
  withMemory: false,
  vmState: null,
  pausedMs: 6,
};

function op(status: Operation['status'], result?: unknown): Operation {
  return { id: 'op1', kind: 'snapshot.create', description: 'x', status, progress: { phase: 'x' }, mayCancel: false, createdAt: 't', updatedAt: 't', result };
}

test('snapshot create posts name, description and memory=false, and prints the paused time', () =>
  withDaemon(async (d) => {
    d.routes.set('POST /1.0/instances/web1/snapshots', { status: 202, json: { type: 'async', status_code: 202, operation: '/1.0/operations/op1', metadata: op('pending') } });
    d.sync('GET /1.0/operations/op1/wait?timeout=1', op('success', { snapshot: S1, durationMs: 410 }));
    const r = await vmkit(['--dir', d.dir, 'snapshot', 'create', 'web1', 'before-upgrade', '--description', 'pre apt']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'Snapshot before-upgrade of web1 created (disk + memory) in 410 ms; guest paused 142 ms.\n');
    assert.deepEqual(d.seen[0]!.body, { name: 'before-upgrade', description: 'pre apt' });

    d.sync('GET /1.0/operations/op1/wait?timeout=1', op('success', { snapshot: S2, durationMs: 20 }));
    const nm = await vmkit(['--dir', d.dir, 'snapshot', 'create', 'web1', 'disk', '--no-memory']);
    assert.equal(nm.stdout, 'Snapshot disk of web1 created (disk only, crash-consistent) in 20 ms; guest paused 6 ms.\n');
    assert.deepEqual(d.seen.find((s) => s.method === 'POST' && (s.body as { name: string }).name === 'disk')!.body, { name: 'disk', memory: false });
  }));

test('snapshot list prints a table, json the exact metadata', () =>
  withDaemon(async (d) => {
    d.sync('GET /1.0/instances/web1/snapshots', [S1, S2]);
    const table = await vmkit(['--dir', d.dir, 'snapshot', 'list', 'web1']);
    assert.equal(table.code, 0, table.stderr);
    assert.equal(
      table.stdout,
      [
        'NAME            PARENT          CREATED                   MEMORY         SIZE      DESCRIPTION',
        'before-upgrade  -               2026-01-01T00:00:00.000Z  yes (running)  93.9 MiB  pre apt',
        'disk            before-upgrade  2026-01-01T00:01:00.000Z  no             -         -',
        '',
      ].join('\n'),
    );
    const json = await vmkit(['--dir', d.dir, '--format', 'json', 'snapshot', 'list', 'web1']);
    assert.deepEqual(JSON.parse(json.stdout), [S1, S2]);
  }));

test('snapshot restore and delete hit their routes; suspend is a state action', () =>
  withDaemon(async (d) => {
    const accepted = { status: 202, json: { type: 'async', status_code: 202, operation: '/1.0/operations/op1', metadata: op('pending') } };
    d.routes.set('POST /1.0/instances/web1/snapshots/before-upgrade/restore', accepted);
    d.routes.set('DELETE /1.0/instances/web1/snapshots/before-upgrade', accepted);
    d.routes.set('PUT /1.0/instances/web1/state', accepted);
    d.sync('GET /1.0/operations/op1/wait?timeout=1', op('success', { instance: { state: 'running' }, snapshot: S1, durationMs: 300 }));
    const r = await vmkit(['--dir', d.dir, 'snapshot', 'restore', 'web1', 'before-upgrade']);
    assert.equal(r.stdout, 'Instance web1 restored to snapshot before-upgrade in 300 ms (now running).\n');
    assert.equal((await vmkit(['--dir', d.dir, 'snapshot', 'delete', 'web1', 'before-upgrade'])).stdout, 'Snapshot before-upgrade of web1 deleted.\n');
    assert.equal((await vmkit(['--dir', d.dir, 'suspend', 'web1'])).code, 0);
    assert.deepEqual(d.seen.at(-2)!.body, { action: 'suspend' });
  }));

test('formatBytes', () => {
  assert.equal(formatBytes(undefined), '-');
  assert.equal(formatBytes(0), '0');
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(98_467_840), '93.9 MiB');
});
