import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { createCa, createSelfSigned, fingerprint, issueCertificate, signedBy } from './pki.js';

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
