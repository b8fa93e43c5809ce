import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CPU_PERIOD_US,
  QEMU_OVERHEAD_MIB,
  TCG_CACHE_ALLOWANCE_MIB,
  createGuestCgroup,
  detectCgroups,
  guestCgroup,
  guestLimits,
  memoryLimitBytes,
  memoryLimitOf,
  parseOomKills,
  parseProcCgroup,
  TCG_TB_SIZE_MIB,
  removeGuestCgroup,
} from './cgroups.js';

const MiB = 1024 * 1024;

function fakeRoot(kind: 'v1' | 'v1-combined' | 'v2' | 'hybrid' | 'none'): string {
  const root = mkdtempSync(join(tmpdir(), 'vmkit-cg-'));
  if (kind === 'v2') {
    writeFileSync(join(root, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids rdma misc\n');
    writeFileSync(join(root, 'cgroup.subtree_control'), 'cpuset\n');
  }
  if (kind === 'v1' || kind === 'v1-combined' || kind === 'hybrid') {
    mkdirSync(join(root, 'memory'));
    writeFileSync(join(root, 'memory', 'memory.limit_in_bytes'), '9223372036854771712\n');
    const cpu = join(root, kind === 'v1-combined' ? 'cpu,cpuacct' : 'cpu');
    mkdirSync(cpu);
    writeFileSync(join(cpu, 'cpu.cfs_quota_us'), '-1\n');
  }
  if (kind === 'hybrid') {
    // systemd's hybrid mode: an empty v2 tree beside the v1 controllers.
    mkdirSync(join(root, 'unified'));
    writeFileSync(join(root, 'unified', 'cgroup.controllers'), '\n');
  }
  return root;
}

describe('detectCgroups', () => {
  it('finds v2 (Debian 12), v1 (this CI host), v1 with cpu,cpuacct, and treats hybrid as v1', async () => {
    const roots = { v2: fakeRoot('v2'), v1: fakeRoot('v1'), comb: fakeRoot('v1-combined'), hybrid: fakeRoot('hybrid'), none: fakeRoot('none') };
    try {
      assert.deepEqual(detectCgroups(roots.v2), { version: 2, root: roots.v2 });
      assert.deepEqual(detectCgroups(roots.v1), { version: 1, memory: join(roots.v1, 'memory'), cpu: join(roots.v1, 'cpu') });
      assert.deepEqual(detectCgroups(roots.comb), { version: 1, memory: join(roots.comb, 'memory'), cpu: join(roots.comb, 'cpu,cpuacct') });
      assert.equal(detectCgroups(roots.hybrid)?.version, 1);
      assert.equal(detectCgroups(roots.none), undefined);
    } finally {
      for (const r of Object.values(roots)) await rm(r, { recursive: true, force: true });
    }
  });
});

describe('a guest cgroup on a fake v2 root', () => {
  it('enables memory and cpu for the children, writes memory.max and cpu.max, and is removed', async () => {
    const root = fakeRoot('v2');
    try {
      const layout = detectCgroups(root)!;
      const g = await createGuestCgroup(layout, '0123456789ab', { memoryBytes: 512 * MiB, cpuQuotaUs: 200_000, cpuPeriodUs: 100_000 });
      assert.equal(g.path, '/vmkit/0123456789ab');
      assert.deepEqual(g.procs, [join(root, 'vmkit', '0123456789ab', 'cgroup.procs')]);
      assert.equal(readFileSync(join(root, 'cgroup.subtree_control'), 'utf8'), '+memory +cpu');
      assert.equal(readFileSync(join(root, 'vmkit', 'cgroup.subtree_control'), 'utf8'), '+memory +cpu');
      assert.equal(readFileSync(join(root, 'vmkit', '0123456789ab', 'memory.max'), 'utf8'), String(512 * MiB));
      assert.equal(readFileSync(join(root, 'vmkit', '0123456789ab', 'cpu.max'), 'utf8'), '200000 100000');
      assert.equal(readFileSync(join(root, 'vmkit', '0123456789ab', 'cpu.weight'), 'utf8'), '200', 'weighs as its two threads would');
      assert.equal(readFileSync(join(root, 'vmkit', 'cpu.weight'), 'utf8'), '200', 'the parent weighs what its children do');
      assert.equal(await memoryLimitOf(layout, '0123456789ab'), 512 * MiB);
      await removeGuestCgroup(layout, '0123456789ab');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
  it('does not write a controller that is already enabled', async () => {
    const root = fakeRoot('v2');
    try {
      writeFileSync(join(root, 'cgroup.subtree_control'), 'cpu memory pids\n');
      await createGuestCgroup(detectCgroups(root)!, 'ab', { memoryBytes: MiB, cpuQuotaUs: 1, cpuPeriodUs: 1 });
      assert.equal(readFileSync(join(root, 'cgroup.subtree_control'), 'utf8'), 'cpu memory pids\n');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('a guest cgroup on a fake v1 root', () => {
  it('makes memory/vmkit/<id> and cpu/vmkit/<id> with memory.limit_in_bytes and the CFS quota', async () => {
    const root = fakeRoot('v1');
    try {
      const layout = detectCgroups(root)!;
      const g = await createGuestCgroup(layout, 'abcdef', { memoryBytes: 300 * MiB, cpuQuotaUs: 100_000, cpuPeriodUs: 100_000 });
      assert.deepEqual(g.dirs, [join(root, 'memory', 'vmkit', 'abcdef'), join(root, 'cpu', 'vmkit', 'abcdef')]);
      assert.deepEqual(g.procs, [join(root, 'memory', 'vmkit', 'abcdef', 'cgroup.procs'), join(root, 'cpu', 'vmkit', 'abcdef', 'cgroup.procs')]);
      assert.equal(readFileSync(join(g.dirs[0]!, 'memory.limit_in_bytes'), 'utf8'), String(300 * MiB));
      assert.equal(readFileSync(join(g.dirs[1]!, 'cpu.cfs_quota_us'), 'utf8'), '100000');
      assert.equal(readFileSync(join(g.dirs[1]!, 'cpu.cfs_period_us'), 'utf8'), '100000');
      assert.equal(readFileSync(join(g.dirs[1]!, 'cpu.shares'), 'utf8'), '1024');
      assert.equal(readFileSync(join(root, 'cpu', 'vmkit', 'cpu.shares'), 'utf8'), '1024');
      assert.equal(await memoryLimitOf(layout, 'abcdef'), 300 * MiB);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
  it('removing a group that is gone is not an error', async () => {
    const root = fakeRoot('v1');
    try {
      await removeGuestCgroup(detectCgroups(root)!, 'feed');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
  it('refuses an id that is not an instance id (no path tricks)', () => {
    assert.throws(() => guestCgroup({ version: 2, root: '/x' }, '../../etc'), /not an instance id/);
  });
});

describe('/proc/PID/cgroup', () => {
  it('gives the memory controller path on v1 and the unified one on v2', () => {
    const v1 = '9:name=systemd:/\n4:memory:/vmkit/abc\n1:cpu:/vmkit/abc\n0::/\n';
    assert.equal(parseProcCgroup(v1, 1), '/vmkit/abc');
    assert.equal(parseProcCgroup('0::/vmkit/def\n', 2), '/vmkit/def');
    assert.equal(parseProcCgroup('2:cpu,cpuacct:/\n', 1), undefined);
  });
});

describe('guest limits', () => {
  it('is guest RAM + QEMU overhead (+ the bounded TCG cache) and (vCPUs + 1) × period', () => {
    assert.equal(memoryLimitBytes(256, 'tcg', {}), (256 + QEMU_OVERHEAD_MIB + TCG_CACHE_ALLOWANCE_MIB) * MiB);
    assert.equal(memoryLimitBytes(1024, 'kvm', {}), (1024 + QEMU_OVERHEAD_MIB) * MiB);
    assert.deepEqual(guestLimits({ cpus: 2, memoryMiB: 512 }, 'kvm', {}), {
      memoryBytes: (512 + QEMU_OVERHEAD_MIB) * MiB,
      cpuQuotaUs: 3 * CPU_PERIOD_US,
      cpuPeriodUs: CPU_PERIOD_US,
    });
  });
  it('takes the test-only override', () => {
    assert.equal(memoryLimitBytes(256, 'tcg', { VMKIT_TEST_MEMORY_LIMIT_MIB: '100' }), 100 * MiB);
  });
});

describe('OOM kills of a group', () => {
  it('reads oom_kill from memory.events (v2) and memory.oom_control (v1); absent on old kernels', () => {
    assert.equal(parseOomKills('low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n'), 1);
    assert.equal(parseOomKills('oom_kill_disable 0\nunder_oom 0\noom_kill 3\n'), 3);
    assert.equal(parseOomKills('oom_kill_disable 0\nunder_oom 0\n'), undefined);
    assert.equal(parseOomKills(''), undefined);
  });
});

describe('the TCG allowance', () => {
  it('holds the bounded translation cache QEMU is given (-accel tcg,tb-size=) and room for its index', () => {
    assert.ok(TCG_CACHE_ALLOWANCE_MIB >= TCG_TB_SIZE_MIB + 32);
  });
});
