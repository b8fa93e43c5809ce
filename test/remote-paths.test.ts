import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, startTestDaemon, tokenFile, type TestDaemon } from './helpers.js';
import { peerInstance, prepareRequest } from '../dist-unit/cluster/migration/payload.test-support.js';

const TOKEN = 'remote-paths-token-0123456789abcdef';

interface ImageJson {
  name: string;
  disks: Array<{ file: string; format: string }>;
}

/**
 * A remote (TCP) caller never names a path on the daemon's host: import from and export to a
 * host path are refused and create nothing; upload and download do the same work from the
 * client's side and round-trip the bytes. A peer payload naming paths outside the data folder
 * is refused and touches nothing.
 */
describe('remote callers: no host paths, upload and download instead', () => {
  let d: TestDaemon;
  let port: number;
  let url: string;
  let client: string;
  const auth = { authorization: `Bearer ${TOKEN}` };

  before(async () => {
    port = await freePort();
    url = `http://127.0.0.1:${port}`;
    d = await startTestDaemon({ extraArgs: ['--listen', `127.0.0.1:${port}`, '--insecure-http', '--token-file', tokenFile(TOKEN)] });
    client = mkdtempSync('/tmp/vmkit-client-');
  });
  after(async () => {
    await d.stop();
    rmSync(client, { recursive: true, force: true });
  });

  const remote = (args: string[], timeoutMs?: number) => d.cli([...args, '--remote', url, '--token', TOKEN], { timeoutMs });
  const images = () => d.cliJson<ImageJson[]>(['image', 'list']).map((i) => i.name);

  it('refuses import from and export to a host path over TCP, and creates nothing', async () => {
    const hostFile = join(client, 'host-secret.raw');
    writeFileSync(hostFile, Buffer.alloc(1024 * 1024, 7));
    const imagesBefore = images();
    const opsBefore = d.cliJson<unknown[]>(['operation', 'list']).length;

    const imp = await fetch(`${url}/1.0/images`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ source: hostFile, format: 'raw', name: 'stolen' }),
    });
    assert.equal(imp.status, 403);
    const impErr = ((await imp.json()) as { error: { code: string; hint: string } }).error;
    assert.equal(impErr.code, 'VMKIT_FORBIDDEN');
    assert.match(impErr.hint, /upload/i);

    const dest = join(client, `written-by-remote-${randomBytes(3).toString('hex')}.ova`);
    const exp = await fetch(`${url}/1.0/images/appliance/export`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ path: dest }),
    });
    assert.equal(exp.status, 403);
    const expErr = ((await exp.json()) as { error: { code: string; hint: string } }).error;
    assert.equal(expErr.code, 'VMKIT_FORBIDDEN');
    assert.match(expErr.hint, /GET \/1\.0\/images\/appliance\/export/);

    assert.equal(existsSync(dest), false, 'nothing written at the named path');
    assert.deepEqual(images(), imagesBefore, 'no image appeared');
    assert.equal(d.cliJson<unknown[]>(['operation', 'list']).length, opsBefore, 'no operation was started');
    // The same requests on the unix socket are still allowed (local root).
    const local = await d.api<{ type: string }>('POST', '/1.0/images', { source: join(client, 'missing.raw'), format: 'raw', name: 'local-try' });
    assert.equal(local.status, 202);
  });

  it('downloads an image (qcow2 and OVA) to the client and uploads it back: same disk contents', () => {
    const info = d.cliJson<ImageJson>(['image', 'info', 'appliance']);
    const original = join(d.dir, 'images', 'appliance', info.disks[0]!.file);
    const qcow2 = join(client, 'appliance-copy.qcow2');
    const down = remote(['image', 'export', 'appliance', qcow2], 300_000);
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stdout, /downloaded to/);
    const cmp = spawnSync('qemu-img', ['compare', '-f', info.disks[0]!.format, '-F', 'qcow2', original, qcow2], { encoding: 'utf8' });
    assert.equal(cmp.status, 0, `downloaded disk differs: ${cmp.stdout}${cmp.stderr}`);

    const ova = join(client, 'appliance.ova');
    const downOva = remote(['image', 'export', 'appliance', ova], 300_000);
    assert.equal(downOva.code, 0, downOva.stderr);
    const tar = spawnSync('tar', ['-tf', ova], { encoding: 'utf8' });
    assert.equal(tar.status, 0, tar.stderr);
    assert.match(tar.stdout, /\.ovf\n/);
    assert.match(tar.stdout, /\.vmdk\n/);
    // A second download to the same file is refused on the client (never overwritten).
    const again = remote(['image', 'export', 'appliance', ova]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /VMKIT_ALREADY_EXISTS/);

    const up = remote(['image', 'import', qcow2, '--name', 'roundtrip'], 300_000);
    assert.equal(up.code, 0, up.stderr);
    const back = d.cliJson<ImageJson>(['image', 'info', 'roundtrip']);
    const cmp2 = spawnSync('qemu-img', ['compare', '-f', info.disks[0]!.format, '-F', back.disks[0]!.format, original, join(d.dir, 'images', 'roundtrip', back.disks[0]!.file)], {
      encoding: 'utf8',
    });
    assert.equal(cmp2.status, 0, `uploaded disk differs: ${cmp2.stdout}${cmp2.stderr}`);
    const upOva = remote(['image', 'import', ova, '--name', 'roundtrip-ova'], 300_000);
    assert.equal(upOva.code, 0, upOva.stderr);
    // Nothing of the downloads stays on the daemon's host.
    assert.deepEqual(
      readdirSync(join(d.dir, 'images')).filter((e) => e.startsWith('.tmp-download')),
      [],
    );
  });

  it('peer payloads (../ ids, absolute disk paths) do not reach the API listener at all; nothing created or removed', async () => {
    const tag = randomBytes(4).toString('hex');
    const victim = join(client, `victim-${tag}`);
    writeFileSync(victim, 'keep me');
    const escape = `../../vmkit-escape-${tag}`;
    const instance = (over: Record<string, unknown>) => peerInstance({ host: 'peer', ...over });
    const prepare = (inst: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
      prepareRequest(inst, { id: randomBytes(8).toString('hex'), source: 'peer', sourceIp: '127.0.0.1', ...extra });
    const cases = [
      prepare(instance({ id: escape })),
      prepare(instance({ id: victim })),
      prepare(instance({ disks: [{ name: 'root', file: `../../${tag}.qcow2`, format: 'qcow2' }] })),
      prepare(instance({ disks: [{ name: 'root', file: victim, format: 'qcow2' }] }), { sharedDisks: true }),
      prepare(instance({}), { id: escape }),
    ];
    for (const body of cases) {
      const r = await fetch(`${url}/1.0/internal/migrations`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      // The API listener does not serve host-to-host routes at all (only the cluster's mutual-TLS
      // peer listener does, and validates them: src/api/origin.test.ts), whatever the token.
      assert.equal(r.status, 404, `${JSON.stringify(body)} → ${r.status}`);
      const code = ((await r.json()) as { error: { code: string } }).error.code;
      assert.equal(code, 'VMKIT_NOT_FOUND');
    }
    for (const [method, path] of [
      ['DELETE', `/1.0/internal/migrations/${encodeURIComponent(escape)}`],
      ['PUT', `/1.0/internal/migrations/x/disks/${encodeURIComponent(escape)}`],
    ] as const) {
      const r = await fetch(`${url}${path}`, { method, headers: { ...auth, 'content-type': 'application/octet-stream' }, body: method === 'PUT' ? 'data' : undefined });
      assert.equal(r.status, 404, `${method} ${path}`);
    }
    assert.equal(existsSync(join(d.dir, 'instances', escape)), false);
    assert.equal(existsSync(join('/tmp', `vmkit-escape-${tag}`)), false);
    assert.equal(readFileSync(victim, 'utf8'), 'keep me');
    assert.deepEqual(d.cliJson<unknown[]>(['list']), []);
    assert.deepEqual(
      readdirSync(join(d.dir, 'instances')).filter((e) => !e.startsWith('.')),
      [],
    );
  });
});
