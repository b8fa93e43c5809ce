import type { QmpClient, QmpStatus } from './qmp.js';

/**
 * The run state of a QEMU process over QMP: let the vCPUs run or stop them, ask the guest to
 * power off, make QEMU exit, and read where it stands. Callers decide when; these say how.
 */

/** QEMU's run state (`running`, `paused`, `prelaunch`, `postmigrate`, `inmigrate` …). */
export function queryRunState(qmp: QmpClient): Promise<QmpStatus> {
  return qmp.queryStatus();
}

/** Lets the vCPUs run (QMP `cont`): after a `-S` launch, a pause, a load or a failed migration. */
export function resumeGuest(qmp: QmpClient): Promise<void> {
  return qmp.cont();
}

/** Stops the vCPUs (QMP `stop`); the process and its devices stay. */
export function pauseGuest(qmp: QmpClient): Promise<void> {
  return qmp.stop();
}

/** Presses the ACPI power button; the guest decides whether and when to shut down. */
export function requestPowerdown(qmp: QmpClient): Promise<void> {
  return qmp.systemPowerdown();
}

/** Makes QEMU exit at once (QMP `quit`); a connection dropped before the reply counts as done. */
export function quitQemu(qmp: QmpClient): Promise<void> {
  return qmp.quit();
}

/** Which accelerator the running QEMU uses: KVM when `query-kvm` says it is enabled. */
export async function acceleratorInUse(qmp: QmpClient): Promise<'kvm' | 'tcg'> {
  return (await qmp.queryKvm()).enabled ? 'kvm' : 'tcg';
}
