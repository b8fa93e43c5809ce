import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FakeDaemon } from './fake-daemon.test-support.js';

const BIN = fileURLToPath(new URL('../../bin/vmkit.js', import.meta.url));

function vmkit(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, VMKIT_REMOTE: '', VMKIT_TOKEN: '', VMKIT_TOKEN_FILE: '', ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 99) : 0, stdout, stderr });
    });
  });
}

test('remotes: added on loopback http, used by name with their token, listed without it, removed; bad ones refused', async () => {
  const cfg = mkdtempSync(join(tmpdir(), 'vmkit-remotes-'));
  const env = { VMKIT_CONFIG_DIR: join(cfg, 'conf') };
  const d = new FakeDaemon();
  const url = await d.listen(true);
  try {
    const tokenFile = join(cfg, 't');
    writeFileSync(tokenFile, 'vmkit_the-token\n');
    d.sync('GET /1.0/auth/whoami', { name: 'ci', role: 'operator', method: 'bearer' });
    d.sync('GET /1.0/types', []);
    const add = await vmkit(['remote', 'add', 'lab', url, '--token-file', tokenFile], env);
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stdout, /Remote lab added .*token "ci" with role operator/);
    const file = join(cfg, 'conf', 'remotes.json');
    assert.equal(statSync(file).mode & 0o777, 0o600, 'the remotes file holds tokens: 0600');
    assert.equal(JSON.parse(readFileSync(file, 'utf8')).remotes.lab.token, 'vmkit_the-token');

    const used = await vmkit(['--remote', 'lab', 'types'], env);
    assert.equal(used.code, 0, used.stderr);
    assert.equal(d.seen.at(-1)!.headers.authorization, 'Bearer vmkit_the-token');
    const byEnv = await vmkit(['types'], { ...env, VMKIT_REMOTE: 'lab' });
    assert.equal(byEnv.code, 0, byEnv.stderr);

    const list = await vmkit(['remote', 'list', '--format', 'json'], env);
    assert.deepEqual(
      JSON.parse(list.stdout).map((r: { name: string; token: boolean }) => [r.name, r.token]),
      [['lab', true]],
    );
    assert.ok(!list.stdout.includes('vmkit_the-token'), 'tokens are not shown');

    const twice = await vmkit(['remote', 'add', 'lab', url], env);
    assert.match(twice.stderr, /VMKIT_ALREADY_EXISTS/);
    const plainFar = await vmkit(['remote', 'add', 'far', 'http://192.0.2.1:8443'], env);
    assert.equal(plainFar.code, 1);
    assert.match(plainFar.stderr, /https:\/\//);
    const unknown = await vmkit(['--remote', 'nope', 'list'], env);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /No remote named "nope"/);

    assert.equal((await vmkit(['remote', 'remove', 'lab'], env)).code, 0);
    assert.match((await vmkit(['remote', 'remove', 'lab'], env)).stderr, /VMKIT_NOT_FOUND/);
  } finally {
    await d.close();
    rmSync(cfg, { recursive: true, force: true });
  }
});
