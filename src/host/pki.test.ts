import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { createCa, createCrl, createSelfSigned, fingerprint, issueCertificate, signedBy } from './pki.js';

test('pki: a self-signed certificate carries its names and is pinned by its fingerprint', async () => {
  const dir = mkdtempSync('/tmp/vmkit-pki-');
  try {
    const pair = await createSelfSigned({ cert: join(dir, 'api.crt'), key: join(dir, 'api.key') }, { commonName: 'vmkit', names: ['localhost', '127.0.0.1'] });
    const x = new X509Certificate(readFileSync(pair.cert));
    assert.match(x.subjectAltName ?? '', /DNS:localhost/);
    assert.match(x.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
    assert.equal(statSync(pair.key).mode & 0o777, 0o600);
    assert.match(fingerprint(readFileSync(pair.cert)), /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('pki: a CA signs host certificates; another CA does not verify them', async () => {
  const dir = mkdtempSync('/tmp/vmkit-pki-');
  try {
    const ca = await createCa({ cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') }, 'vmkit cluster CA');
    const other = await createCa({ cert: join(dir, 'o.crt'), key: join(dir, 'o.key') }, 'someone else');
    const host = await issueCertificate(ca, { cert: join(dir, 'h.crt'), key: join(dir, 'h.key') }, { commonName: 'host1', names: ['10.0.0.1', 'host1'] });
    const pem = readFileSync(host.cert);
    assert.ok(signedBy(pem, readFileSync(ca.cert)));
    assert.ok(!signedBy(pem, readFileSync(other.cert)));
    assert.match(new X509Certificate(pem).subjectAltName ?? '', /IP Address:10\.0\.0\.1/);
    assert.equal(new X509Certificate(readFileSync(ca.cert)).ca, true);
    assert.equal(new X509Certificate(pem).ca, false);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('pki: a CRL signed by the CA revokes the serials it lists and no other', async () => {
  const dir = mkdtempSync('/tmp/vmkit-pki-');
  try {
    const ca = await createCa({ cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') }, 'vmkit cluster CA');
    const gone = await issueCertificate(ca, { cert: join(dir, 'g.crt'), key: join(dir, 'g.key') }, { commonName: 'h4' });
    const kept = await issueCertificate(ca, { cert: join(dir, 'k.crt'), key: join(dir, 'k.key') }, { commonName: 'h2' });
    const serial = new X509Certificate(readFileSync(gone.cert)).serialNumber;
    const crl = await createCrl(ca, [{ serial, revokedAt: new Date() }]);
    assert.match(crl, /^-----BEGIN X509 CRL-----/);
    writeFileSync(join(dir, 'crl.pem'), crl);
    const verify = (cert: string) => spawnSync('openssl', ['verify', '-crl_check', '-CAfile', ca.cert, '-CRLfile', join(dir, 'crl.pem'), cert], { encoding: 'utf8' });
    const r1 = verify(gone.cert);
    assert.notEqual(r1.status, 0, r1.stdout);
    assert.match(r1.stdout + r1.stderr, /revoked/);
    assert.equal(verify(kept.cert).status, 0);
    // An empty list is a valid CRL too (every certificate passes), and garbage is refused.
    writeFileSync(join(dir, 'crl.pem'), await createCrl(ca, []));
    assert.equal(verify(gone.cert).status, 0);
    await assert.rejects(createCrl(ca, [{ serial: '12; rm -rf /', revokedAt: new Date() }]), { code: 'VMKIT_INVALID_ARGUMENT' });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
