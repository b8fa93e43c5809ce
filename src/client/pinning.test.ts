import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { normalizeFingerprint, pinnedTransport, presentedCertificate } from './pinning.js';
import { send } from './transport.js';

/** A self-signed certificate made with the openssl command line (as the daemon's pki does). */
function selfSigned(dir: string, name: string): { cert: Buffer; key: Buffer; fingerprint: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', `/CN=${name}`], {
    stdio: 'ignore',
  });
  const pem = readFileSync(cert);
  return { cert: pem, key: readFileSync(key), fingerprint: new X509Certificate(pem).fingerprint256 };
}

describe('certificate pinning', () => {
  let dir: string;
  let server: https.Server;
  let base: URL;
  let served: ReturnType<typeof selfSigned>;
  let other: ReturnType<typeof selfSigned>;
  const seen: Array<string | undefined> = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmkit-pin-'));
    served = selfSigned(dir, 'served');
    other = selfSigned(dir, 'other');
    server = https.createServer({ cert: served.cert, key: served.key }, (req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"type":"sync","metadata":"hello"}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = new URL(`https://127.0.0.1:${(server.address() as AddressInfo).port}`);
  });
  after(async () => {
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads the presented certificate', async () => {
    const cert = await presentedCertificate(base);
    assert.equal(cert.fingerprint, served.fingerprint);
    assert.equal(cert.trusted, false, 'self-signed: no CA vouches for it');
  });

  it('talks to the pinned certificate (in any spelling of the fingerprint)', async () => {
    const res = await send(pinnedTransport(base, served.fingerprint.replace(/:/g, '').toLowerCase(), 'lab'), 'GET', '/1.0', undefined, {
      headers: { authorization: 'Bearer secret' },
    });
    assert.equal(res.status, 200);
    assert.equal(seen.at(-1), 'Bearer secret');
  });

  it('refuses another certificate before sending anything', async () => {
    const before = seen.length;
    await assert.rejects(
      send(pinnedTransport(base, other.fingerprint, 'lab'), 'GET', '/1.0', undefined, { headers: { authorization: 'Bearer secret' } }),
      (err: Error & { code?: string; message: string }) => {
        assert.equal(err.code, 'VMKIT_CERTIFICATE_CHANGED');
        assert.match(err.message, new RegExp(`presented ${served.fingerprint}`));
        assert.match((err as { hint?: string }).hint ?? '', /vmkit remote remove lab && vmkit remote add lab/);
        return true;
      },
    );
    assert.equal(seen.length, before, 'the server got no request (and no token)');
  });

  it('normalizes fingerprints', () => {
    assert.equal(normalizeFingerprint('ab:cd ef'), 'AB:CD:EF');
  });
});
