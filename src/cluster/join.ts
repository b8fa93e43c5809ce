import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { vmkitError, asVmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import { joinClient, memberCa, splitAddress } from './peer.js';
import { decodeJoinToken, encodeJoinToken, hashJoinSecret, joinSecretMatches, newJoinSecret, type ClusterPki, type JoinToken } from './pki.js';
import type { CertRecord, ClusterBackend, ClusterConfig, ClusterInfo, JoinAnswer, JoinRecord } from './types.js';

/**
 * Joining a cluster: the arguments of `cluster init`/`join`, and the two sides of the one-time
 * token handshake (the member that made the token, the new host that presents it).
 */

export interface JoinRequest {
  /** init: etcd client URLs (https://, or http:// with insecureEtcd). join: from the member. */
  etcd?: string[];
  /** init: this host's name. join: the token names it. */
  name?: string;
  address: string;
  /** true: init (create the cluster when etcd holds none); false: join with `token`. */
  create: boolean;
  /** join: the one-time token `vmkit cluster add HOST` printed on a member. */
  token?: string;
  /** init: allow http:// etcd endpoints (no TLS, no client certificates). */
  insecureEtcd?: boolean;
  /** init: adopt this CA (PEM) instead of creating one (when etcd's certificates came first). */
  ca?: { cert: string; key: string };
}

/** Default and bounds of a join token's life. */
export const JOIN_TOKEN_TTL_S = 3600;
const JOIN_TOKEN_MAX_TTL_S = 7 * 24 * 3600;

export function checkEtcdUrls(etcd: string[], insecure: boolean | undefined): void {
  if (etcd.length === 0 || etcd.some((e) => !/^https?:\/\/[^/]+$/.test(e))) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `--etcd wants https://HOST:PORT URLs, got "${etcd.join(',')}".`, { hint: 'Example: --etcd https://10.0.0.10:2379' });
  }
  const plain = etcd.filter((e) => e.startsWith('http://'));
  if (plain.length > 0 && !insecure) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `etcd at ${plain.join(', ')} is plain http: anyone who reaches it could rewrite the cluster.`, {
      hint: 'Run etcd with TLS and client certificates (doc/cluster.md shows the flags) and give https:// URLs, or pass --insecure-etcd on a private test network.',
    });
  }
  if (plain.length > 0 && plain.length < etcd.length) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', 'Mixed http:// and https:// etcd endpoints.', { hint: 'Give every endpoint with the same scheme.' });
  }
}

export function tlsWanted(etcd: string[]): boolean {
  return etcd.every((e) => e.startsWith('https://'));
}

/** What a joining host sends the member: the token's secret and a certificate request. */
export interface JoinAsk {
  name: string;
  secret: string;
  csr: string;
  address: string;
}

/** What the member side needs: the cluster store, this host's membership and PKI. */
export interface JoinMember {
  backend: ClusterBackend;
  config: ClusterConfig;
  pki: ClusterPki;
  log(line: string): void;
}

/** The joiner's side: ask the members the token names, in turn, until one answers (a refusal is final). */
export async function askMembers(token: JoinToken, ask: JoinAsk): Promise<JoinAnswer> {
  let lastError: unknown;
  for (const member of token.addresses) {
    try {
      const ca = await memberCa(member, token.fingerprint);
      const res = await joinClient(member, ca).request('POST', '/1.0/internal/join', ask, { timeoutMs: 30_000 });
      return res.metadata as JoinAnswer;
    } catch (err) {
      lastError = err;
      // A refusal is the member's answer: asking another one would not change it.
      if (asVmkitError(err).code !== 'VMKIT_HOST_UNREACHABLE') throw err;
    }
  }
  throw lastError;
}

/**
 * `vmkit cluster add HOST`: a one-time join token for a new host of that name. etcd keeps
 * only the secret's hash; the token (printed once) carries this host's address, the CA's
 * fingerprint and the secret. It expires after `ttlSeconds` and is gone once used.
 */
export async function createJoinToken(
  m: JoinMember,
  name: string,
  ttlSeconds: number,
  otherMembers: () => Promise<string[]>,
): Promise<{ token: string; name: string; expiresAt: string }> {
  validateName(name, 'host name');
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > JOIN_TOKEN_MAX_TTL_S) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `A join token lives 1 s to 7 days, not ${ttlSeconds} s.`, { hint: 'Example: --expires 1h' });
  }
  const { backend } = m;
  if (await backend.get('alive', name)) {
    throw vmkitError('VMKIT_ALREADY_EXISTS', `A live host named "${name}" is already in the cluster.`, { hint: 'Choose another name for the new host.' });
  }
  const secret = newJoinSecret();
  const expiresAt = new Date(Date.now() + ttlSeconds * 1000).toISOString();
  const record: JoinRecord = { hash: hashJoinSecret(secret), expiresAt, createdBy: m.config.name, createdAt: new Date().toISOString() };
  await backend.put('joins', name, record);
  const others = await otherMembers();
  const token = encodeJoinToken({ name, addresses: [m.config.address, ...others], fingerprint: await m.pki.caFingerprint(), secret, expiresAt });
  m.log(`cluster: join token for host "${name}" made (expires ${expiresAt})`);
  return { token, name, expiresAt };
}

/** The member's side of a join: the secret must match an unexpired, unused token for that name. */
export async function acceptJoin(m: JoinMember, req: JoinAsk, from: string): Promise<JoinAnswer> {
  const { backend } = m;
  const refuse = (why: string, hint = `Make a new one with "vmkit cluster add ${req.name}" on a member.`) => {
    m.log(`cluster: join of "${req.name}" from ${from} refused: ${why}`);
    return vmkitError('VMKIT_FORBIDDEN', `Join refused: ${why}.`, { hint });
  };
  validateName(req.name, 'host name');
  splitAddress(req.address);
  const found = await backend.get<JoinRecord>('joins', req.name);
  if (!found || !joinSecretMatches(req.secret, found.value.hash)) throw refuse('the token is wrong or was used already');
  if (Date.parse(found.value.expiresAt) <= Date.now()) {
    await backend.delete('joins', req.name, { expectRevision: found.revision }).catch(() => undefined); // gone already: fine
    throw refuse(`the token expired at ${found.value.expiresAt}`);
  }
  // Single use: whoever deletes it first (compare-and-swap) joins; a replay finds nothing.
  const consumed = await backend.delete('joins', req.name, { expectRevision: found.revision }).catch(() => false);
  if (!consumed) throw refuse('the token was used already');
  const { pki } = m;
  const hostCert = await pki.signFor(req.name, req.address, req.csr);
  // Recorded before it is handed out: a certificate the cluster cannot list cannot be revoked in etcd's CRL.
  await recordCertificate(backend, hostCert);
  const tls = await pki.tls();
  m.log(`cluster: host "${req.name}" (${req.address}) joined through this host from ${from}`);
  return {
    clusterId: m.config.clusterId,
    etcd: m.config.etcd,
    insecureEtcd: m.config.insecureEtcd ?? false,
    caCert: tls.ca.toString('utf8'),
    caKey: await readFile(pki.ca.key, 'utf8'),
    hostCert,
  };
}

export function alreadyJoined(name: string): Error {
  return vmkitError('VMKIT_CLUSTER_NOT_JOINED', `This host is already in a cluster as "${name}".`, { hint: 'Leave it first with "vmkit cluster leave".' });
}

/** Writes `certs/<serial>` for a host certificate the cluster CA signed (idempotent). */
export async function recordCertificate(backend: ClusterBackend, pem: string | Buffer): Promise<void> {
  const x = new X509Certificate(pem);
  const name = /(?:^|\n)CN=([^\n]+)/.exec(x.subject)?.[1] ?? '';
  const record: CertRecord = { name, notBefore: new Date(x.validFrom).toISOString(), notAfter: new Date(x.validTo).toISOString() };
  const have = await backend.get<CertRecord>('certs', x.serialNumber);
  if (!have || have.value.name !== record.name || have.value.notBefore !== record.notBefore) await backend.put('certs', x.serialNumber, record);
}

/** What the joiner's side needs of the cluster manager. */
export interface Joiner {
  pki: ClusterPki;
  /** This host's name when it is in a cluster already. */
  joinedAs(): string | undefined;
  /** The common end of init and join (ClusterManager.enter). */
  enter(c: { name: string; address: string; etcd: string[]; insecureEtcd: boolean }, clusterIdOf: (backend: ClusterBackend) => Promise<string>): Promise<ClusterConfig>;
}

/** The joiner's side: check the member against the token, prove the secret, get a certificate. */
export async function joinWithToken(req: JoinRequest, j: Joiner): Promise<ClusterConfig> {
  if (!req.token) throw vmkitError('VMKIT_INVALID_ARGUMENT', 'Joining needs the token a member printed.', { hint: 'Run "vmkit cluster add HOST" on a member.' });
  const token = decodeJoinToken(req.token);
  const already = j.joinedAs();
  if (already !== undefined) throw alreadyJoined(already);
  if (Date.parse(token.expiresAt) <= Date.now()) {
    throw vmkitError('VMKIT_FORBIDDEN', `This join token expired at ${token.expiresAt}.`, { hint: `Make a new one with "vmkit cluster add ${token.name}" on a member.` });
  }
  const { pki } = j;
  const hadCa = pki.hasCa();
  try {
    const csr = await pki.newHostKey(token.name);
    const a = await askMembers(token, { name: token.name, secret: token.secret, csr, address: req.address });
    await pki.install(a, token.fingerprint);
    return await j.enter({ name: token.name, address: req.address, etcd: a.etcd, insecureEtcd: a.insecureEtcd }, async (backend) => {
      const info = await backend.get<ClusterInfo>('cluster', 'config');
      if (!info || info.value.id !== a.clusterId) {
        throw vmkitError('VMKIT_CLUSTER_NOT_JOINED', `etcd at ${a.etcd.join(', ')} does not hold the cluster the member belongs to.`, {
          hint: 'Check etcd and retry with a new token.',
        });
      }
      return info.value.id;
    });
  } catch (err) {
    // Nothing half-made: the key, certificate and CA this failed join wrote go.
    if (j.joinedAs() === undefined) {
      await pki.forgetHost();
      if (!hadCa) await pki.forgetCa();
    }
    throw err;
  }
}

/** This host's own certificate in `certs/` too (hosts that joined before certificates were recorded); never fails. */
export async function recordOwnCertificate(backend: ClusterBackend, pki: ClusterPki, log: (line: string) => void): Promise<void> {
  try {
    if (pki.hasHost()) await recordCertificate(backend, (await pki.tls()).cert);
  } catch (err) {
    log(`warning: recording this host's certificate failed: ${(err as Error).message}`);
  }
}
