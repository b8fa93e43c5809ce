import { spawn } from 'node:child_process';
import { vmkitError, type ErrorCode } from '../errors.js';

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface RunOptions {
  timeoutMs?: number;
  /** Error code used when the program fails (exit code != 0, signal, timeout). */
  errorCode?: ErrorCode;
  hint?: string;
  env?: NodeJS.ProcessEnv;
  /** Do not throw on a non-zero exit; the caller reads `code`. */
  allowFailure?: boolean;
  /** Written to the program's stdin (closed afterwards); without it stdin is /dev/null. */
  input?: string;
  /** Kills the program (SIGKILL); the promise rejects with VMKIT_OPERATION_CANCELLED. */
  signal?: AbortSignal;
  /** Each stdout chunk as it comes (progress output). */
  onStdout?: (chunk: string) => void;
}

/**
 * Runs an external program from an argv array (never a shell string) and collects its
 * output. Missing programs and timeouts become VmkitErrors with a hint.
 */
export function run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('run: empty argv');
  const errorCode = options.errorCode ?? 'VMKIT_INTERNAL';
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(vmkitError('VMKIT_OPERATION_CANCELLED', `Cancelled before ${cmd} started.`, { hint: 'Start the operation again.' }));
      return;
    }
    const child = spawn(cmd, args, { stdio: [options.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let cancelled = false;
    const onAbort = () => {
      cancelled = true;
      child.kill('SIGKILL');
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.input !== undefined) {
      // A program that exits before reading all of stdin makes the write fail: its exit tells why.
      child.stdin!.on('error', () => undefined);
      child.stdin!.end(options.input);
    }
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      options.onStdout?.(d);
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = options.timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, options.timeoutMs)
      : undefined;
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      reject(
        vmkitError(err.code === 'ENOENT' ? 'VMKIT_QEMU_MISSING' : errorCode, `Cannot run ${cmd}: ${err.message}`, {
          cause: err,
          hint: err.code === 'ENOENT' ? `Install the program that provides "${cmd}" (run "vmkit doctor").` : options.hint,
        }),
      );
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      const result = { stdout, stderr, code: code ?? -1 };
      if (cancelled) {
        reject(vmkitError('VMKIT_OPERATION_CANCELLED', `Cancelled: ${cmd} was stopped.`, { hint: 'Start the operation again.' }));
      } else if (timedOut) {
        reject(vmkitError('VMKIT_TIMEOUT', `${cmd} did not finish within ${options.timeoutMs} ms.`, { hint: options.hint }));
      } else if ((code !== 0 || signal) && !options.allowFailure) {
        const why = stderr.trim().split('\n').slice(-3).join(' ') || `exit ${code ?? signal}`;
        reject(vmkitError(errorCode, `${cmd} failed: ${why}`, { hint: options.hint, details: { argv: [...argv] } }));
      } else {
        resolve(result);
      }
    });
  });
}
