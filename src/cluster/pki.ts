import { X509Certificate, createHash, createPrivateKey, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, chown, copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { vmkitError } from '../errors.js';
import { createCa, createKeyAndCsr, fingerprint, issueCertificate, signCsr, signedBy, type CertPair } from '../host/pki.js';

/** PEM contents for a TLS connection: the CA that is trusted, this host's certificate and key. */
export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** What a join token carries (base64url JSON, prefixed `vmkit-join:`). */
export interface JoinToken {
  /** The name the new host gets (its certificate is made for it). */
  name: string;
  /** Members' cluster addresses (HOST:PORT) the joiner may ask. */
  addresses: string[];
  /** SHA-256 fingerprint of the cluster CA: the joiner checks the member's certificate against it. */
  fingerprint: string;
  /** The one-time secret (only its hash is kept, in etcd). */
  secret: string;
  expiresAt: string;
}

const TOKEN_PREFIX = 'vmkit-join:';

export function encodeJoinToken(t: JoinToken): string {
  return TOKEN_PREFIX + Buffer.from(JSON.stringify({ n: t.name, a: t.addresses, f: t.fingerprint, s: t.secret, e: t.expiresAt })).toString('base64url');
}

export function decodeJoinToken(text: string): JoinToken {
  const bad = () =>
    vmkitError('VMKIT_INVALID_ARGUMENT', 'That is not a vmkit join token.', {
      hint: 'Copy the whole token "vmkit cluster add HOST" printed on a member (it starts with vmkit-join:).',
    });
  if (!text.startsWith(TOKEN_PREFIX)) throw bad();
  let j: { n?: unknown; a?: unknown; f?: unknown; s?: unknown; e?: unknown };
  try {
    j = JSON.parse(Buffer.from(text.slice(TOKEN_PREFIX.length), 'base64url').toString('utf8')) as typeof j;
  } catch {
    throw bad();
  }
  if (
    typeof j.n !== 'string' ||
    !Array.isArray(j.a) ||
    j.a.length === 0 ||
    !j.a.every((x) => typeof x === 'string') ||
    typeof j.f !== 'string' ||
    !/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/.test(j.f) ||
    typeof j.s !== 'string' ||
    j.s.length < 32 ||
    typeof j.e !== 'string'
  ) {
    throw bad();
  }
  return { name: j.n, addresses: j.a as string[], fingerprint: j.f, secret: j.s, expiresAt: j.e };
}

/** A fresh one-time secret (256 bits). */
export function newJoinSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** What etcd keeps of a join secret: its SHA-256 (a leaked etcd gives no token). */
export function hashJoinSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function joinSecretMatches(secret: string, hash: string): boolean {
  const a = Buffer.from(hashJoinSecret(secret), 'hex');
  const b = Buffer.from(hash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * The cluster's PKI as one host keeps it, in `<data>/cluster/` (0700): the cluster CA
 * (`ca.pem`, `ca.key` 0600 — every member holds it, see doc/cluster.md) and this host's
 * certificate (`host.pem`, `host.key` 0600), which serves the peer listener, authenticates
 * this host to its peers and to etcd, and is QEMU's for migration and NBD streams.
 * Nothing of it is ever written to etcd.
 */
export class ClusterPki {
  readonly ca: CertPair;
  readonly host: CertPair;
  private cached?: TlsMaterial;

  constructor(readonly dir: string) {
    this.ca = { cert: join(dir, 'ca.pem'), key: join(dir, 'ca.key') };
    this.host = { cert: join(dir, 'host.pem'), key: join(dir, 'host.key') };
  }

  hasCa(): boolean {
    return existsSync(this.ca.cert) && existsSync(this.ca.key);
  }

  hasHost(): boolean {
    return existsSync(this.host.cert) && existsSync(this.host.key);
  }

  private async ensureDir(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
  }

  /** Creates the cluster CA unless this host has one (or adopts the PEM pair given). */
  async ensureCa(given?: { cert: string; key: string }): Promise<void> {
    await this.ensureDir();
    if (given) {
      let ok = false;
      try {
        const x = new X509Certificate(given.cert);
        ok = x.ca && x.checkPrivateKey(createPrivateKey(given.key));
      } catch {
        ok = false;
      }
      if (!ok) throw vmkitError('VMKIT_INVALID_ARGUMENT', 'The CA given is not a CA certificate with its private key.', { hint: 'Pass --ca-cert and --ca-key of one CA (PEM).' });
      if (this.hasCa() && fingerprint(await readFile(this.ca.cert)) !== fingerprint(given.cert)) {
        throw vmkitError('VMKIT_ALREADY_EXISTS', `This host already keeps another cluster CA (${this.ca.cert}).`, {
          hint: 'Leave the cluster and remove that folder first, or init without --ca-cert.',
        });
      }
      await this.writeSecret(this.ca.key, given.key);
      await writeFile(this.ca.cert, given.cert);
      this.cached = undefined;
      return;
    }
    if (!this.hasCa()) await createCa(this.ca, 'vmkit cluster CA');
  }

  /** The CA's fingerprint (what join tokens carry). */
  async caFingerprint(): Promise<string> {
    return fingerprint(await readFile(this.ca.cert));
  }

  /** This host's certificate for `name` reachable at `address`, signed by the cluster CA. */
  async issueHost(name: string, address: string): Promise<void> {
    await issueCertificate(this.ca, this.host, { commonName: name, names: hostNames(name, address), usage: 'both' });
    this.cached = undefined;
  }

  /** A joiner's CSR signed for `name` at `address` (the member's half of a join). */
  async signFor(name: string, address: string, csr: string): Promise<string> {
    return signCsr(this.ca, csr, { commonName: name, names: hostNames(name, address), usage: 'both' });
  }

  /** The joiner's first half: a key that never leaves this host, and its CSR. */
  async newHostKey(name: string): Promise<string> {
    await this.ensureDir();
    this.cached = undefined;
    return createKeyAndCsr(this.host.key, name);
  }

  /** The joiner's second half: the CA and the host certificate a member signed. */
  async install(got: { caCert: string; caKey: string; hostCert: string }, expectedFingerprint: string): Promise<void> {
    if (fingerprint(got.caCert) !== expectedFingerprint || !signedBy(got.hostCert, got.caCert)) {
      throw vmkitError('VMKIT_FORBIDDEN', 'The member answered with a certificate that does not belong to the cluster the token names.', {
        hint: 'Ask for a new token with "vmkit cluster add HOST" on a member and check the address.',
      });
    }
    await this.ensureDir();
    await this.writeSecret(this.ca.key, got.caKey);
    await writeFile(this.ca.cert, got.caCert);
    await writeFile(this.host.cert, got.hostCert);
    this.cached = undefined;
  }

  /** CA, certificate (with the CA after it: joiners see the chain) and key, as TLS wants them. */
  async tls(): Promise<TlsMaterial> {
    if (!this.cached) {
      const ca = await readFile(this.ca.cert);
      this.cached = { ca, cert: await readFile(this.host.cert), key: await readFile(this.host.key) };
    }
    return this.cached;
  }

  /** The chain the peer listener serves: host certificate, then the CA. */
  async chain(): Promise<Buffer> {
    const t = await this.tls();
    return Buffer.concat([t.cert, Buffer.from('\n'), t.ca]);
  }

  /**
   * QEMU's copy for one migration: a folder with the file names `tls-creds-x509` reads
   * (ca-cert.pem, server-cert.pem/-key.pem, client-cert.pem/-key.pem), 0700 and 0600.
   * QEMU reads them when the object is created; the caller removes the folder afterwards.
   * TODO(s-priv): when QEMU runs under its own uid, chown this folder and its files to that
   * uid (`owner`) before the object-add, as for the instance's run folder.
   */
  async qemuCredsDir(dir: string, owner?: { uid: number; gid: number }): Promise<string> {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await copyFile(this.ca.cert, join(dir, 'ca-cert.pem'));
    for (const side of ['server', 'client']) {
      await copyFile(this.host.cert, join(dir, `${side}-cert.pem`));
      await this.writeSecret(join(dir, `${side}-key.pem`), await readFile(this.host.key));
    }
    if (owner) {
      await chown(dir, owner.uid, owner.gid);
      for (const f of await readdir(dir)) await chown(join(dir, f), owner.uid, owner.gid);
    }
    return dir;
  }

  /**
   * A certificate for etcd (server and peer, `names` = its addresses), signed by the cluster
   * CA, which is made first if this host has none yet — etcd needs its certificate before
   * `cluster init` can reach it. Returned as PEM (key included) and not kept here.
   */
  async issueEtcd(names: string[]): Promise<{ caCert: string; cert: string; key: string }> {
    await this.ensureCa();
    const tmp = await mkdtemp(join(this.dir, '.etcd-'));
    try {
      const pair = { cert: join(tmp, 'etcd.pem'), key: join(tmp, 'etcd.key') };
      await issueCertificate(this.ca, pair, { commonName: 'etcd', names, usage: 'both' });
      return { caCert: await readFile(this.ca.cert, 'utf8'), cert: await readFile(pair.cert, 'utf8'), key: await readFile(pair.key, 'utf8') };
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  /** Leaving the cluster: this host's certificate goes (the CA stays, to init again). */
  async forgetHost(): Promise<void> {
    await rm(this.host.cert, { force: true });
    await rm(this.host.key, { force: true });
    this.cached = undefined;
  }

  /** A failed join: the CA it installed goes too (a host that had one keeps it). */
  async forgetCa(): Promise<void> {
    await rm(this.ca.cert, { force: true });
    await rm(this.ca.key, { force: true });
    this.cached = undefined;
  }

  private async writeSecret(path: string, data: string | Buffer): Promise<void> {
    await writeFile(path, data, { mode: 0o600 });
    await chmod(path, 0o600);
  }
}

/** The names a host certificate carries: its address's IP (or DNS name) and its cluster name. */
export function hostNames(name: string, address: string): string[] {
  const host = /^\[?([^\]]+?)\]?:\d+$/.exec(address)?.[1] ?? address;
  return isIP(host) ? [host, name] : [...new Set([host, name])];
}
