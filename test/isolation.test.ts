import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, processAlive, sleep, startTestDaemon, waitForHttp, type TestDaemon } from './helpers.js';
import { GUEST_UID_BASE, isGuestUid } from '../dist/host/guest-uids.js';
import { QEMU_OVERHEAD_MIB, TCG_CACHE_ALLOWANCE_MIB, TCG_TB_SIZE_MIB, detectCgroups, guestCgroup } from '../dist/host/cgroups.js';

/**
 * Least privilege for QEMU (issue 12, item 2), against a real daemon and real QEMU: each
 * guest's process runs under a uid of its own with no capabilities, seccomp on, in a cgroup
 * of its own whose memory limit is set (and bites), its files are its uid's, and a daemon
 * restart keeps all that. Runs in a network namespace (the NIC test makes a bridge and taps).
 */
interface InstanceJson {
  id: string;
  name: string;
  state: string;
  stateReason?: string;
  uid?: number;
  nics: Array<{ id: string; network: string }>;
  runtime: { pid?: number; uid?: number; cgroup?: string };
}

function status(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** Runs a command as a guest uid (as an escaped QEMU would be): no groups, no capabilities. */
function asUid(uid: number, argv: string[]): { code: number; stderr: string } {
  const r = spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--', ...argv], { encoding: 'utf8' });
  return { code: r.status ?? -1, stderr: r.stderr };
}

const layout = detectCgroups();

describe('every QEMU runs unprivileged in a cgroup of its own', { timeout: 600_000 }, () => {
  let d: TestDaemon;
  const ports: number[] = [];

  before(async () => {
    assert.ok(layout, 'this host has the memory and cpu cgroup controllers');
    d = await startTestDaemon();
    ports.push(await freePort(), await freePort());
  });
  after(async () => {
    await d?.stop();
  });

  it('two guests: different guest uids, CapEff 0, seccomp 2, no_new_privs, each in /vmkit/<id> with its memory limit', async () => {
    for (const [i, name] of ['iso1', 'iso2'].entries()) {
      const r = d.cli(['launch', 'appliance', name, '--forward', `${ports[i]}:80`]);
      assert.equal(r.code, 0, r.stderr);
    }
    const infos = ['iso1', 'iso2'].map((n) => d.cliJson<InstanceJson>(['info', n]));
    const uids = new Set<number>();
    for (const info of infos) {
      const pid = info.runtime.pid!;
      assert.ok(pid && processAlive(pid));
      const st = status(pid);
      const uid = Number(st.Uid!.split(/\s+/)[0]);
      assert.ok(isGuestUid(uid), `QEMU runs as guest uid ${uid}, not root (${st.Uid})`);
      assert.equal(st.Uid, [uid, uid, uid, uid].join('\t'), 'real, effective, saved and fs uid are all the guest uid');
      assert.equal(st.Gid, [uid, uid, uid, uid].join('\t'));
      assert.equal(st.Groups!.trim(), '', 'no supplementary groups under TCG');
      assert.equal(st.CapEff, '0000000000000000');
      assert.equal(st.CapPrm, '0000000000000000');
      assert.equal(st.CapBnd, '0000000000000000');
      assert.equal(st.Seccomp, '2', 'seccomp filter mode (-sandbox on)');
      assert.equal(st.NoNewPrivs, '1');
      assert.equal(info.uid, uid, 'the uid is recorded with the instance');
      assert.equal(info.runtime.uid, uid);
      uids.add(uid);

      // The translation cache the limit allows for is the one QEMU is given (bounded, not 1 GiB).
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      assert.equal(argv[argv.indexOf('-accel') + 1], `tcg,tb-size=${TCG_TB_SIZE_MIB}`);
      const g = guestCgroup(layout!, info.id);
      assert.equal(info.runtime.cgroup, `/vmkit/${info.id}`);
      const procCgroup = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      if (layout!.version === 1) {
        assert.match(procCgroup, new RegExp(`^\\d+:memory:/vmkit/${info.id}$`, 'm'));
        assert.match(procCgroup, new RegExp(`^\\d+:cpu(,cpuacct)?:/vmkit/${info.id}$`, 'm'));
        const limit = Number(readFileSync(join(g.dirs[0]!, 'memory.limit_in_bytes'), 'utf8'));
        assert.equal(limit, (256 + QEMU_OVERHEAD_MIB + TCG_CACHE_ALLOWANCE_MIB) * 1024 * 1024);
        assert.equal(readFileSync(join(g.dirs[1]!, 'cpu.cfs_quota_us'), 'utf8').trim(), '200000', '1 vCPU + 1 for QEMU itself');
        assert.ok(readFileSync(join(g.dirs[0]!, 'cgroup.procs'), 'utf8').split('\n').includes(String(pid)));
      } else {
        assert.match(procCgroup, new RegExp(`^0::/vmkit/${info.id}$`, 'm'));
        assert.equal(Number(readFileSync(join(g.dirs[0]!, 'memory.max'), 'utf8')), (256 + QEMU_OVERHEAD_MIB + TCG_CACHE_ALLOWANCE_MIB) * 1024 * 1024);
      }
      const text = d.cli(['info', info.name]).stdout;
      assert.match(text, new RegExp(`UID:\\s+${uid}`));
      assert.match(text, new RegExp(`Cgroup:\\s+/vmkit/${info.id}`));
    }
    assert.equal(uids.size, 2, 'two guests, two uids');
    for (const p of ports) assert.match(await waitForHttp(`http://127.0.0.1:${p}/`, 120_000), /iso/);
  });

  it("a guest's files are its uid's; another guest's uid cannot read them, nor the database", () => {
    const [a, b] = ['iso1', 'iso2'].map((n) => d.cliJson<InstanceJson>(['info', n]));
    const dirA = join(d.dir, 'instances', a!.id);
    const dirB = join(d.dir, 'instances', b!.id);
    assert.equal(statSync(dirA).uid, 0);
    assert.equal(statSync(dirA).mode & 0o777, 0o711);
    for (const f of ['root.qcow2', 'console.log', 'cidata.img', 'run']) assert.equal(statSync(join(dirA, f)).uid, a!.uid, f);
    assert.equal(statSync(join(dirA, 'root.qcow2')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dirA, 'run', 'qmp.sock')).uid, a!.uid, 'QEMU made its sockets as its uid');
    assert.equal(statSync(join(d.dir, 'vmkit.db')).mode & 0o777, 0o600);
    // As guest A's uid (what an escaped QEMU would be): its own disk yes, B's disk, B's console and the database no.
    assert.equal(asUid(a!.uid!, ['head', '-c', '1', join(dirA, 'root.qcow2')]).code, 0);
    for (const f of [join(dirB, 'root.qcow2'), join(dirB, 'console.log'), join(dirB, 'run', 'qmp.sock'), join(d.dir, 'vmkit.db')]) {
      const r = asUid(a!.uid!, ['head', '-c', '1', f]);
      assert.notEqual(r.code, 0, `uid ${a!.uid} must not read ${f}`);
      assert.match(r.stderr, /Permission denied|No such device/);
    }
    // Nor write into the data folder or an instance folder.
    assert.notEqual(asUid(a!.uid!, ['touch', join(dirA, 'x')]).code, 0);
    assert.notEqual(asUid(a!.uid!, ['touch', join(d.dir, 'x')]).code, 0);
  });

  it('a restarted daemon re-attaches: same pid, uid and cgroup', async () => {
    const before = d.cliJson<InstanceJson>(['info', 'iso1']);
    await d.kill9();
    assert.ok(processAlive(before.runtime.pid!), 'QEMU outlives the daemon');
    await d.restart();
    const after = d.cliJson<InstanceJson>(['info', 'iso1']);
    assert.equal(after.state, 'running');
    assert.equal(after.runtime.pid, before.runtime.pid);
    assert.equal(after.runtime.uid, before.uid);
    assert.equal(after.runtime.cgroup, `/vmkit/${after.id}`);
    assert.match(await waitForHttp(`http://127.0.0.1:${ports[0]}/`, 60_000), /iso1/);
  });

  it('the cgroup goes with the QEMU; a uid is free again once its instance is deleted', async () => {
    const info = d.cliJson<InstanceJson>(['info', 'iso2']);
    const g = guestCgroup(layout!, info.id);
    assert.equal(d.cli(['stop', 'iso2', '--force']).code, 0);
    for (const dir of g.dirs) assert.ok(!existsSync(dir), `${dir} removed after stop`);
    assert.equal(d.cli(['delete', 'iso2']).code, 0);
    const r = d.cli(['create', 'appliance', 'iso3']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(d.cliJson<InstanceJson>(['info', 'iso3']).uid, info.uid, 'the freed uid is handed out again');
    assert.equal(d.cli(['delete', 'iso3']).code, 0);
  });

  it('clones get uids of their own; a linked clone reads the frozen layer, root-owned and read-only', async () => {
    assert.equal(d.cli(['stop', 'iso1', '--force']).code, 0);
    const r = d.cli(['clone', 'iso1', 'iso1c']);
    assert.equal(r.code, 0, r.stderr);
    const src = d.cliJson<InstanceJson>(['info', 'iso1']);
    const clone = d.cliJson<InstanceJson>(['info', 'iso1c']);
    assert.ok(clone.uid !== undefined && clone.uid !== src.uid && isGuestUid(clone.uid));
    const port = await freePort();
    assert.equal(d.cli(['forward', 'add', 'iso1c', `${port}:80`]).code, 0);
    const started = d.cli(['start', 'iso1c']);
    assert.equal(started.code, 0, started.stderr);
    assert.match(await waitForHttp(`http://127.0.0.1:${port}/`, 120_000), /iso1c/);
    const layers = spawnSync('sh', ['-c', `ls ${join(d.dir, 'instances', src.id)}/layer-*.qcow2`], { encoding: 'utf8' })
      .stdout.trim()
      .split('\n');
    assert.equal(layers.length, 1);
    assert.equal(statSync(layers[0]!).uid, 0);
    assert.equal(statSync(layers[0]!).mode & 0o777, 0o444);
    assert.equal(status(d.cliJson<InstanceJson>(['info', 'iso1c']).runtime.pid!).Uid!.split('\t')[0], String(clone.uid));
    assert.equal(d.cli(['delete', '--force', 'iso1c']).code, 0);
  });

  it('a NIC on a vmkit network: its tap belongs to the guest uid', async () => {
    const net = d.cli(['network', 'create', 'isonet', '--mode', 'internal', '--subnet', '10.86.0.0/24']);
    assert.equal(net.code, 0, net.stderr);
    const r = d.cli(['launch', 'appliance', 'isonic', '--nic', 'isonet']);
    assert.equal(r.code, 0, r.stderr);
    const info = d.cliJson<InstanceJson>(['info', 'isonic']);
    const tap = `vmkt-${info.id.slice(0, 7)}-0`;
    // `ip -d` (sysfs shows the namespace it was mounted in, not this one).
    const link = JSON.parse(spawnSync('ip', ['-d', '-j', 'link', 'show', 'dev', tap], { encoding: 'utf8' }).stdout) as Array<{
      linkinfo: { info_data: { user?: number; group?: number } };
    }>;
    assert.equal(link[0]!.linkinfo.info_data.user, info.uid);
    assert.equal(link[0]!.linkinfo.info_data.group, info.uid);
    const pid = info.runtime.pid!;
    assert.equal(status(pid).CapEff, '0000000000000000', 'QEMU attached to its tap without CAP_NET_ADMIN');
    assert.equal(d.cli(['delete', '--force', 'isonic']).code, 0);
    assert.equal(d.cli(['network', 'delete', 'isonet']).code, 0);
  });
});

describe("a guest's memory limit is enforced", { timeout: 300_000 }, () => {
  let d: TestDaemon;
  before(async () => {
    // Test-only knob: the cgroup limit replaced by 96 MiB, far below what a 256 MiB guest
    // under TCG touches while it boots (≈ 200 MiB of RSS).
    d = await startTestDaemon({ env: { VMKIT_TEST_MEMORY_LIMIT_MIB: '96' } });
  });
  after(async () => {
    await d?.stop();
  });

  it('the kernel kills the QEMU that exceeds it; the instance ends in error', async () => {
    const r = d.cli(['launch', 'appliance', 'hog']);
    // The launch may already see the end (QEMU killed before `cont` answered) or not.
    const deadline = Date.now() + 120_000;
    let info = d.cliJson<InstanceJson>(['info', 'hog']);
    while (info.state === 'running' && Date.now() < deadline) {
      await sleep(500);
      info = d.cliJson<InstanceJson>(['info', 'hog']);
    }
    assert.notEqual(info.state, 'running', `a guest over its limit does not keep running (launch: ${r.stderr})`);
    assert.equal(info.state, 'error', `${info.stateReason} ${r.stderr}`);
    // The cgroup's oom_kill count, read before the group goes, says why.
    assert.match(info.stateReason ?? '', /the kernel's OOM killer ended the QEMU process: its cgroup reached its memory limit \(96 MiB\)/);
    // Where the kernel log is readable, it names the cgroup whose limit killed QEMU.
    const kmsg = spawnSync('dmesg', [], { encoding: 'utf8' });
    if (kmsg.status === 0) assert.match(kmsg.stdout, new RegExp(`oom_memcg=/vmkit/${info.id}\\b.*task=qemu-system`));
    assert.ok(GUEST_UID_BASE <= info.uid!);
  });
});
