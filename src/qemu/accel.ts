import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { vmkitError } from '../errors.js';
import { connectWithRetry, type QmpClient } from './qmp.js';

export interface AcceleratorProbe {
  accel: 'kvm' | 'tcg';
  kvm: { devicePresent: boolean; usable: boolean; reason?: string };
}

export interface ProbeOptions {
  /** Defaults to qemu-system-x86_64 found on PATH. */
  qemuBinary?: string;
  /** Upper bound for the whole KVM trial run; on expiry we settle for TCG. */
  timeoutMs?: number;
}

const KVM_DEVICE = '/dev/kvm';
// Long enough for a broken KVM to fail its first KVM_RUN, short enough for `vmkit doctor`.
const SETTLE_MS = 300;

const probeCache = new Map<string, Promise<AcceleratorProbe>>();

/**
 * Absolute path of a QEMU executable on PATH, or null. `vmkit doctor` and the probe use it
 * so that "QEMU is not installed" is reported as such instead of as a spawn failure.
 */
export function findQemuBinary(name: 'qemu-system-x86_64' | 'qemu-img' = 'qemu-system-x86_64'): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.resolve(dir, name);
    if (isExecutableFile(candidate)) return candidate;
  }
  return null;
}

/**
 * Decides which accelerator VMs should use. A present /dev/kvm is not proof that KVM works
 * (nested virtualization, missing VMX in the guest CPU, ...), so this boots an empty VM
 * under KVM and checks it is still running a moment later. Memoized per binary for the
 * process lifetime because the answer does not change and the trial costs ~0.5 s.
 *
 * A qemuBinary that does not exist (or no QEMU on PATH) rejects with VMKIT_QEMU_MISSING
 * rather than answering "tcg": VMs could not run under TCG either, and caching a wrong
 * "tcg" would silently slow every VM started afterwards.
 */
export function probeAccelerator(options: ProbeOptions = {}): Promise<AcceleratorProbe> {
  const qemuBinary = options.qemuBinary ?? findQemuBinary();
  if (qemuBinary === null || !isExecutableFile(qemuBinary)) {
    return Promise.reject(
      vmkitError('VMKIT_QEMU_MISSING', `QEMU binary not found: ${qemuBinary ?? 'qemu-system-x86_64 on PATH'}`, {
        hint: 'Install QEMU (Debian/Ubuntu: apt install qemu-system-x86) or fix the configured path.',
      }),
    );
  }
  let probe = probeCache.get(qemuBinary);
  if (probe === undefined) {
    probe = runProbe(qemuBinary, options.timeoutMs ?? 10_000);
    probeCache.set(qemuBinary, probe);
    // A transient failure must not stick for the rest of the process.
    probe.catch(() => probeCache.delete(qemuBinary));
  }
  return probe;
}

/** Forgets memoized probe results, so tests can probe again with different conditions. */
export function resetAcceleratorProbeCache(): void {
  probeCache.clear();
}

async function runProbe(qemuBinary: string, timeoutMs: number): Promise<AcceleratorProbe> {
  const tcg = (devicePresent: boolean, reason: string): AcceleratorProbe => ({
    accel: 'tcg',
    kvm: { devicePresent, usable: false, reason },
  });

  try {
    statSync(KVM_DEVICE);
  } catch {
    return tcg(false, `no ${KVM_DEVICE} (KVM module not loaded or not exposed to this host)`);
  }
  try {
    await (await open(KVM_DEVICE, 'r+')).close();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    return tcg(true, `${KVM_DEVICE} not usable by this user (${code}); add the user to the kvm group`);
  }

  const failure = await tryKvmGuest(qemuBinary, timeoutMs);
  return failure === null ? { accel: 'kvm', kvm: { devicePresent: true, usable: true } } : tcg(true, failure);
}

/** Boots an empty KVM guest; resolves null when it runs, else the reason it does not. */
async function tryKvmGuest(qemuBinary: string, timeoutMs: number): Promise<string | null> {
  const dir = await mkdtemp(path.join(tmpdir(), 'vmkit-kvm-probe-'));
  const socketPath = path.join(dir, 'qmp.sock');
  const qemu = spawn(
    qemuBinary,
    // `-cpu host` as real instances use it: on some nested hosts KVM runs a guest with the
    // default CPU model but aborts on the host's MSRs.
    [
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-machine',
      'pc,accel=kvm',
      '-cpu',
      'host',
      '-m',
      '16',
      '-S',
      // Commas in an option value must be doubled for QEMU's option parser.
      '-qmp',
      `unix:${socketPath.replaceAll(',', ',,')},server=on,wait=off`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  qemu.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  // Aborted once QEMU is gone, so the connect loop stops waiting for a socket that will never appear.
  const exited = new AbortController();
  const exit = new Promise<void>((resolve) => {
    qemu.once('exit', () => {
      exited.abort(new Error('QEMU exited'));
      resolve();
    });
    // A failed exec emits 'error' and no 'exit'.
    qemu.once('error', (err) => {
      stderr += err.message;
      exited.abort(err);
      resolve();
    });
  });
  const reason = (what: string): string => `${what}${lastError(stderr) ? `: ${lastError(stderr)}` : ''}`;

  let client: QmpClient | undefined;
  const deadline = Date.now() + timeoutMs;
  try {
    client = await connectWithRetry(socketPath, {
      totalMs: timeoutMs,
      intervalMs: 25,
      commandTimeoutMs: timeoutMs,
      signal: exited.signal,
    });
    await client.cont();
    await new Promise((resolve) => setTimeout(resolve, Math.min(SETTLE_MS, Math.max(0, deadline - Date.now()))));
    if (exited.signal.aborted) return reason('QEMU exited after starting the KVM guest');
    const { status } = await client.queryStatus();
    if (status !== 'running') return reason(`KVM guest did not run (status ${status})`);
    return null;
  } catch (err) {
    if (exited.signal.aborted) return reason('QEMU could not start with KVM');
    return reason(`KVM probe failed (${err instanceof Error ? err.message : String(err)})`);
  } finally {
    client?.close();
    if (qemu.exitCode === null && qemu.signalCode === null && qemu.pid !== undefined) {
      qemu.kill('SIGKILL');
      await exit;
    }
    await rm(dir, { recursive: true, force: true });
  }
}

/** QEMU's stderr also carries harmless warnings (e.g. unsupported CPUID bits); the reason is the last real error. */
function lastError(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((line) => line.trim().replace(/^qemu-system-[\w-]+: /, ''))
    .filter((line) => line !== '');
  const errors = lines.filter((line) => !line.startsWith('warning:'));
  return (errors.at(-1) ?? lines.at(-1) ?? '').slice(0, 300);
}

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}
