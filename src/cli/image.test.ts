import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseDuration, renderFidelity } from './image.js';
import { replicaNames } from './launch.js';
import { buildProgram } from './program.js';
import { progressLine } from './output.js';
import type { Operation } from '../domain/types.js';

describe('image, clone, publish and repo commands', () => {
  it('names replicas NAME-1..N', () => {
    assert.deepEqual(replicaNames('app1', 3), ['app1-1', 'app1-2', 'app1-3']);
  });

  it('prints a fidelity report: mapped, defaulted, dropped with reasons', () => {
    const text = renderFidelity([
      { item: 'vCPUs', value: '2', status: 'mapped' },
      { item: 'nic0', value: 'PCNet32 → e1000', status: 'defaulted', reason: 'no such model' },
      { item: 'Sound Card', status: 'dropped', reason: 'vmkit does not model this device' },
    ]);
    assert.equal(
      text,
      ['Fidelity report:', '  mapped     vCPUs: 2', '  defaulted  nic0: PCNet32 → e1000 (no such model)', '  DROPPED    Sound Card (vmkit does not model this device)'].join('\n'),
    );
  });

  it('parses --older-than durations', () => {
    assert.equal(parseDuration('90s'), 90);
    assert.equal(parseDuration('30m'), 1800);
    assert.equal(parseDuration('12h'), 43200);
    assert.equal(parseDuration('7d'), 604800);
    assert.equal(parseDuration('2w'), 1209600);
    assert.equal(parseDuration('45'), 45);
    assert.throws(() => parseDuration('a week'), /is not a duration/);
  });

  it('has the verbs of the issue, with --disk-format (since --format is the output format)', () => {
    const program = buildProgram();
    const names = program.commands.map((c) => c.name());
    for (const n of ['clone', 'publish', 'repo', 'image']) assert.ok(names.includes(n), n);
    const image = program.commands.find((c) => c.name() === 'image')!;
    assert.deepEqual(image.commands.map((c) => c.name()).sort(), ['build', 'build-cache', 'build-debian', 'delete', 'export', 'import', 'info', 'list', 'pull', 'push', 'set']);
    const imp = image.commands.find((c) => c.name() === 'import')!;
    assert.ok(imp.options.some((o) => o.long === '--disk-format'));
    const launch = program.commands.find((c) => c.name() === 'launch')!;
    assert.ok(launch.options.some((o) => o.long === '--count'));
  });

  it('shows bytes in the progress bar of transfers', () => {
    const op = {
      description: 'Importing /x.vmdk',
      status: 'running',
      progress: { phase: 'converting vmdk to qcow2', percent: 50, bytesDone: 512 * 2 ** 20, bytesTotal: 2 ** 30 },
    } as Operation;
    assert.equal(progressLine(op, 10), 'Importing /x.vmdk [#####-----]  50% converting vmdk to qcow2 (512.0MiB/1.0GiB)');
  });
});
