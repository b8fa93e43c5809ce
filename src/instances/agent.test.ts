import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VmkitError } from '../errors.js';
import { GuestAgent } from './agent.js';
import type { InstanceContext } from './registry.js';

/**
 * The instance-level agent verbs against fake agents on the socket path vmkit uses: how
 * exec reports exit codes, and what a snapshot's freeze does when the agent fails or hangs.
 */
interface Fake {
  dir: string;
  seen: string[];
  close(): void;
}

async function fakeInstance(answer: (cmd: string, args: Record<string, unknown>) => unknown | 'silent'): Promise<{ agent: GuestAgent; fake: Fake }> {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-agent-'));
  mkdirSync(join(dir, 'run'));
  const seen: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const req = JSON.parse(buf.slice(0, nl)) as { execute: string; arguments?: Record<string, unknown> };
        buf = buf.slice(nl + 1);
        seen.push(req.execute);
        if (req.execute === 'guest-sync-delimited') {
          s.write('\xff' + JSON.stringify({ return: req.arguments!.id }) + '\n', 'latin1');
          continue;
        }
        const a = answer(req.execute, req.arguments ?? {});
        if (a === 'silent') continue;
        s.write(JSON.stringify(a instanceof Error ? { error: { class: 'GenericError', desc: a.message } } : { return: a }) + '\n');
      }
    });
  });
  await new Promise<void>((r) => server.listen(join(dir, 'run', 'qga.sock'), r));
  const inst = { name: 'vm1', id: 'abc', state: 'running' };
  const shared = {
    paths: { run: () => join(dir, 'run') },
    registry: { load: async () => inst, loadIfPresent: async () => inst, current: () => ({}) },
  } as unknown as InstanceContext;
  return {
    agent: new GuestAgent(shared, { freezeTimeoutMs: 300 }),
    fake: {
      dir,
      seen,
      close() {
        for (const s of sockets) s.destroy();
        server.close();
        rmSync(dir, { recursive: true, force: true });
      },
    },
  };
}

test('exec: output and exit code come from guest-exec-status; a signal is 128+N', async () => {
  let polls = 0;
  const { agent, fake } = await fakeInstance((cmd, args) => {
    if (cmd === 'guest-exec') return { pid: args.path === 'killme' ? 8 : 7 };
    if (cmd === 'guest-exec-status') {
      if (args.pid === 8) return { exited: true, signal: 9 };
      return ++polls < 3 ? { exited: false } : { exited: true, exitcode: 42, 'out-data': Buffer.from('hello\n').toString('base64') };
    }
    return new Error('unexpected');
  });
  try {
    const r = await agent.exec('vm1', { command: ['sh', '-c', 'exit 42'] });
    assert.equal(r.exitCode, 42);
    assert.equal(r.stdout.toString(), 'hello\n');
    const k = await agent.exec('vm1', { command: ['killme'] });
    assert.equal(k.exitCode, 137);
    assert.equal(k.signal, 9);
    await assert.rejects(agent.exec('vm1', { command: ['x'], env: ['not valid'] }), (e: VmkitError) => e.code === 'VMKIT_INVALID_ARGUMENT');
  } finally {
    fake.close();
  }
});

test('a freeze that fails is thawed; auto goes on crash-consistent and says why, "on" refuses and takes nothing', async () => {
  const { agent, fake } = await fakeInstance((cmd) => (cmd === 'guest-fsfreeze-freeze' ? new Error('fsfreeze is not supported') : cmd === 'guest-fsfreeze-thaw' ? 0 : {}));
  try {
    let taken = 0;
    const r = await agent.quiesced('vm1', 'auto', async () => ++taken);
    assert.equal(r.frozen, false);
    assert.match(r.note ?? '', /not supported/);
    assert.equal(taken, 1);
    assert.ok(fake.seen.includes('guest-fsfreeze-thaw'), 'thawed after the failed freeze');
    await assert.rejects(
      agent.quiesced('vm1', 'on', async () => ++taken),
      (e: VmkitError) => e.code === 'VMKIT_AGENT_ERROR' && /without --quiesce/.test(e.hint ?? ''),
    );
    assert.equal(taken, 1, 'nothing taken when a required freeze failed');
  } finally {
    fake.close();
  }
});

test('a freeze that hangs times out, is thawed over a new connection, and the snapshot is still taken (auto)', async () => {
  const { agent, fake } = await fakeInstance((cmd) => (cmd === 'guest-fsfreeze-freeze' ? 'silent' : cmd === 'guest-fsfreeze-thaw' ? 1 : {}));
  try {
    const t0 = Date.now();
    const r = await agent.quiesced('vm1', 'auto', async () => 'snap');
    assert.equal(r.result, 'snap');
    assert.equal(r.frozen, false);
    assert.match(r.note ?? '', /did not answer guest-fsfreeze-freeze/);
    assert.ok(Date.now() - t0 < 5000);
    assert.ok(fake.seen.lastIndexOf('guest-fsfreeze-thaw') > fake.seen.indexOf('guest-fsfreeze-freeze'), 'a thaw followed the hung freeze');
  } finally {
    fake.close();
  }
});

test('a good freeze wraps the snapshot: frozen before, thawed after (also when the snapshot fails)', async () => {
  const { agent, fake } = await fakeInstance((cmd) => (cmd === 'guest-fsfreeze-freeze' ? 2 : cmd === 'guest-fsfreeze-thaw' ? 2 : {}));
  try {
    const r = await agent.quiesced('vm1', 'on', async () => {
      assert.equal(fake.seen.at(-1), 'guest-fsfreeze-freeze');
      return 1;
    });
    assert.equal(r.frozen, true);
    assert.equal(fake.seen.at(-1), 'guest-fsfreeze-thaw');
    fake.seen.length = 0;
    await assert.rejects(
      agent.quiesced('vm1', 'auto', async () => {
        throw new Error('snapshot failed');
      }),
      /snapshot failed/,
    );
    assert.deepEqual(
      fake.seen.filter((c) => c.startsWith('guest-fsfreeze')),
      ['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw'],
    );
  } finally {
    fake.close();
  }
});
