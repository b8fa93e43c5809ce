import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ENTER_CGROUPS_SCRIPT, confinementPrefix } from './confine.js';

describe('confinementPrefix (golden)', () => {
  it('enters the cgroups, then setpriv drops uid, gid, groups and every capability', () => {
    assert.deepEqual(confinementPrefix({ uid: 940001, gid: 940001, groups: [], cgroupProcs: ['/cg/memory/vmkit/ab/cgroup.procs', '/cg/cpu/vmkit/ab/cgroup.procs'] }), [
      '/bin/sh',
      '-c',
      ENTER_CGROUPS_SCRIPT,
      'vmkit-enter-cgroup',
      '2',
      '/cg/memory/vmkit/ab/cgroup.procs',
      '/cg/cpu/vmkit/ab/cgroup.procs',
      'setpriv',
      '--reuid=940001',
      '--regid=940001',
      '--clear-groups',
      '--inh-caps=-all',
      '--ambient-caps=-all',
      '--bounding-set=-all',
      '--no-new-privs',
      '--',
    ]);
  });
  it('keeps only the kvm group when asked', () => {
    const p = confinementPrefix({ uid: 940002, gid: 940002, groups: [109], cgroupProcs: ['/cg/vmkit/ab/cgroup.procs'] });
    assert.ok(p.includes('--groups=109') && !p.includes('--clear-groups'));
    assert.equal(p[4], '1');
  });
  it('refuses uid 0 or a missing uid', () => {
    assert.throws(() => confinementPrefix({ uid: 0, gid: 0, groups: [], cgroupProcs: [] }));
    assert.throws(() => confinementPrefix({ uid: Number.NaN, gid: 5, groups: [], cgroupProcs: [] }));
  });
});

describe('the cgroup-entering shell', () => {
  it('writes its own pid to every procs file, then execs: the pid written is the pid of the program that runs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-confine-'));
    try {
      const a = join(dir, 'a.procs');
      const b = join(dir, 'b.procs');
      writeFileSync(a, '');
      writeFileSync(b, '');
      // The program run last prints its own pid: the same as the one in both files.
      const r = spawnSync('/bin/sh', ['-c', ENTER_CGROUPS_SCRIPT, 'x', '2', a, b, '/bin/sh', '-c', 'echo $$'], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(readFileSync(a, 'utf8').trim(), r.stdout.trim());
      assert.equal(readFileSync(b, 'utf8').trim(), r.stdout.trim());
      assert.equal(Number(r.stdout.trim()), r.pid);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
  it('runs nothing when a cgroup cannot be entered (exit 125)', () => {
    const r = spawnSync('/bin/sh', ['-c', ENTER_CGROUPS_SCRIPT, 'x', '1', '/nonexistent/dir/cgroup.procs', '/bin/echo', 'ran'], { encoding: 'utf8' });
    assert.equal(r.status, 125);
    assert.ok(!r.stdout.includes('ran'));
  });
});
