/**
 * The daemon's last resort for a promise rejection nobody handled. Event handlers (QEMU
 * events, timers) catch, log and retry their store errors themselves; should one slip
 * through, a full or failing disk must not end the daemon (the guests would lose their
 * manager exactly when the host needs it). Any other unhandled rejection is a bug: it is
 * printed with its stack and the daemon exits as Node would, so it is seen and fixed.
 */

const STORAGE_ERRNOS = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS', 'EBUSY']);

/** Whether an error comes from the store or the disk under it (SQLite, the file system, etcd). */
export function isStorageError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  return code.startsWith('SQLITE_') || STORAGE_ERRNOS.has(code) || code === 'VMKIT_CLUSTER_UNAVAILABLE';
}

/**
 * What to do with an unhandled rejection: `continue` after logging a storage error, `exit`
 * after printing anything else with its stack.
 */
export function lastResort(reason: unknown, log: (line: string) => void): 'continue' | 'exit' {
  const err = reason instanceof Error ? reason : new Error(String(reason));
  if (isStorageError(reason)) {
    log(`error: a storage failure nobody handled (${(reason as { code: string }).code}): ${err.message}; the daemon keeps running`);
    return 'continue';
  }
  log(`BUG: unhandled promise rejection, the daemon exits: ${err.stack ?? err.message}`);
  return 'exit';
}

/** Installs lastResort for the daemon process (`vmkit daemon` only: not in tests that embed it). */
export function installLastResort(log: (line: string) => void): void {
  process.on('unhandledRejection', (reason) => {
    if (lastResort(reason, log) === 'exit') process.exit(70);
  });
}
