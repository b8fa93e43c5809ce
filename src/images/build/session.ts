import { randomBytes } from 'node:crypto';
import { createConnection, type Socket } from 'node:net';
import { vmkitError } from '../../errors.js';

/**
 * How a build talks to the guest in its build VM. The builder only needs these three verbs,
 * so the transport can change (the serial console today; the QEMU guest agent once it is in
 * the appliance) without touching the builder.
 */
export interface GuestSession {
  /** Runs a shell script (`sh -e`, stdin /dev/null, cwd /); output is stdout+stderr together. */
  run(script: string, opts: { timeoutMs: number; onOutput?: (text: string) => void; signal?: AbortSignal }): Promise<{ exit: number; output: string }>;
  /** Writes a file in the guest (parent folders made), atomically (temporary name, then mv). */
  push(path: string, bytes: Buffer, mode: number): Promise<void>;
  close(): void;
}

/** Bytes of base64 per console line: well under busybox's line limits and the tty buffer. */
const CHUNK = 768;
/** Upper bound on what one copy step sends over the console (≈8 KB/s under TCG). */
export const MAX_PUSH_BYTES = 4 * 1024 * 1024;

/**
 * A GuestSession over the serial console of a guest whose ttyS0 is a root shell (the built-in
 * appliance respawns `sh -i` on it). On connect it finds the shell by sending a probe until its
 * answer comes back. Every command prints markers built so that their echo can never match
 * (`echo "VMKIT_""RC_<nonce>=$?"` prints `VMKIT_RC_<nonce>=0`); a step's output is what
 * comes between its BEGIN and RC markers.
 */
export class SerialSession implements GuestSession {
  private buffer = '';
  private waiters: Array<() => void> = [];
  private closed = false;
  private readonly nonce = randomBytes(6).toString('hex');
  private seq = 0;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buffer += d.replace(/\r/g, '');
      // Keep memory bounded: output is consumed by marker, never needs more than this.
      if (this.buffer.length > 8 * 1024 * 1024) this.buffer = this.buffer.slice(-4 * 1024 * 1024);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  /** Connects to the serial socket and waits until a shell answers (at most `timeoutMs`). */
  static async open(socketPath: string, timeoutMs: number, signal?: AbortSignal): Promise<SerialSession> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = createConnection(socketPath);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    const session = new SerialSession(socket);
    try {
      await session.findShell(timeoutMs, signal);
    } catch (err) {
      session.close();
      throw err;
    }
    return session;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves with the buffer up to and including the first match of `re` (consuming it). */
  private async expect(re: RegExp, timeoutMs: number, signal?: AbortSignal, onChunk?: (text: string) => void): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    let streamed = 0;
    for (;;) {
      const m = re.exec(this.buffer);
      if (m) {
        if (onChunk && m.index > streamed) onChunk(this.buffer.slice(streamed, m.index));
        this.buffer = this.buffer.slice(m.index + m[0].length);
        return m;
      }
      if (onChunk) {
        // Stream whole lines as they come (the marker may still be arriving on the last one).
        const nl = this.buffer.lastIndexOf('\n');
        if (nl + 1 > streamed) {
          onChunk(this.buffer.slice(streamed, nl + 1));
          streamed = nl + 1;
        }
      }
      if (this.closed)
        throw vmkitError('VMKIT_BUILD_FAILED', 'The build VM closed its console (did the guest power off or crash?).', {
          hint: "Look at the build log (vmkit operation show ID) and the step's command.",
        });
      if (signal?.aborted) throw vmkitError('VMKIT_OPERATION_CANCELLED', 'The build was cancelled.');
      const left = deadline - Date.now();
      if (left <= 0)
        throw vmkitError('VMKIT_TIMEOUT', 'The guest did not answer on its console in time.', {
          hint: 'Raise the step\'s "timeout:" (seconds), or look at the guest with --keep-on-failure.',
        });
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 500));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  private send(line: string): void {
    if (this.closed) throw vmkitError('VMKIT_BUILD_FAILED', 'The build VM closed its console.', { hint: 'Look at the build log.' });
    this.socket.write(line + '\n', 'latin1');
  }

  private marker(kind: string): { cmd: string; re: RegExp } {
    const n = `${this.nonce}_${++this.seq}`;
    return { cmd: `echo "VMKIT_""${kind}_${n}=$?"`, re: new RegExp(`VMKIT_${kind}_${n}=(\\d+)\\n`) };
  }

  private async findShell(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const probe = this.marker('HELLO');
    for (;;) {
      this.send('');
      this.send(probe.cmd);
      try {
        await this.expect(probe.re, 1500, signal);
        break;
      } catch (err) {
        if ((err as { code?: string }).code !== 'VMKIT_TIMEOUT') throw err;
        if (Date.now() > deadline) {
          throw vmkitError('VMKIT_BUILD_FAILED', "No shell answered on the build VM's serial console.", {
            hint: "Image builds run steps through a root shell on the guest's serial console, as the built-in appliance (and images built from it) has; use such a base image.",
          });
        }
      }
    }
    // Let the answers to earlier probes arrive, then start from a known point. The shell
    // stays interactive (its echo and prompt are harmless: markers never match their echo,
    // and output is read between two markers); lines stay under its 1024-byte edit limit.
    await new Promise((r) => setTimeout(r, 500));
    const sync = this.marker('SYNC');
    this.send(sync.cmd);
    await this.expect(sync.re, 10_000, signal);
  }

  /** Sends `bytes` as base64 lines into a guest file, one acknowledged line at a time. */
  private async upload(guestFile: string, bytes: Buffer): Promise<void> {
    const b64 = bytes.toString('base64');
    this.send(`: > ${guestFile}.b64`);
    for (let at = 0; at < b64.length || at === 0; at += CHUNK) {
      const m = this.marker('ACK');
      this.send(`printf %s '${b64.slice(at, at + CHUNK)}' >> ${guestFile}.b64; ${m.cmd}`);
      await this.expect(m.re, 30_000);
      if (b64.length === 0) break;
    }
    const m = this.marker('DEC');
    this.send(`base64 -d ${guestFile}.b64 > ${guestFile} && rm -f ${guestFile}.b64; ${m.cmd}`);
    const r = await this.expect(m.re, 60_000);
    if (r[1] !== '0') throw vmkitError('VMKIT_BUILD_FAILED', `Could not write ${guestFile} in the build VM (base64 -d exited ${r[1]}).`, { hint: 'Is /tmp of the guest full?' });
  }

  async run(script: string, opts: { timeoutMs: number; onOutput?: (text: string) => void; signal?: AbortSignal }): Promise<{ exit: number; output: string }> {
    await this.upload('/tmp/.vmkit-step.sh', Buffer.from(script));
    const begin = this.marker('BEGIN');
    const done = this.marker('RC');
    this.send(`${begin.cmd}; (cd / && sh -e /tmp/.vmkit-step.sh) </dev/null 2>&1; ${done.cmd}`);
    await this.expect(begin.re, 30_000);
    let output = '';
    const m = await this.expect(done.re, opts.timeoutMs, opts.signal, (t) => {
      output += t;
      opts.onOutput?.(t);
    });
    return { exit: Number(m[1]), output };
  }

  async push(path: string, bytes: Buffer, mode: number): Promise<void> {
    if (bytes.length > MAX_PUSH_BYTES) {
      throw vmkitError('VMKIT_BUILD_FAILED', `${path}: ${bytes.length} bytes is more than the console can carry (${MAX_PUSH_BYTES} bytes per copy).`, {
        hint: 'Copy smaller files, or fetch large ones from the network in a run step.',
      });
    }
    await this.upload('/tmp/.vmkit-push', bytes);
    const q = shellQuote(path);
    const m = this.marker('PUT');
    this.send(`mkdir -p "$(dirname ${q})" && mv -f /tmp/.vmkit-push ${q} && chmod ${mode.toString(8)} ${q}; ${m.cmd}`);
    const r = await this.expect(m.re, 30_000);
    if (r[1] !== '0') throw vmkitError('VMKIT_BUILD_FAILED', `Could not place ${path} in the build VM (exit ${r[1]}).`, { hint: 'Check the destination path of the copy step.' });
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
    this.wake();
  }
}

/** Single-quotes a string for sh. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
