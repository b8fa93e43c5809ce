import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isIP } from 'node:net';
import { vmkitError } from '../errors.js';
import { run } from '../util/exec.js';

/**
 * The one module that makes keys and certificates (with the `openssl` command line, which
 * every Debian host has). Keys are EC P-256, written 0600; a certificate and its key are
 * written to temporary names and renamed, so a crash never leaves half a pair.
 *
 * Used for the API's HTTPS certificate (self-signed, pinned by clients on first use like
 * `incus remote add`), and for a cluster's own CA and the per-host certificates it signs
 * (mutual TLS between peers, to etcd, and QEMU's migration/NBD streams).
 */
export interface CertPair {
  /** PEM file paths. */
  cert: string;
  key: string;
}

export interface CertOptions {
  commonName: string;
  /** DNS names and IP addresses the certificate is valid for. */
  names?: readonly string[];
  days?: number;
  /** serverAuth + clientAuth (default both: a cluster host is both). */
  usage?: 'server' | 'client' | 'both';
}

const OPENSSL_HINT = 'Install openssl (apt-get install openssl); "vmkit doctor" checks the host.';

async function openssl(args: string[]): Promise<void> {
  await run(['openssl', ...args], { errorCode: 'VMKIT_INTERNAL', hint: OPENSSL_HINT, timeoutMs: 30_000 });
}

function subjectAltName(names: readonly string[]): string {
  return names.map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
}

function extUsage(usage: CertOptions['usage']): string {
  if (usage === 'server') return 'serverAuth';
  if (usage === 'client') return 'clientAuth';
  return 'serverAuth,clientAuth';
}

/** Writes cert+key through a scratch folder beside the target, then renames both in. */
async function produce(pair: CertPair, make: (scratch: CertPair) => Promise<void>): Promise<CertPair> {
  await mkdir(dirname(pair.cert), { recursive: true, mode: 0o700 });
  await mkdir(dirname(pair.key), { recursive: true, mode: 0o700 });
  const dir = await mkdtemp(join(dirname(pair.key), '.pki-'));
  try {
    const scratch = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') };
    await make(scratch);
    await chmod(scratch.key, 0o600);
    await rename(scratch.key, pair.key);
    await rename(scratch.cert, pair.cert);
    return pair;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function newKey(path: string): Promise<void> {
  await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path]);
}

/** A self-signed server certificate (the API's, when none is given). */
export function createSelfSigned(pair: CertPair, opts: CertOptions): Promise<CertPair> {
  return produce(pair, async (s) => {
    await newKey(s.key);
    const names = opts.names?.length ? opts.names : [opts.commonName];
    await openssl([
      'req', '-new', '-x509', '-key', s.key, '-out', s.cert, '-days', String(opts.days ?? 3650), '-subj', `/CN=${opts.commonName}`,
      '-addext', `subjectAltName=${subjectAltName(names)}`,
      '-addext', `extendedKeyUsage=${extUsage(opts.usage ?? 'server')}`,
      '-addext', 'basicConstraints=critical,CA:FALSE',
    ]); // prettier-ignore
  });
}

/** A certificate authority (a cluster's): signs host certificates, nothing else. */
export function createCa(pair: CertPair, commonName: string, days = 3650): Promise<CertPair> {
  return produce(pair, async (s) => {
    await newKey(s.key);
    await openssl([
      'req', '-new', '-x509', '-key', s.key, '-out', s.cert, '-days', String(days), '-subj', `/CN=${commonName}`,
      '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ]); // prettier-ignore
  });
}

/** A certificate signed by `ca` for a host (server and/or client). */
export function issueCertificate(ca: CertPair, pair: CertPair, opts: CertOptions): Promise<CertPair> {
  return produce(pair, async (s) => {
    await newKey(s.key);
    const csr = await createCsr(s.key, opts.commonName);
    await writeFile(s.cert, await signCsr(ca, csr, opts));
  });
}

/**
 * A new key (written 0600 at `keyPath`, through a scratch name) and the PEM certificate
 * signing request for it: what a joining host sends, its key never leaves it.
 */
export async function createKeyAndCsr(keyPath: string, commonName: string): Promise<string> {
  let csr = '';
  await produce({ key: keyPath, cert: `${keyPath}.csr` }, async (s) => {
    await newKey(s.key);
    csr = await createCsr(s.key, commonName);
    await writeFile(s.cert, csr);
  });
  await rm(`${keyPath}.csr`, { force: true });
  return csr;
}

async function createCsr(keyPath: string, commonName: string): Promise<string> {
  const out = `${keyPath}.req`;
  try {
    await openssl(['req', '-new', '-key', keyPath, '-out', out, '-subj', `/CN=${commonName}`]);
    return await readFile(out, 'utf8');
  } finally {
    await rm(out, { force: true });
  }
}

/**
 * Signs a PEM CSR with `ca` and returns the certificate (PEM). The subject and names come from
 * `opts`, never from the request: a joiner gets the name its join token was made for.
 */
export async function signCsr(ca: CertPair, csrPem: string, opts: CertOptions): Promise<string> {
  if (!/^-----BEGIN CERTIFICATE REQUEST-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE REQUEST-----\n?$/.test(csrPem) || csrPem.length > 8192) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', 'The certificate signing request is not one PEM CSR.', { hint: 'Send the CSR vmkit made (openssl req -new).' });
  }
  const dir = await mkdtemp(join(dirname(ca.key), '.sign-'));
  try {
    const csr = join(dir, 'req.csr');
    const ext = join(dir, 'ext.cnf');
    const cert = join(dir, 'cert.pem');
    const names = opts.names?.length ? opts.names : [opts.commonName];
    await writeFile(csr, csrPem);
    await writeFile(
      ext,
      [
        `subjectAltName=${subjectAltName(names)}`,
        `extendedKeyUsage=${extUsage(opts.usage)}`,
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        '',
      ].join('\n'),
    );
    // -verify: the request is signed by the key it carries (the joiner holds that key).
    await openssl(['req', '-in', csr, '-noout', '-verify']);
    await openssl([
      'x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-CAserial', join(dir, 'ca.srl'),
      '-subj', `/CN=${opts.commonName}`, '-out', cert, '-days', String(opts.days ?? 825), '-extfile', ext,
    ]); // prettier-ignore
    return await readFile(cert, 'utf8');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `AB:CD:…` SHA-256 fingerprint of a PEM certificate (what clients pin). */
export function fingerprint(pem: string | Buffer): string {
  return new X509Certificate(pem).fingerprint256;
}

export async function fingerprintOfFile(path: string): Promise<string> {
  return fingerprint(await readFile(path));
}

/** Whether `cert` was signed by `ca` (both PEM). */
export function signedBy(cert: string | Buffer, ca: string | Buffer): boolean {
  try {
    return new X509Certificate(cert).verify(new X509Certificate(ca).publicKey);
  } catch {
    return false;
  }
}

/** Both files of a pair exist. */
export function pairExists(pair: CertPair): boolean {
  return existsSync(pair.cert) && existsSync(pair.key);
}

/** Loads an existing pair or fails with a clear error. */
export async function readPair(pair: CertPair): Promise<{ cert: Buffer; key: Buffer }> {
  try {
    return { cert: await readFile(pair.cert), key: await readFile(pair.key) };
  } catch (err) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `Cannot read the certificate ${pair.cert} or its key ${pair.key}: ${(err as Error).message}`, {
      hint: 'Give readable PEM files (--tls-cert/--tls-key), or remove them to let vmkit generate new ones.',
      cause: err,
    });
  }
}

/** A certificate to list in a CRL: its serial (hex, as X509Certificate.serialNumber) and when it was revoked. */
export interface RevokedCertificate {
  serial: string;
  revokedAt: Date;
}

/** `YYMMDDHHMMSSZ`, the time format of openssl's CA database. */
function caDbTime(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
}

/**
 * A certificate revocation list signed by the CA (PEM), valid for `days`: what etcd's
 * `--client-crl-file` reads. Built with `openssl ca -gencrl` from a throw-away CA database
 * that lists the revoked serials (nothing of it is kept).
 */
export async function createCrl(ca: CertPair, revoked: readonly RevokedCertificate[], days = 30): Promise<string> {
  for (const r of revoked) {
    if (!/^[0-9A-Fa-f]{1,64}$/.test(r.serial)) throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${r.serial}" is not a certificate serial number (hex).`);
  }
  const dir = await mkdtemp(join(dirname(ca.key), '.crl-'));
  try {
    const lines = revoked.map((r) => {
      const serial = r.serial.toUpperCase().padStart(r.serial.length + (r.serial.length % 2), '0');
      // R <expiry> <revocation time> <serial> <file> <subject>: expiry is not read for a CRL.
      return `R\t${caDbTime(new Date(Date.now() + 86_400_000))}\t${caDbTime(r.revokedAt)}\t${serial}\tunknown\t/CN=revoked\n`;
    });
    await writeFile(join(dir, 'index.txt'), lines.join(''));
    await writeFile(join(dir, 'crlnumber'), `${Date.now().toString(16).toUpperCase().padStart(16, '0')}\n`);
    const cnf = join(dir, 'ca.cnf');
    await writeFile(
      cnf,
      [
        '[ca]',
        'default_ca = vmkit',
        '[vmkit]',
        `database = ${join(dir, 'index.txt')}`,
        `crlnumber = ${join(dir, 'crlnumber')}`,
        'default_md = sha256',
        `default_crl_days = ${days}`,
        '',
      ].join('\n'),
    );
    const out = join(dir, 'crl.pem');
    await openssl(['ca', '-gencrl', '-config', cnf, '-cert', ca.cert, '-keyfile', ca.key, '-out', out]);
    return await readFile(out, 'utf8');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
