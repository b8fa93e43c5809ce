import { createCrl, type CertPair } from '../host/pki.js';
import type { CertRecord, ClusterBackend, RevokedRecord } from './types.js';

export interface RevokedCertificateView {
  serial: string;
  host: string;
  revokedAt: string;
}

/**
 * `vmkit cluster crl`: a CRL signed by the cluster CA listing every recorded host certificate
 * (`certs/`) of a revoked name (`revoked/`) issued until its revocation — for etcd's
 * `--client-crl-file`, so a revoked host key no longer reaches etcd either (the peer
 * listeners refuse it already).
 */
export async function revocationList(backend: ClusterBackend, ca: CertPair, days: number): Promise<{ crl: string; revoked: RevokedCertificateView[] }> {
  const revokedAt = new Map((await backend.list<RevokedRecord>('revoked')).map((r) => [r.key, r.value.at] as const));
  const revoked: RevokedCertificateView[] = [];
  for (const c of await backend.list<CertRecord>('certs')) {
    const at = revokedAt.get(c.value.name);
    if (at !== undefined && Date.parse(c.value.notBefore) <= Date.parse(at)) revoked.push({ serial: c.key, host: c.value.name, revokedAt: at });
  }
  revoked.sort((a, b) => a.host.localeCompare(b.host) || a.serial.localeCompare(b.serial));
  const crl = await createCrl(
    ca,
    revoked.map((r) => ({ serial: r.serial, revokedAt: new Date(r.revokedAt) })),
    days,
  );
  return { crl, revoked };
}

/**
 * Which host names have revoked certificates, and until when (`revoked/<name>` in etcd, read
 * at registration and kept current by a watch): what the peer listener asks of each client.
 */
export class Revocations {
  private readonly until = new Map<string, number>();

  /** Whether a certificate for `commonName` issued at `notBefore` was revoked. */
  has(commonName: string, notBefore: Date): boolean {
    const at = this.until.get(commonName);
    return at !== undefined && notBefore.getTime() <= at;
  }

  /** Reads them all and follows changes; returns the watch to close. */
  async follow(backend: ClusterBackend): Promise<{ close(): Promise<void> }> {
    for (const r of await backend.list<RevokedRecord>('revoked')) this.until.set(r.key, Date.parse(r.value.at));
    return backend.watch('revoked', (ev) => {
      const at = ev.type === 'put' ? Date.parse((ev.value as RevokedRecord | undefined)?.at ?? '') : NaN;
      if (Number.isFinite(at)) this.until.set(ev.key, at);
      else this.until.delete(ev.key);
    });
  }

  /** Revokes every certificate of `name` issued until now (written by host `by`). */
  async revoke(backend: ClusterBackend, by: string, name: string, why: string, log: (line: string) => void): Promise<RevokedRecord> {
    const record: RevokedRecord = { at: new Date().toISOString(), by, why };
    await backend.put('revoked', name, record);
    this.until.set(name, Date.parse(record.at));
    log(`certificates of host ${name} issued until ${record.at} are revoked (${why})`);
    return record;
  }
}
