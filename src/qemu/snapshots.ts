import { fromQemuSnapshot, type InternalSnapshotInfo, type QemuSnapshotJson } from '../storage/qemu-img.js';
import { JOB_TIMEOUT_MS, ROOT_NODE, runJob, saveVm } from './jobs.js';
import type { QmpClient } from './qmp.js';
import { pauseGuest, resumeGuest } from './power.js';

/**
 * Internal qcow2 snapshots of a running QEMU's root disk, over QMP: list them, take a
 * disk-only one, load/delete one (QEMU jobs, see jobs.ts), and the stop/load/cont and
 * stop/save sequences of a live restore and a suspend.
 */

/** The internal snapshots of the root disk, as QEMU's open image has them (query-named-block-nodes). */
export async function listLiveSnapshots(qmp: QmpClient): Promise<InternalSnapshotInfo[]> {
  const nodes = await qmp.execute<Array<{ 'node-name': string; image?: { snapshots?: QemuSnapshotJson[] } }>>('query-named-block-nodes', { flat: true });
  const root = nodes.find((n) => n['node-name'] === ROOT_NODE);
  return (root?.image?.snapshots ?? []).map(fromQemuSnapshot);
}

/** A crash-consistent disk-only snapshot (blockdev-snapshot-internal-sync); the guest runs on. */
export async function snapshotDiskLive(qmp: QmpClient, tag: string): Promise<void> {
  await qmp.execute('blockdev-snapshot-internal-sync', { device: ROOT_NODE, name: tag }, { timeoutMs: JOB_TIMEOUT_MS });
}

/** Loads disk + RAM + device state of `tag` (snapshot-load job); the vCPUs stay stopped. */
export function loadVm(qmp: QmpClient, tag: string): Promise<void> {
  return runJob(qmp, 'snapshot-load', { tag, vmstate: ROOT_NODE, devices: [ROOT_NODE] });
}

/** Deletes the internal snapshot `tag` (snapshot-delete job). */
export function deleteVmSnapshot(qmp: QmpClient, tag: string): Promise<void> {
  return runJob(qmp, 'snapshot-delete', { tag, devices: [ROOT_NODE] });
}

/**
 * Restores `tag` into a live QEMU: stop (when `wasRunning`), load, then cont when `runAfter`.
 * A refused load resumes a guest that was running and rethrows.
 */
export async function restoreLive(qmp: QmpClient, tag: string, wasRunning: boolean, runAfter: boolean): Promise<void> {
  // snapshot-load stops the vCPUs itself; they stay stopped until we say so.
  if (wasRunning) await pauseGuest(qmp);
  try {
    await loadVm(qmp, tag);
  } catch (err) {
    // QEMU checks the tag and its vmstate before it reverts anything, so the usual
    // failures leave the guest as it was: let it go on.
    if (wasRunning) await resumeGuest(qmp).catch((e: Error) => console.error(`vmkitd: resuming the guest after a failed snapshot-load of "${tag}": ${e.message}`));
    throw err;
  }
  if (runAfter) await resumeGuest(qmp);
}

/**
 * Saves the whole VM under `tag` for a suspend, an older save of that tag replaced. The guest
 * is stopped first, so it does not run on between the save and the quit that follows; when
 * the save fails a guest that was running is resumed and the error rethrown.
 */
export async function saveForSuspend(qmp: QmpClient, tag: string, wasRunning: boolean, beforeSave?: () => void): Promise<void> {
  // Stopped first, so the guest does not run on between the save and the quit.
  await pauseGuest(qmp);
  try {
    if ((await listLiveSnapshots(qmp)).some((s) => s.name === tag)) await deleteVmSnapshot(qmp, tag);
    beforeSave?.();
    await saveVm(qmp, tag, true);
  } catch (err) {
    // Nothing was suspended: the guest goes on as it was.
    if (wasRunning) await resumeGuest(qmp).catch((e: Error) => console.error(`vmkitd: resuming the guest after a failed suspend: ${e.message}`));
    throw err;
  }
}
