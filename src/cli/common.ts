import type { Command } from 'commander';
import { VmkitError, asVmkitError } from '../errors.js';
import type { Operation } from '../domain/types.js';
import { VmkitClient } from './client.js';
import { ProgressLine, renderData, type Format } from './output.js';

/** Options every command accepts (defined on the program, usable before or after the verb). */
export interface GlobalOptions {
  dir?: string;
  remote?: string;
  token?: string;
  format?: Format;
}

/** The global options as seen from a (sub)command. */
export function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals<GlobalOptions>();
}

/** A client for the daemon the global options (or VMKIT_DIR/VMKIT_REMOTE/VMKIT_TOKEN) point at. */
export function clientFor(cmd: Command): VmkitClient {
  const g = globals(cmd);
  return new VmkitClient({ dir: g.dir, remote: g.remote, token: g.token });
}

/** Writes command output to stdout (one place, so tests and future paging hook in here). */
export function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** `/1.0/instances/NAME` with the name escaped. */
export function instancePath(name: string, ...rest: string[]): string {
  return ['/1.0/instances', encodeURIComponent(name), ...rest].join('/');
}

/**
 * Runs one mutating request: when the daemon answers with an operation it is waited for
 * (progress on a TTY) unless `wait` is false. Prints the operation as JSON/YAML when asked,
 * otherwise `done` (e.g. "Instance web1 started.").
 */
export async function mutate(
  cmd: Command,
  method: 'POST' | 'PUT' | 'PATCH' | 'DELETE',
  path: string,
  body: unknown,
  opts: { wait?: boolean; done: string | ((metadata: unknown) => string) },
): Promise<unknown> {
  const client = clientFor(cmd);
  const format = globals(cmd).format;
  const answer = await client.request(method, path, method === 'DELETE' ? undefined : body);
  let result: unknown = answer.metadata;
  if (answer.type === 'async') {
    const op = answer.metadata;
    if (opts.wait === false) {
      if (format === 'json' || format === 'yaml') print(renderData(op, format));
      else print(`Operation ${op.id} started (${op.description}); follow it with: vmkit operation wait ${op.id}`);
      return op;
    }
    result = await waitWithProgress(client, op);
  }
  if (format === 'json' || format === 'yaml') print(renderData(result, format));
  else print(typeof opts.done === 'string' ? opts.done : opts.done(result));
  return result;
}

/** Waits for an operation, redrawing its progress on a TTY, and clears the line afterwards. */
export async function waitWithProgress(client: VmkitClient, op: Operation): Promise<Operation> {
  const progress = new ProgressLine();
  progress.update(op);
  try {
    return await client.waitOperation(op.id, (o) => progress.update(o));
  } finally {
    progress.clear();
  }
}

/** Parses a positive integer option, failing with a usage error the user can act on. */
export function positiveInt(flag: string): (value: string) => number {
  return (value) => {
    if (!/^\d+$/.test(value) || Number(value) <= 0) {
      throw new VmkitError('VMKIT_INVALID_ARGUMENT', `${flag} must be a positive whole number, not ${JSON.stringify(value)}.`, {
        hint: `For example: ${flag} 2`,
      });
    }
    return Number(value);
  };
}

/**
 * Exit codes, so scripts can tell "fix your command" from "start the daemon" from "it broke":
 *   0  success
 *   1  usage or validation error: bad flags/arguments, and every 4xx answer (not found,
 *      conflict, invalid state, unauthorized …)
 *   2  the daemon cannot be reached (VMKIT_DAEMON_UNREACHABLE)
 *   3  anything else: the operation failed on the host (QEMU, storage, timeout, 5xx …), or
 *      `vmkit doctor` found a failing required check
 */
export function exitCodeFor(err: VmkitError): number {
  if (err.code === 'VMKIT_DAEMON_UNREACHABLE') return 2;
  if (err.status >= 400 && err.status < 500) return 1;
  return 3;
}

/** The same mapping for the help epilog. */
export const EXIT_CODES_HELP = `Exit codes:
  0  success
  1  usage or validation error (bad arguments; any 4xx answer such as not found or conflict)
  2  the daemon cannot be reached
  3  other failures (the operation failed on the host, a failing doctor check)`;

/** Prints an error as `Error:`/`Hint:`/`(code …)` (or JSON) on stderr and returns the exit code. */
export function reportError(error: unknown, format: Format | undefined): number {
  const err = asVmkitError(error);
  const code = typeof err.details?.code === 'string' ? err.details.code : err.code;
  if (format === 'json') {
    process.stderr.write(JSON.stringify({ error: { code, message: err.message, hint: err.hint } }) + '\n');
  } else {
    let text = `Error: ${err.message}\n`;
    if (err.hint) text += `Hint: ${err.hint}\n`;
    text += `(code ${code})\n`;
    process.stderr.write(text);
  }
  return exitCodeFor(err);
}
