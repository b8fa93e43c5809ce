import { vmkitError } from '../errors.js';
import type { QmpClient } from './qmp.js';

/**
 * The QMP choreography of QEMU live migration, as plain functions over QMP clients (the
 * cluster code in src/cluster/migration/ decides who does what and when):
 *
 *   target: started with `-incoming defer -S`; for a storage copy `nbd-server-start` +
 *           `block-export-add` (writable) of each disk; then `migrate-incoming tcp:IP:PORT`.
 *   source: for a storage copy `blockdev-add` (nbd client) + `blockdev-mirror` per disk in
 *           write-blocking mode, wait until every job is READY; `migrate-set-parameters`
 *           (downtime limit, bandwidth); `migrate tcp:IP:PORT`; follow `query-migrate` until
 *           completed; then `block-job-cancel` of the READY mirrors (a consistent end without
 *           pivot) and `blockdev-del` of the nbd nodes.
 *   target: `block-export-del` + `nbd-server-stop`, then `cont`: the guest runs only after no
 *           mirror write can race its own writes.
 */

export interface MigrationProgress {
  status: string;
  transferredBytes: number;
  remainingBytes: number;
  totalBytes: number;
  dirtyRatePagesPerSec?: number;
  expectedDowntimeMs?: number;
  setupTimeMs?: number;
}

export interface MigrationResult {
  totalTimeMs: number;
  downtimeMs?: number;
  transferredBytes: number;
}

export interface MirrorJob {
  job: string;
  node: string;
  targetNode: string;
}

interface QueryMigrate {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  'expected-downtime'?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  ram?: { transferred: number; remaining: number; total: number; 'dirty-pages-rate'?: number };
}

interface BlockJobInfo {
  device: string;
  type: string;
  len: number;
  offset: number;
  ready: boolean;
  status?: string;
}

/** QEMU's default cap is 128 MiB/s; between hosts vmkit lets it go as fast as the link. */
export const DEFAULT_MAX_BANDWIDTH = 10 * 1024 ** 3;

export function buildIncomingArgs(): string[] {
  return ['-incoming', 'defer'];
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function cancelledError(): Error {
  return vmkitError('VMKIT_OPERATION_CANCELLED', 'The migration was cancelled; the instance keeps running on its host.', { hint: 'Start it again when ready.' });
}

/**
 * TLS for the migration and NBD streams: an x509 credentials object (`tls-creds-x509`) read
 * from `dir` — ca-cert.pem plus server-cert.pem/server-key.pem (endpoint server) or
 * client-cert.pem/client-key.pem (client) — with the peer's certificate verified against the
 * CA (`verify-peer`). QEMU loads the files when the object is made: the folder may go after.
 */
export async function addTlsCreds(qmp: QmpClient, o: { id: string; dir: string; endpoint: 'client' | 'server' }): Promise<void> {
  await qmp.execute('object-add', { 'qom-type': 'tls-creds-x509', id: o.id, dir: o.dir, endpoint: o.endpoint, 'verify-peer': true });
}

/** TLS of a stream: the credentials object's id, and the name the server's certificate must carry (client side). */
export interface StreamTls {
  creds: string;
  hostname?: string;
}

export async function setMigrationParameters(qmp: QmpClient, p: { downtimeLimitMs?: number; maxBandwidthBytes?: number; tls?: StreamTls }): Promise<void> {
  await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
  const params: Record<string, unknown> = { 'max-bandwidth': p.maxBandwidthBytes ?? DEFAULT_MAX_BANDWIDTH };
  if (p.downtimeLimitMs !== undefined) params['downtime-limit'] = p.downtimeLimitMs;
  if (p.tls) {
    params['tls-creds'] = p.tls.creds;
    if (p.tls.hostname) params['tls-hostname'] = p.tls.hostname;
  }
  await qmp.execute('migrate-set-parameters', params);
}

export async function startIncoming(targetQmp: QmpClient, listen: { host: string; port: number; tls?: StreamTls }): Promise<void> {
  await targetQmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
  if (listen.tls) await targetQmp.execute('migrate-set-parameters', { 'tls-creds': listen.tls.creds });
  await targetQmp.execute('migrate-incoming', { uri: `tcp:${listen.host}:${listen.port}` });
}

export async function startNbdExport(targetQmp: QmpClient, o: { host: string; port: number; nodes: string[]; tls?: StreamTls }): Promise<void> {
  await targetQmp.execute('nbd-server-start', { addr: { type: 'inet', data: { host: o.host, port: String(o.port) } }, ...(o.tls ? { 'tls-creds': o.tls.creds } : {}) });
  for (const node of o.nodes) {
    await targetQmp.execute('block-export-add', { type: 'nbd', id: `mig-${node}`, 'node-name': node, name: node, writable: true });
  }
}

/**
 * Every step is tried; the first failure is thrown at the end for the caller to log. The
 * source ended its mirrors before the switch-over, so a leftover export gets no more writes.
 */
export async function stopNbdExport(targetQmp: QmpClient): Promise<void> {
  let first: unknown;
  const keep = (err: unknown) => void (first ??= err);
  const exports = await targetQmp.execute<Array<{ id: string }>>('query-block-exports').catch((err: unknown) => {
    keep(err);
    return [];
  });
  for (const e of exports) await targetQmp.execute('block-export-del', { id: e.id, mode: 'hard' }).catch(keep);
  await targetQmp.execute('nbd-server-stop').catch(keep);
  if (first !== undefined) throw first;
}

async function blockJobs(qmp: QmpClient): Promise<BlockJobInfo[]> {
  return qmp.execute<BlockJobInfo[]>('query-block-jobs');
}

/** Starts one mirror per disk to the target's NBD exports; resolves when all are READY. */
export async function startMirror(
  sourceQmp: QmpClient,
  o: {
    host: string;
    port: number;
    nodes: Array<{ node: string; exportName: string }>;
    onProgress?: (done: number, total: number) => void;
    signal?: AbortSignal;
    sync?: 'full' | 'top';
    tls?: StreamTls;
  },
): Promise<MirrorJob[]> {
  const jobs: MirrorJob[] = [];
  try {
    for (const n of o.nodes) {
      const targetNode = `mig-nbd-${n.node}`;
      const tls = o.tls ? { 'tls-creds': o.tls.creds, ...(o.tls.hostname ? { 'tls-hostname': o.tls.hostname } : {}) } : {};
      await sourceQmp.execute('blockdev-add', {
        driver: 'nbd',
        'node-name': targetNode,
        server: { type: 'inet', host: o.host, port: String(o.port) },
        export: n.exportName,
        ...tls,
      });
      const job: MirrorJob = { job: `mig-${n.node}`, node: n.node, targetNode };
      // write-blocking: once a block is copied, every guest write reaches the target before it
      // completes, so at switch-over nothing is left to flush.
      await sourceQmp.execute('blockdev-mirror', {
        'job-id': job.job,
        device: n.node,
        target: targetNode,
        sync: o.sync ?? 'full',
        'copy-mode': 'write-blocking',
        'auto-finalize': true,
        'auto-dismiss': true,
      });
      jobs.push(job);
    }
    for (;;) {
      if (o.signal?.aborted) throw cancelledError();
      const list = (await blockJobs(sourceQmp)).filter((j) => jobs.some((x) => x.job === j.device));
      if (list.length < jobs.length)
        throw vmkitError('VMKIT_MIGRATION_FAILED', 'A storage mirror ended before it was in sync (the target stopped answering?).', {
          hint: 'Check the network to the target and retry.',
        });
      o.onProgress?.(
        list.reduce((a, j) => a + j.offset, 0),
        list.reduce((a, j) => a + j.len, 0),
      );
      if (list.every((j) => j.ready)) return jobs;
      await sleep(200);
    }
  } catch (err) {
    // The caller hears why the mirror failed; this clean-up is best effort (abortMirror
    // already tolerates ended jobs), and a node never added cannot be deleted.
    await abortMirror(sourceQmp, jobs).catch(() => undefined);
    for (const n of o.nodes) {
      // Never added (the failure came first) or already gone with its job: nothing to delete.
      await sourceQmp.execute('blockdev-del', { 'node-name': `mig-nbd-${n.node}` }).catch(() => undefined);
    }
    throw err;
  }
}

async function endJobs(sourceQmp: QmpClient, jobs: MirrorJob[], force: boolean): Promise<void> {
  // A job that already ended (the target went away) refuses the cancel: nothing to end.
  for (const j of jobs) await sourceQmp.execute('block-job-cancel', { device: j.job, ...(force ? { force: true } : {}) }).catch(() => undefined);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    // QEMU not answering: there is no job left to wait for.
    const left = (await blockJobs(sourceQmp).catch(() => [])).filter((x) => jobs.some((j) => j.job === x.device));
    if (left.length === 0) break;
    await sleep(50);
  }
  // Refused when the node is gone already, or still held by a job that outlived the wait
  // (QEMU keeps a dead NBD client node until it exits): nothing more to do here either way.
  for (const j of jobs) await sourceQmp.execute('blockdev-del', { 'node-name': j.targetNode }).catch(() => undefined);
}

/** After the memory moved: end the READY mirrors consistently (cancel after READY = no pivot). */
export function finishMirror(sourceQmp: QmpClient, jobs: MirrorJob[]): Promise<void> {
  return endJobs(sourceQmp, jobs, false);
}

export function abortMirror(sourceQmp: QmpClient, jobs: MirrorJob[]): Promise<void> {
  return endJobs(sourceQmp, jobs, true);
}

/** Sends the guest's memory and device state; resolves on `completed` with QEMU's own timings. */
export async function migrate(
  sourceQmp: QmpClient,
  o: { host: string; port: number; onProgress?: (p: MigrationProgress) => void; signal?: AbortSignal; pollMs?: number },
): Promise<MigrationResult> {
  await sourceQmp.execute('migrate', { uri: `tcp:${o.host}:${o.port}` });
  let cancelSent = false;
  for (;;) {
    if (o.signal?.aborted && !cancelSent) {
      cancelSent = true;
      // The poll below reports how the migration ended, cancel refused or not.
      await sourceQmp.execute('migrate_cancel').catch(() => undefined);
    }
    const q = await sourceQmp.execute<QueryMigrate>('query-migrate');
    const status = q.status ?? 'none';
    if (q.ram) {
      o.onProgress?.({
        status,
        transferredBytes: q.ram.transferred,
        remainingBytes: q.ram.remaining,
        totalBytes: q.ram.total,
        dirtyRatePagesPerSec: q.ram['dirty-pages-rate'],
        expectedDowntimeMs: q['expected-downtime'],
        setupTimeMs: q['setup-time'],
      });
    }
    if (status === 'completed') {
      // QEMU 7.2 reports `completed` a moment before it fills in total-time and downtime.
      let done = q;
      for (let i = 0; i < 50 && !done['total-time']; i++) {
        await sleep(10);
        done = await sourceQmp.execute<QueryMigrate>('query-migrate');
      }
      return { totalTimeMs: done['total-time'] ?? 0, downtimeMs: done.downtime, transferredBytes: done.ram?.transferred ?? q.ram?.transferred ?? 0 };
    }
    if (status === 'failed') {
      throw vmkitError('VMKIT_MIGRATION_FAILED', `QEMU failed the migration: ${q['error-desc'] ?? 'no reason given'}.`, { hint: 'Check the network between the hosts and retry.' });
    }
    if (status === 'cancelled' || (cancelSent && status === 'none')) throw cancelledError();
    await sleep(o.pollMs ?? 50);
  }
}

export async function cancelMigration(sourceQmp: QmpClient): Promise<void> {
  // Refused when no migration runs: the poll below returns at once then.
  await sourceQmp.execute('migrate_cancel').catch(() => undefined);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    // QEMU not answering: no migration is left to cancel.
    const q = await sourceQmp.execute<QueryMigrate>('query-migrate').catch(() => ({ status: 'none' }) as QueryMigrate);
    if (!q.status || ['none', 'cancelled', 'failed', 'completed'].includes(q.status)) return;
    await sleep(50);
  }
}

/**
 * Waits until the target QEMU has loaded the whole incoming state, and proves it did: its
 * own `query-migrate` says `completed` and its runstate is paused. `cont` on anything else
 * would boot the guest afresh from its disk (a reboot) instead of resuming it.
 */
export async function awaitIncomingComplete(targetQmp: QmpClient, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let status = (await targetQmp.queryStatus()).status;
  let mig = (await targetQmp.execute<QueryMigrate>('query-migrate')).status ?? 'none';
  while (Date.now() < deadline && (status === 'inmigrate' || mig === 'active' || mig === 'setup')) {
    await sleep(20);
    status = (await targetQmp.queryStatus()).status;
    mig = (await targetQmp.execute<QueryMigrate>('query-migrate')).status ?? 'none';
  }
  if (mig !== 'completed' || (status !== 'paused' && status !== 'postmigrate')) {
    throw vmkitError('VMKIT_MIGRATION_FAILED', `The incoming QEMU has not loaded the guest's state (runstate "${status}", incoming migration "${mig}"); it is not resumed.`, {
      hint: 'The guest keeps running on the source; retry the migration.',
      details: { runstate: status, migration: mig },
    });
  }
}

export async function resumeTarget(targetQmp: QmpClient): Promise<void> {
  await targetQmp.cont();
}
