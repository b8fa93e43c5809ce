import { asVmkitError, vmkitError } from '../errors.js';
import type { ClusterBackend, OwnerRecord } from './types.js';

/**
 * Who owns each instance name in the cluster (`owners/<instance>` in etcd), changed only by
 * compare-and-swap so two hosts never both own one (ClusterManager calls these).
 */

/** Makes `host` the owner of a new instance name (fails if another host owns it). */
export async function claimOwnership(backend: ClusterBackend, host: string, name: string, summary: { image?: string; cpus?: number; memoryMiB?: number }): Promise<void> {
  const record: OwnerRecord = { host, since: new Date().toISOString(), image: summary.image, cpus: summary.cpus, memoryMiB: summary.memoryMiB };
  try {
    await backend.put('owners', name, record, { expectRevision: 0 });
  } catch (err) {
    const e = asVmkitError(err);
    if (e.code !== 'VMKIT_ALREADY_EXISTS') throw e;
    const other = await backend.get<OwnerRecord>('owners', name);
    if (other?.value.host === host) return;
    throw vmkitError('VMKIT_ALREADY_EXISTS', `An instance named "${name}" already exists on cluster host "${other?.value.host}".`, {
      hint: 'Instance names are unique in the whole cluster; choose another.',
    });
  }
}

/** The instance was deleted on `host`: its name is free again (only if `host` owns it). */
export async function releaseOwnership(backend: ClusterBackend, host: string, name: string, log: (line: string) => void): Promise<void> {
  const found = await backend.get<OwnerRecord>('owners', name);
  if (found?.value.host !== host) return;
  await backend
    .delete('owners', name, { expectRevision: found.revision })
    .catch((err: Error) => log(`warning: freeing the name ${name} (owned by ${host}) failed: ${err.message}`));
}

/** Moves ownership from → to, only if nobody changed it since `revision` (compare-and-swap). */
export async function transferOwnership(backend: ClusterBackend, name: string, from: string, to: string, revision: number, summary: Partial<OwnerRecord>): Promise<boolean> {
  const current = await backend.get<OwnerRecord>('owners', name);
  if (!current || current.revision !== revision || current.value.host !== from) return false;
  return backend.txn(
    [{ kind: 'owners', key: name, expectRevision: revision }],
    [{ kind: 'owners', key: name, value: { ...current.value, ...summary, host: to, since: new Date().toISOString() } }],
    [],
  );
}
