import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, sleep, startTestDaemon, type TestDaemon } from './helpers.js';
import { createNetns, deleteNetns } from './netns.js';

/**
 * A real distribution: the Debian image `vmkit image build-debian` makes (cloud kernel,
 * systemd, cloud-init, openssh-server), booted under TCG. The build is cached in
 * .cache/debian-bookworm by scripts/setup.sh; the daemon is pointed at that cache
 * (VMKIT_BUILD_CACHE), so build-debian here only checks the cache and imports it.
 * Each Debian boot costs 40–120 s under TCG, so the test boots four times in all:
 * vm1, its two clones, and one clone again after a NIC was added.
 */
const CACHE = join(ROOT, '.cache');
const USER_DATA_TEXT = 'hello-from-user-data';

interface Inst {
  id: string;
  state: string;
  stateReason?: string;
  nics: Array<{ id: string; network: string; ipv4?: string; ipv4Source?: string; mac: string }>;
  cloudInit?: { userData?: string; sshKeys?: string[]; generation?: number };
}

describe('a real Debian guest: cloud-init, SSH keys, disk size, identity of clones', { timeout: 5_400_000 }, () => {
  let d: TestDaemon;
  let host: string;
  let tmp: string;
  let key: string;

  /** ssh from the daemon's namespace to 127.0.0.1:port as debian, with the test's key. */
  const ssh = (port: number, command: string, timeoutS = 20) =>
    spawnSync(
      'ip',
      [
        'netns',
        'exec',
        host,
        'ssh',
        '-i',
        key,
        '-p',
        String(port),
        '-o',
        'BatchMode=yes',
        '-o',
        'StrictHostKeyChecking=no',
        '-o',
        'UserKnownHostsFile=/dev/null',
        '-o',
        'LogLevel=ERROR',
        '-o',
        `ConnectTimeout=${Math.min(10, timeoutS)}`,
        'debian@127.0.0.1',
        command,
      ],
      { encoding: 'utf8', timeout: timeoutS * 1000 },
    );

  /**
   * Polls ssh until it answers. A guest whose QEMU is gone (crashed, or OOM-killed by its
   * cgroup: that was why this test once waited 20 minutes in vain) fails at once, with the
   * instance's state reason and the end of its console.
   */
  async function waitSsh(name: string, port: number, timeoutMs = 1_200_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      const r = ssh(port, 'true', 15);
      if (r.status === 0) return;
      last = r.stderr;
      const inst = d.cliJson<Inst>(['info', name]);
      if (inst.state !== 'running') {
        throw new Error(`${name} is ${inst.state} (${inst.stateReason ?? 'no reason'}) while waiting for ssh:\n${d.cli(['logs', name, '--tail', '40']).stdout}`);
      }
      await sleep(3000);
    }
    throw new Error(`ssh to ${name} never worked (${last}):\n${d.cli(['logs', name, '--tail', '60']).stdout}`);
  }

  const out = (port: number, command: string): string => {
    const r = ssh(port, command, 60);
    assert.equal(r.status, 0, `${command}: ${r.stderr}`);
    return r.stdout.trim();
  };

  /** `vmkit exec` through the guest's own qemu-guest-agent, retried while the agent comes up. */
  async function agentExec(name: string, command: string[]): Promise<string> {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const r = d.cli(['exec', name, '--', ...command]);
      if (r.code === 0) return r.stdout.trim();
      if (Date.now() > deadline || !/VMKIT_AGENT_UNAVAILABLE/.test(r.stderr)) throw new Error(`exec ${command.join(' ')} in ${name}: ${r.code} ${r.stderr}`);
      await sleep(2000);
    }
  }

  /** The NIC as info shows it once the agent reported the address `want`. */
  async function agentAddress(name: string, mac: string, want: string): Promise<Inst['nics'][number]> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const nic = d.cliJson<Inst>(['info', name]).nics.find((n) => n.mac === mac)!;
      if ((nic.ipv4Source === 'agent' && nic.ipv4 === want) || Date.now() > deadline) return nic;
      await sleep(1000);
    }
  }

  before(async () => {
    assert.ok(existsSync(join(CACHE, 'debian-bookworm', 'root.qcow2')), 'the Debian image is built (scripts/setup.sh: guest/debian/build.sh .cache/debian-bookworm)');
    host = createNetns('deb');
    tmp = mkdtempSync('/tmp/vmkt-deb-');
    key = join(tmp, 'id_ed25519');
    const kg = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'vmkit-test', '-f', key], { encoding: 'utf8' });
    assert.equal(kg.status, 0, kg.stderr);
    writeFileSync(join(tmp, 'user-data.yaml'), `#cloud-config\nwrite_files:\n  - path: /var/tmp/from-user-data.txt\n    content: "${USER_DATA_TEXT}"\n    permissions: "0644"\n`);
    d = await startTestDaemon({ netns: host, env: { VMKIT_BUILD_CACHE: CACHE, HOME: tmp } });
    const net = d.cli(['network', 'create', 'lan', '--mode', 'nat', '--subnet', '10.84.0.0/24']);
    assert.equal(net.code, 0, net.stderr);
    const lab = d.cli(['network', 'create', 'lab', '--mode', 'host-only', '--subnet', '10.85.0.0/24']);
    assert.equal(lab.code, 0, lab.stderr);
  });

  after(async () => {
    await d?.stop();
    if (host) deleteNetns(host);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('build-debian imports the cached build (no rebuild); bad input is refused', () => {
    const t0 = Date.now();
    const b = d.cli(['image', 'build-debian', 'debian'], { timeoutMs: 600_000 });
    assert.equal(b.code, 0, b.stderr);
    assert.ok(Date.now() - t0 < 120_000, `cached: ${Date.now() - t0} ms`);
    const img = d.cliJson<{ nicModels: string[]; disks: Array<{ virtualSize: number }> }>(['image', 'info', 'debian']);
    assert.deepEqual(img.nicModels, ['virtio-net']);
    assert.equal(img.disks[0]!.virtualSize, 2 * 1024 ** 3);
    // A disk smaller than the image, a private key, a user-data cloud-init ignores: refused, nothing made.
    const small = d.cli(['create', 'debian', 'x1', '--disk', '1G']);
    assert.equal(small.code, 1, small.stdout + small.stderr);
    assert.match(small.stderr, /smaller than the image/);
    const priv = d.cli(['create', 'debian', 'x2', '--ssh-key', key]);
    assert.equal(priv.code, 1);
    assert.match(priv.stderr, /private key/);
    writeFileSync(join(tmp, 'junk.txt'), 'hello: world\n');
    const junk = d.cli(['create', 'debian', 'x3', '--cloud-init', join(tmp, 'junk.txt'), '--ssh-key', `${key}.pub`]);
    assert.equal(junk.code, 1, junk.stdout + junk.stderr);
    assert.match(junk.stderr, /cloud-init ignores/);
    assert.equal(d.cliJson<unknown[]>(['list']).length, 0);
    // Image defaults can be edited; an unknown firmware is refused.
    assert.equal(d.cli(['image', 'set', 'debian', '--firmware', 'coreboot']).code, 1);
    assert.equal(d.cli(['image', 'set', 'debian', '--nic-model', 'virtio-net', '--firmware', 'bios']).code, 0);
  });

  it('launch with --ssh-key, --cloud-init and --disk 4G: ssh through a forward reads the user-data file; / is > 3 GiB', async () => {
    const r = d.cli(
      ['launch', 'debian', 'vm1', '--nic', 'lan', '--ssh-key', `${key}.pub`, '--cloud-init', join(tmp, 'user-data.yaml'), '--disk', '4G', '-p', '2201:22', '--memory', '512'],
      { timeoutMs: 300_000 },
    );
    assert.equal(r.code, 0, r.stderr);
    const inst = d.cliJson<Inst>(['info', 'vm1']);
    assert.equal(inst.cloudInit?.userData, readFileSync(join(tmp, 'user-data.yaml'), 'utf8'), 'info --format json shows the full user-data');
    assert.deepEqual(inst.cloudInit?.sshKeys, [readFileSync(`${key}.pub`, 'utf8').trim()]);
    const text = d.cli(['info', 'vm1']).stdout;
    assert.match(text, /User-data:\s+\d+ bytes, #cloud-config, sha256 [0-9a-f]{16}/);
    assert.match(text, /SSH keys:\s+ssh-ed25519 vmkit-test/);

    await waitSsh('vm1', 2201);
    assert.equal(out(2201, 'cat /var/tmp/from-user-data.txt'), USER_DATA_TEXT);
    assert.equal(out(2201, 'hostname'), 'vm1');
    // The guest agent (the image's qemu-guest-agent on vmkit's org.qemu.guest_agent.0 channel).
    assert.equal(await agentExec('vm1', ['hostname']), 'vm1');
    assert.equal(await agentExec('vm1', ['cat', '/var/tmp/from-user-data.txt']), USER_DATA_TEXT);
    const vm1Nic = d.cliJson<Inst>(['info', 'vm1']).nics[0]!;
    const seen = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(out(2201, 'ip -4 -o addr show scope global'))?.[1];
    assert.ok(seen, 'the guest has a global IPv4 address');
    const reported = await agentAddress('vm1', vm1Nic.mac, seen!);
    assert.deepEqual([reported.ipv4, reported.ipv4Source], [seen, 'agent']);
    const blob = randomBytes(1024 * 1024);
    writeFileSync(join(tmp, 'blob'), blob);
    const push = d.cli(['file', 'push', join(tmp, 'blob'), 'vm1:/var/tmp/blob']);
    assert.equal(push.code, 0, push.stderr);
    assert.equal(out(2201, 'sha256sum /var/tmp/blob').split(' ')[0], createHash('sha256').update(blob).digest('hex'));
    const pull = d.cli(['file', 'pull', 'vm1:/var/tmp/blob', join(tmp, 'blob.back')]);
    assert.equal(pull.code, 0, pull.stderr);
    assert.ok(readFileSync(join(tmp, 'blob.back')).equals(blob), 'file pull gave back the same 1 MiB');
    const rootBytes = Number(out(2201, 'df -B1 --output=size / | tail -n1'));
    assert.ok(rootBytes > 3 * 1024 ** 3, `root filesystem is ${rootBytes} bytes`);
    // Online growth: QMP block_resize; the guest's kernel sees the new capacity at once.
    const grow = d.cli(['disk', 'resize', 'vm1', '5G']);
    assert.equal(grow.code, 0, grow.stderr);
    assert.match(grow.stdout, /grown from 4 GiB to 5 GiB while running/);
    assert.equal(Number(out(2201, 'cat /sys/block/vda/size')) * 512, 5 * 1024 ** 3);
    const shrink = d.cli(['disk', 'resize', 'vm1', '4G']);
    assert.equal(shrink.code, 1);
    assert.match(shrink.stderr, /never does/);
    // logs --tail N: N lines.
    assert.equal(d.cli(['logs', 'vm1', '--tail', '3']).stdout.replace(/\n$/, '').split('\n').length, 3);
  });

  let c1MachineId = '';

  it('two clones on one nat network: different machine-ids and SSH host keys, two leases', async () => {
    const vm1Id = out(2201, 'cat /etc/machine-id');
    const stop = d.cli(['stop', 'vm1', '--timeout', '300'], { timeoutMs: 400_000 });
    assert.equal(stop.code, 0, stop.stderr + stop.stdout);
    for (const [c, port] of [
      ['c1', 2211],
      ['c2', 2212],
    ] as const) {
      assert.equal(d.cli(['clone', 'vm1', c], { timeoutMs: 120_000 }).code, 0);
      assert.equal(d.cli(['forward', 'add', c, `${port}:22`]).code, 0);
      const s = d.cli(['start', c], { timeoutMs: 200_000 });
      assert.equal(s.code, 0, s.stderr);
    }
    await Promise.all([waitSsh('c1', 2211), waitSsh('c2', 2212)]);
    const ids = [out(2211, 'cat /etc/machine-id'), out(2212, 'cat /etc/machine-id')];
    assert.match(ids[0]!, /^[0-9a-f]{32}$/);
    assert.notEqual(ids[0], ids[1]);
    assert.ok(!ids.includes(vm1Id), 'neither clone kept the source machine-id');
    c1MachineId = ids[0]!;
    const hostKeys = [out(2211, 'cat /etc/ssh/ssh_host_ed25519_key.pub'), out(2212, 'cat /etc/ssh/ssh_host_ed25519_key.pub')];
    assert.notEqual(hostKeys[0], hostKeys[1]);
    // The user-data file came with the disk; user-data itself was carried to the clones.
    assert.equal(out(2211, 'cat /var/tmp/from-user-data.txt'), USER_DATA_TEXT);
    const macs = ['c1', 'c2'].map((c) => d.cliJson<Inst>(['info', c]).nics[0]!.mac);
    const deadline = Date.now() + 30_000;
    let leases: Array<{ mac: string; ipv4: string }> = [];
    while (Date.now() < deadline) {
      leases = d.cliJson<{ leases: Array<{ mac: string; ipv4: string }> }>(['network', 'info', 'lan']).leases;
      if (macs.every((m) => leases.some((l) => l.mac === m))) break;
      await sleep(1000);
    }
    const mine = leases.filter((l) => macs.includes(l.mac));
    assert.equal(mine.length, 2, JSON.stringify(leases));
    assert.notEqual(mine[0]!.ipv4, mine[1]!.ipv4);
    // Each clone holds the address of its own lease (dnsmasq's and the guest's view agree).
    const infos = ['c1', 'c2'].map((c) => d.cliJson<Inst>(['info', c]).nics[0]!);
    for (const [i, port] of [2211, 2212].entries()) {
      const lease = mine.find((l) => l.mac === infos[i]!.mac)!;
      assert.match(out(port, 'ip -4 -o addr show'), new RegExp(`inet ${lease.ipv4.replace(/\./g, '\\.')}/`));
    }
    // The agents agree: each clone reports its lease address, and its own machine-id.
    for (const [i, c] of ['c1', 'c2'].entries()) {
      const lease = mine.find((l) => l.mac === infos[i]!.mac)!;
      const nic = await agentAddress(c, infos[i]!.mac, lease.ipv4);
      assert.deepEqual([nic.ipv4, nic.ipv4Source], [lease.ipv4, 'agent']);
      assert.equal(await agentExec(c, ['cat', '/etc/machine-id']), ids[i]);
    }
  });

  it('a NIC added with nic add comes up with its address after a restart (new instance-id)', async () => {
    assert.equal(d.cli(['stop', 'c2', '--timeout', '300'], { timeoutMs: 400_000 }).code, 0);
    const added = d.cli(['nic', 'add', 'c1', '--network', 'lab', '--format', 'json']);
    assert.equal(added.code, 0, added.stderr);
    const nic = JSON.parse(added.stdout) as { id: string; ipv4: string; mac: string };
    assert.ok(nic.ipv4, 'the lab network gave the NIC an address');
    const inst = d.cliJson<Inst>(['info', 'c1']);
    assert.equal(inst.cloudInit?.generation, 1, 'the NIC change makes a new cloud-init instance-id');
    const r = d.cli(['restart', 'c1', '--timeout', '300'], { timeoutMs: 600_000 });
    assert.equal(r.code, 0, r.stderr);
    await waitSsh('c1', 2211);
    const deadline = Date.now() + 60_000;
    let addrs = '';
    while (Date.now() < deadline) {
      addrs = out(2211, 'ip -4 -o addr show');
      if (addrs.includes(`${nic.ipv4}/`)) break;
      await sleep(2000);
    }
    assert.ok(addrs.includes(`${nic.ipv4}/`), `the new NIC has ${nic.ipv4}:\n${addrs}`);
    // The machine-id stays: a NIC change is not a new machine.
    assert.equal(out(2211, 'cat /etc/machine-id'), c1MachineId);
    const added2 = await agentAddress('c1', nic.mac, nic.ipv4);
    assert.deepEqual([added2.ipv4, added2.ipv4Source], [nic.ipv4, 'agent']);
  });

  it('nic remove refuses a NIC with forwards unless --force, which says what it removed', () => {
    const refused = d.cli(['nic', 'remove', 'c2', 'nic0']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /carries port forward\(s\) 127\.0\.0\.1:2212->22\/tcp/);
    const forced = d.cli(['nic', 'remove', 'c2', 'nic0', '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stdout, /Removed its forward\(s\): 2212->22\/tcp/);
    assert.equal(d.cliJson<{ forwards: unknown[] }>(['info', 'c2']).forwards.length, 0);
  });

  it('image import https://… --sha256 downloads from a local HTTP server, checks, imports (virtio-net default)', async () => {
    const www = join(tmp, 'www');
    spawnSync('mkdir', ['-p', www]);
    const made = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(www, 'tiny.qcow2'), '64M'], { encoding: 'utf8' });
    assert.equal(made.status, 0, made.stderr);
    const sum = createHash('sha256')
      .update(readFileSync(join(www, 'tiny.qcow2')))
      .digest('hex');
    const web = spawn('ip', ['netns', 'exec', host, 'python3', '-m', 'http.server', '--bind', '127.0.0.1', '8765', '--directory', www], { stdio: 'ignore' });
    try {
      await sleep(1500);
      const wrong = d.cli(['image', 'import', 'http://127.0.0.1:8765/tiny.qcow2', '--sha256', '0'.repeat(64), '--name', 'tiny-bad'], { timeoutMs: 120_000 });
      assert.equal(wrong.code, 1, wrong.stderr);
      assert.match(wrong.stderr, /VMKIT_CHECKSUM_MISMATCH/);
      const ok = d.cli(['image', 'import', 'http://127.0.0.1:8765/tiny.qcow2', '--sha256', sum], { timeoutMs: 120_000 });
      assert.equal(ok.code, 0, ok.stderr);
      const img = d.cliJson<{ nicModels: string[]; origin: string; disks: Array<{ virtualSize: number }> }>(['image', 'info', 'tiny']);
      assert.deepEqual(img.nicModels, ['virtio-net']);
      assert.equal(img.origin, 'http://127.0.0.1:8765/tiny.qcow2');
      assert.equal(img.disks[0]!.virtualSize, 64 * 1024 ** 2);
      assert.equal(d.cliJson<unknown[]>(['image', 'list']).filter((i) => (i as { name: string }).name === 'tiny-bad').length, 0);
    } finally {
      web.kill('SIGKILL');
    }
  });
});
