import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterPki, decodeJoinToken, encodeJoinToken, hashJoinSecret, hostNames, joinSecretMatches, newJoinSecret } from './pki.js';

test("cluster pki: a member signs a joiner's CSR for the name it chose; the joiner installs CA + certificate, keys 0600", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-cpki-'));
  try {
    const member = new ClusterPki(join(dir, 'a'));
    await member.ensureCa();
    await member.issueHost('h1', '10.0.0.1:8444');
    assert.equal(statSync(member.dir).mode & 0o777, 0o700);
    assert.equal(statSync(member.ca.key).mode & 0o777, 0o600);
    assert.equal(statSync(member.host.key).mode & 0o777, 0o600);
    const joiner = new ClusterPki(join(dir, 'b'));
    // The CSR asks for another name: the certificate carries the member's choice.
    const csr = await joiner.newHostKey('evil');
    const cert = await member.signFor('h2', '10.0.0.2:8444', csr);
    const x = new X509Certificate(cert);
    assert.match(x.subject, /CN=h2/);
    assert.match(x.subjectAltName ?? '', /IP Address:10\.0\.0\.2/);
    assert.ok(x.checkPrivateKey(createPrivateKey(readFileSync(joiner.host.key))), "signed for the joiner's own key");
    const fp = await member.caFingerprint();
    await joiner.install({ caCert: readFileSync(member.ca.cert, 'utf8'), caKey: readFileSync(member.ca.key, 'utf8'), hostCert: cert }, fp);
    assert.equal(await joiner.caFingerprint(), fp);
    assert.equal(statSync(joiner.ca.key).mode & 0o777, 0o600);
    // A CA that does not match the token's fingerprint is refused.
    const other = new ClusterPki(join(dir, 'c'));
    await other.ensureCa();
    await assert.rejects(other.install({ caCert: readFileSync(member.ca.cert, 'utf8'), caKey: '', hostCert: cert }, await other.caFingerprint()), { code: 'VMKIT_FORBIDDEN' });
    // QEMU's copy: the five names tls-creds-x509 reads.
    const q = await member.qemuCredsDir(join(dir, 'qemu'));
    assert.deepEqual(readdirSync(q).sort(), ['ca-cert.pem', 'client-cert.pem', 'client-key.pem', 'server-cert.pem', 'server-key.pem']);
    assert.equal(statSync(join(q, 'server-key.pem')).mode & 0o777, 0o600);
    // Not a CSR: refused before openssl sees it.
    await assert.rejects(member.signFor('h3', '10.0.0.3:1', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'), { code: 'VMKIT_INVALID_ARGUMENT' });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('join tokens: round trip; garbage refused; only the hash of the secret is kept', () => {
  const secret = newJoinSecret();
  assert.ok(secret.length >= 43);
  const t = { name: 'h2', addresses: ['10.0.0.1:8444'], fingerprint: Array(32).fill('AB').join(':'), secret, expiresAt: '2030-01-01T00:00:00.000Z' };
  const text = encodeJoinToken(t);
  assert.match(text, /^vmkit-join:[A-Za-z0-9_-]+$/);
  assert.deepEqual(decodeJoinToken(text), t);
  for (const bad of ['', 'vmkit-join:', 'vmkit-join:!!!', `vmkit-join:${Buffer.from('{"n":"x"}').toString('base64url')}`, text.replace('vmkit-join:', 'x:')]) {
    assert.throws(() => decodeJoinToken(bad), { code: 'VMKIT_INVALID_ARGUMENT' }, bad);
  }
  const hash = hashJoinSecret(secret);
  assert.doesNotMatch(hash, new RegExp(secret));
  assert.ok(joinSecretMatches(secret, hash));
  assert.ok(!joinSecretMatches(newJoinSecret(), hash));
  assert.deepEqual(hostNames('h1', '10.0.0.1:8444'), ['10.0.0.1', 'h1']);
  assert.deepEqual(hostNames('h1', 'h1:8444'), ['h1']);
});
