import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, sleep, startTestDaemon, tokenFile, type TestDaemon } from './helpers.js';

const TOKEN = 'agent-test-token-0123456789abcdef0123';

/**
 * The guest agent against the built-in appliance, which runs Debian's real qemu-ga on the
 * virtio-serial port vmkit gives every instance (guest/agent/).
 */
interface Info {
  state: string;
  nics: Array<{ mac: string; ipv4?: string; ipv4Source?: string }>;
  runtime: { pid?: number; agent?: { available: boolean; hostname?: string; kernel?: string; interfaces?: Array<{ name: string; mac?: string; ipv4: string[] }> } };
}

describe('guest agent (qemu-ga in the appliance)', () => {
  let d: TestDaemon;
  let url: string;
  /** The CLI as a remote (TCP + token) caller: bytes travel in requests, never host paths. */
  const remote = (args: string[]) => d.cli([...args, '--remote', url, '--token', TOKEN]);

  /** exec through the CLI, retried until the agent is up after a boot. */
  async function waitForAgent(name: string): Promise<void> {
    const deadline = Date.now() + 90_000;
    for (;;) {
      const r = d.cli(['exec', name, '--', 'true']);
      if (r.code === 0) return;
      if (Date.now() > deadline) throw new Error(`no agent in ${name}: ${r.stderr}`);
      await sleep(500);
    }
  }

  before(async () => {
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    d = await startTestDaemon({ extraArgs: ['--listen', `127.0.0.1:${port}`, '--insecure-http', '--token-file', tokenFile(TOKEN)] });
    const r = d.cli(['launch', 'appliance', 'ga1']);
    assert.equal(r.code, 0, r.stderr);
    await waitForAgent('ga1');
  });
  after(async () => {
    await d.stop();
  });

  it('exec returns the hostname, and the exit code of a failing command', () => {
    const r = d.cli(['exec', 'ga1', '--', 'hostname']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'ga1');
    const f = d.cli(['exec', 'ga1', '--env', 'X=7', '--cwd', '/tmp', '--', 'sh', '-c', 'echo "$X $(pwd)"; echo oops >&2; exit 42']);
    assert.equal(f.code, 42);
    assert.equal(f.stdout.trim(), '7 /tmp');
    assert.match(f.stderr, /oops/);
    const missing = d.cli(['exec', 'ga1', '--', '/no/such/program']);
    assert.notEqual(missing.code, 0);
    const viaTcp = remote(['exec', 'ga1', '--', 'sh', '-c', 'hostname; exit 3']);
    assert.equal(viaTcp.code, 3, viaTcp.stderr);
    assert.equal(viaTcp.stdout.trim(), 'ga1');
  });

  it('file push/pull round-trips 1 MiB byte for byte', () => {
    const data = randomBytes(1024 * 1024);
    const src = join(d.dir, 'up.bin');
    const back = join(d.dir, 'down.bin');
    writeFileSync(src, data);
    const p = d.cli(['file', 'push', src, 'ga1:/tmp/blob', '--mode', '0640']);
    assert.equal(p.code, 0, p.stderr);
    const again = d.cli(['file', 'push', src, 'ga1:/tmp/blob']);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /VMKIT_ALREADY_EXISTS/);
    const sum = d.cli(['exec', 'ga1', '--', 'sh', '-c', 'stat -c %a /tmp/blob; sha256sum /tmp/blob']);
    assert.equal(sum.code, 0, sum.stderr);
    assert.match(sum.stdout, /^640\n/);
    const hex = (sum.stdout.split('\n')[1] ?? '').split(' ')[0];
    const want = sha256(data);
    assert.equal(hex, want);
    const g = d.cli(['file', 'pull', 'ga1:/tmp/blob', back]);
    assert.equal(g.code, 0, g.stderr);
    assert.ok(readFileSync(back).equals(data), 'the same bytes came back');
    // The same through a remote (TCP) caller: bytes in the request and the answer.
    const small = randomBytes(200 * 1024 + 7);
    writeFileSync(src, small);
    const rp = remote(['file', 'push', src, 'ga1:/tmp/remote.bin']);
    assert.equal(rp.code, 0, rp.stderr);
    const rg = remote(['file', 'pull', 'ga1:/tmp/remote.bin', join(d.dir, 'remote-back.bin')]);
    assert.equal(rg.code, 0, rg.stderr);
    assert.ok(readFileSync(join(d.dir, 'remote-back.bin')).equals(small), 'remote round trip');
    const nf = d.cli(['file', 'pull', 'ga1:/no/such/file', join(d.dir, 'x')]);
    assert.notEqual(nf.code, 0);
    assert.match(nf.stderr, /VMKIT_AGENT_ERROR/);
  });

  it('info shows the address the agent reports for the NIC', async () => {
    // The appliance's DHCP on user-mode NAT ends with 10.0.2.15: reported by the agent, not assumed.
    let info: Info | undefined;
    for (let i = 0; i < 20; i++) {
      info = d.cliJson<Info>(['info', 'ga1']);
      if (info.nics[0]?.ipv4Source === 'agent') break;
      await sleep(500);
    }
    assert.equal(info!.runtime.agent?.available, true, JSON.stringify(info!.runtime));
    assert.equal(info!.nics[0]!.ipv4Source, 'agent');
    assert.equal(info!.nics[0]!.ipv4, '10.0.2.15');
    const itf = info!.runtime.agent!.interfaces!.find((f) => f.mac === info!.nics[0]!.mac);
    assert.ok(itf && itf.ipv4.includes('10.0.2.15'), JSON.stringify(info!.runtime.agent));
    // list marks it too (from the last answer).
    assert.match(d.cli(['list']).stdout, /ga1\s+running.*10\.0\.2\.15 \(agent\)/);
    // Who the guest says it is: its host name (from vmkit's config drive) and the kernel it runs.
    const kernel = d.cli(['exec', 'ga1', '--', 'uname', '-r']).stdout.trim();
    assert.equal(info!.runtime.agent!.hostname, 'ga1');
    assert.equal(info!.runtime.agent!.kernel, kernel);
    assert.match(d.cli(['info', 'ga1']).stdout, new RegExp(`Guest:\\s+ga1, .*${kernel.replace(/\./g, '\\.')}`));
  });

  it('resume sets the guest clock (guest-set-time): no lag after a pause', async () => {
    const guestNow = () => Number(d.cli(['exec', 'ga1', '--', 'date', '+%s']).stdout.trim());
    assert.equal(d.cli(['pause', 'ga1']).code, 0);
    await sleep(6000);
    assert.equal(d.cli(['resume', 'ga1']).code, 0);
    // The clock is set in the background right after the resume; without it the guest stays ≥ 6 s behind.
    let lag = Infinity;
    for (let i = 0; i < 10 && lag > 2; i++) {
      await sleep(500);
      lag = Date.now() / 1000 - guestNow();
    }
    assert.ok(lag < 3, `guest clock ${lag.toFixed(1)} s behind the host after a 6 s pause`);
  });

  it('a snapshot is quiesced when the agent answers; restore thaws; the guest writes after', () => {
    const c = d.cli(['snapshot', 'create', 'ga1', 'q1', '--quiesce']);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /filesystems frozen by the guest agent/);
    const snap = d.cliJson<Array<{ name: string; quiesced?: boolean }>>(['snapshot', 'list', 'ga1']).find((x) => x.name === 'q1');
    assert.equal(snap?.quiesced, true, JSON.stringify(snap));
    // Disk-only snapshots are quiesced by default when the agent answers.
    const disk = d.cli(['snapshot', 'create', 'ga1', 'd1', '--no-memory']);
    assert.equal(disk.code, 0, disk.stderr);
    assert.match(disk.stdout, /filesystems frozen by the guest agent/);
    const w = d.cli(['exec', 'ga1', '--timeout', '20', '--', 'sh', '-c', 'echo after > /data/after-snap && sync && cat /data/after-snap']);
    assert.equal(w.code, 0, w.stderr);
    const r = d.cli(['snapshot', 'restore', 'ga1', 'q1']);
    assert.equal(r.code, 0, r.stderr);
    // The snapshot's memory held frozen filesystems: after the restore they are thawed again.
    const w2 = d.cli(['exec', 'ga1', '--timeout', '20', '--', 'sh', '-c', 'test ! -e /data/after-snap && echo ok > /data/x && sync && cat /data/x']);
    assert.equal(w2.code, 0, w2.stderr);
    assert.equal(w2.stdout.trim(), 'ok');
  });

  it('without an agent: a clear AGENT_UNAVAILABLE error, and snapshots go on crash-consistent', async () => {
    const r = d.cli(['launch', 'appliance', 'ga2']);
    assert.equal(r.code, 0, r.stderr);
    await waitForAgent('ga2');
    // Kill the respawning starter and qemu-ga itself, detached so this exec can answer first.
    const k = d.cli(['exec', 'ga2', '--', 'sh', '-c', '(sleep 1; kill -9 $(cat /run/vmkit/qemu-ga-start.pid) $(pidof qemu-ga)) </dev/null >/dev/null 2>&1 &']);
    assert.equal(k.code, 0, k.stderr);
    await sleep(3000);
    const t0 = Date.now();
    const e = d.cli(['exec', 'ga2', '--', 'hostname']);
    assert.notEqual(e.code, 0);
    assert.match(e.stderr, /VMKIT_AGENT_UNAVAILABLE/);
    assert.match(e.stderr, /qemu-guest-agent/);
    assert.ok(Date.now() - t0 < 15_000, 'fails fast');
    const q = d.cli(['snapshot', 'create', 'ga2', 'must', '--quiesce']);
    assert.notEqual(q.code, 0);
    assert.match(q.stderr, /VMKIT_AGENT_UNAVAILABLE/);
    // A disk-only snapshot would be quiesced by default: without an agent it is crash-consistent, and says why.
    const s = d.cli(['snapshot', 'create', 'ga2', 'plain', '--no-memory']);
    assert.equal(s.code, 0, s.stderr);
    assert.match(s.stdout, /not quiesced/);
    const info = d.cliJson<Info>(['info', 'ga2']);
    assert.equal(info.runtime.agent?.available, false);
    assert.equal(info.nics[0]!.ipv4Source, 'assumed');
    // Stop falls back to the ACPI power button.
    const st = d.cli(['stop', 'ga2']);
    assert.equal(st.code, 0, st.stderr);
  });

  it('stop goes through guest-shutdown', () => {
    const t0 = Date.now();
    const r = d.cli(['stop', 'ga1']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(Date.now() - t0 < 20_000);
    const log = d.cli(['logs', 'ga1']);
    assert.match(log.stdout, /guest agent asked to poweroff/);
    assert.doesNotMatch(log.stdout, /power button pressed/);
  });
});

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
