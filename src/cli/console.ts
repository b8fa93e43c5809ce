import { Command } from 'commander';
import WebSocket from 'ws';
import { VmkitError } from '../errors.js';
import { parseAnswer, toVmkitError, type VmkitClient } from './client.js';
import { clientFor, instancePath } from './common.js';

/** Ctrl-] — the telnet/virsh detach key; never meaningful to a serial console. */
export const DETACH_KEY = 0x1d;

/** The streams a console session uses; injectable so the non-TTY mode can be tested. */
export interface ConsoleIO {
  input: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown; destroy?: () => unknown };
  output: NodeJS.WritableStream;
  status: NodeJS.WritableStream;
  /** How long to keep printing guest output after stdin ends (non-TTY mode). */
  drainMs?: number;
}

/**
 * Attaches to the serial console WebSocket. On a TTY: raw mode, Ctrl-] detaches. Otherwise
 * stdin is piped to the guest and the session ends `drainMs` after stdin ends, so scripts
 * and tests can talk to a guest. Resolves when the session is over.
 */
export function runConsole(client: VmkitClient, name: string, io: ConsoleIO): Promise<void> {
  const { input, output, status } = io;
  const tty = input.isTTY === true && typeof input.setRawMode === 'function';
  const ws = new WebSocket(client.websocketUrl(instancePath(name, 'console')), { headers: client.authHeaders(), ...(client.agent ? { agent: client.agent } : {}) });
  return new Promise<void>((resolve, reject) => {
    let finished = false;
    let drainTimer: NodeJS.Timeout | undefined;
    const cleanup = (): void => {
      if (drainTimer) clearTimeout(drainTimer);
      input.removeListener('data', onInput);
      input.removeListener('end', onEnd);
      if (tty) input.setRawMode?.(false);
      input.pause();
    };
    const finish = (err?: unknown): void => {
      if (finished) return;
      finished = true;
      cleanup();
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.terminate();
      if (err) reject(err);
      else resolve();
    };
    const onInput = (chunk: Buffer | string): void => {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      const detach = tty ? buf.indexOf(DETACH_KEY) : -1;
      const data = detach >= 0 ? buf.subarray(0, detach) : buf;
      if (data.length > 0 && ws.readyState === WebSocket.OPEN) ws.send(data);
      if (detach >= 0) {
        status.write(`\r\nDetached from ${name}'s console.\r\n`);
        ws.close(1000);
        finish();
      }
    };
    const onEnd = (): void => {
      drainTimer = setTimeout(() => {
        ws.close(1000);
        finish();
      }, io.drainMs ?? 1000);
    };

    ws.on('open', () => {
      status.write(tty ? `Connected to ${name}'s console; press Ctrl-] to detach.\r\n` : `Connected to ${name}'s console.\n`);
      if (tty) input.setRawMode?.(true);
      input.on('data', onInput);
      input.on('end', onEnd);
      input.resume();
    });
    // Guest output comes in binary frames. A text frame holding an error envelope is how the
    // daemon refuses after the upgrade (then closes with 1008 and the code as reason).
    let refused: VmkitError | undefined;
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (!isBinary) {
        try {
          parseAnswer({ status: 200, contentType: 'application/json', body: buf });
        } catch (err) {
          if (err instanceof VmkitError) {
            refused = err;
            return;
          }
        }
      }
      output.write(buf);
    });
    ws.on('close', (code: number, reason: Buffer) => {
      if (refused) return finish(refused);
      if (code === 1008 || code === 1011) {
        const why = reason.toString() || 'console unavailable';
        return finish(toVmkitError(why.startsWith('VMKIT_') ? why : 'VMKIT_INTERNAL', `The console of ${name} closed: ${why}.`));
      }
      finish();
    });
    ws.on('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          parseAnswer({ status: res.statusCode ?? 500, contentType: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks) });
          finish(new VmkitError('VMKIT_INTERNAL', `The daemon did not open the console (HTTP ${res.statusCode}).`));
        } catch (err) {
          finish(err);
        }
      });
    });
    ws.on('error', (err: Error & { code?: string }) => finish(err.code ? client.connectionError(err) : err));
  });
}

/** `vmkit console NAME`: the interactive serial console. */
export function consoleCommand(): Command {
  return new Command('console')
    .description("Attach to an instance's serial console (Ctrl-] detaches)")
    .argument('<name>', 'instance name')
    .action(async (name: string, _opts: unknown, self: Command) => {
      await runConsole(clientFor(self), name, { input: process.stdin, output: process.stdout, status: process.stderr });
    })
    .addHelpText(
      'after',
      `
When stdin is not a terminal, it is sent to the guest and the command ends about a second
after stdin ends, e.g. to run one command on the guest's console:
  printf 'uname -a\\n' | vmkit console web1

Examples:
  vmkit console web1`,
    );
}
