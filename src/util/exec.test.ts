import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { run } from './exec.js';

describe('run (the one command runner)', () => {
  it('passes stdin and collects stdout', async () => {
    const r = await run(['cat'], { input: 'one transaction\n' });
    assert.equal(r.stdout, 'one transaction\n');
    assert.equal(r.code, 0);
  });

  it('streams stdout as it comes', async () => {
    const chunks: string[] = [];
    await run(['sh', '-c', 'echo "(50.00/100%)"; sleep 0.05; echo "(100.00/100%)"'], { onStdout: (c) => chunks.push(c) });
    assert.match(chunks.join(''), /\(50\.00\/100%\)[\s\S]*\(100\.00\/100%\)/);
  });

  it('a signal kills the program and rejects as cancelled', async () => {
    const ac = new AbortController();
    const started = Date.now();
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(run(['sleep', '10'], { signal: ac.signal }), (err: Error & { code?: string }) => err.code === 'VMKIT_OPERATION_CANCELLED');
    assert.ok(Date.now() - started < 5_000);
    await assert.rejects(run(['true'], { signal: ac.signal }), (err: Error & { code?: string }) => err.code === 'VMKIT_OPERATION_CANCELLED');
  });

  it('a failing program names its stderr; allowFailure returns the code instead', async () => {
    await assert.rejects(run(['sh', '-c', 'echo broken >&2; exit 3'], { errorCode: 'VMKIT_NETWORK_FAILED' }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'VMKIT_NETWORK_FAILED');
      assert.match(err.message, /broken/);
      return true;
    });
    assert.equal((await run(['sh', '-c', 'exit 3'], { allowFailure: true })).code, 3);
  });
});
