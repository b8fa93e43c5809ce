import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { vmkitError } from '../errors.js';
import { QmpClient, connectWithRetry } from './qmp.js';
import { RUN_FILES, instanceUuid } from './argv.js';

/**
 * Starting and finding QEMU processes. Each one is started in its own session (detached,
 * stdio to a file) so it outlives the daemon; the pid file + the instance's UUID on the
 * command line let a restarted daemon find it again without trusting a reused pid.
 */
export interface LaunchedQemu {
  pid: number;
  qmp: QmpClient;
}

/**
 * Spawns QEMU detached. `prefix` (src/qemu/confine.ts) is put before the argv: it enters the
 * instance's cgroup and drops to the guest's uid, each step an exec, so the pid spawned is
 * QEMU's own.
 */
export async function launchQemu(argv: readonly string[], runDir: string, timeoutMs = 15_000, prefix: readonly string[] = []): Promise<LaunchedQemu> {
  const [binary, ...args] = [...prefix, ...argv];
  const stderrPath = join(runDir, RUN_FILES.stderr);
  const errFd = openSync(stderrPath, 'w');
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const abort = new AbortController();
  let child;
  try {
    child = spawn(binary!, args, { detached: true, stdio: ['ignore', errFd, errFd] });
  } finally {
    closeSync(errFd);
  }
  const spawnError = new Promise<never>((_, reject) =>
    child.once('error', (err: NodeJS.ErrnoException) => {
      abort.abort();
      reject(
        vmkitError('VMKIT_QEMU_MISSING', `Cannot start ${binary}: ${err.message}`, {
          hint: 'Install QEMU (apt-get install qemu-system-x86) or fix PATH; "vmkit doctor" checks the host.',
          cause: err,
        }),
      );
    }),
  );
  child.once('exit', (code, signal) => {
    exited = { code, signal };
    abort.abort();
  });
  child.unref();
  try {
    const qmp = await Promise.race([connectWithRetry(join(runDir, RUN_FILES.qmp), { totalMs: timeoutMs, intervalMs: 20, signal: abort.signal }), spawnError]);
    if (!child.pid) throw new Error('QEMU has no pid');
    return { pid: child.pid, qmp };
  } catch (err) {
    if (child.pid && !exited) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    if ((err as { code?: string }).code === 'VMKIT_QEMU_MISSING') throw err;
    const stderr = (await readFile(stderrPath, 'utf8').catch(() => '')).trim();
    throw vmkitError(
      'VMKIT_QEMU_FAILED',
      `QEMU did not start${exited ? ` (exit ${exited.code ?? exited.signal})` : ''}: ${stderr.split('\n').slice(-3).join(' ') || (err as Error).message}`,
      {
        hint: 'See the instance\'s run folder (qemu.stderr) and "vmkit doctor".',
        cause: err,
      },
    );
  }
}

/** Connects to the QMP socket of a QEMU that is already running (found by findQemuProcess after a daemon restart). */
export function connectToRunningQemu(runDir: string, timeoutMs = 5_000): Promise<QmpClient> {
  return QmpClient.connect(join(runDir, RUN_FILES.qmp), { timeoutMs });
}

export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid from the run folder, only if that process is the QEMU of this instance. */
export async function findQemuProcess(runDir: string, instanceId: string): Promise<number | undefined> {
  const pid = Number((await readFile(join(runDir, RUN_FILES.pid), 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0 || !isProcessAlive(pid)) return undefined;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (!cmdline.split('\0').includes(instanceUuid(instanceId))) return undefined;
  // A zombie still answers kill(0) but has exited.
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (/\) Z /.test(stat)) return undefined;
  return pid;
}

/** Waits until a process is gone (or the time is up); returns whether it is gone. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (!stat || /\) Z /.test(stat)) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The real uid of a process (from /proc/PID/status), or undefined when it is gone. */
export async function processUid(pid: number): Promise<number | undefined> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = /^Uid:\s+(\d+)/m.exec(status);
  return m ? Number(m[1]) : undefined;
}
