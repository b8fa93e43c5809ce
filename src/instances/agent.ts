import { join, posix } from 'node:path';
import { vmkitError } from '../errors.js';
import type { Instance, InstanceAgent } from '../domain/types.js';
import { RUN_FILES } from '../qemu/argv.js';
import { AGENT_HINT, QgaClient, QgaError, type QgaOptions } from '../qemu/qga.js';
import * as ga from '../qemu/guest-agent.js';
import type { InstanceContext } from './registry.js';

/**
 * The guest agent of each instance, as vmkit uses it: exec, file transfer, the guest's own
 * addresses, filesystem freeze around snapshots, shutdown, clock. One session (connection +
 * guest-sync-delimited) per use, one session at a time per instance (QEMU's chardev takes one
 * client). Without an agent every call fails with VMKIT_AGENT_UNAVAILABLE and a hint; the
 * callers that merely prefer it (stop, snapshots, info) fall back.
 */

/** The most a pushed file may be (a guest-file-write per 64 KiB: it is a slow path). */
export const MAX_PUSH_BYTES = 2 * 1024 * 1024 * 1024;
/** Output per stream of `exec` (qemu-ga itself keeps at most 16 MiB). */
export const MAX_EXEC_OUTPUT_BYTES = 16 * 1024 * 1024;
const DEFAULT_EXEC_TIMEOUT_S = 300;
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** How long `info` waits for the agent's addresses before showing the last known ones. */
const INFO_BUDGET_MS = 2_500;

export interface ExecRequest {
  command: string[];
  env?: string[];
  cwd?: string;
  /** Seconds before vmkit stops waiting (the guest process is left running). */
  timeoutS?: number;
  /** Bytes fed to the command's stdin. */
  input?: Buffer;
}

export interface ExecResult {
  exitCode: number;
  signal?: number;
  stdout: Buffer;
  stderr: Buffer;
  truncated: boolean;
  durationMs: number;
}

/** What the agent last said about the guest's network (kept on the runtime; shown by info/list). */
export type AgentSnapshot = InstanceAgent;

export type QuiesceMode = 'auto' | 'on' | 'off';

export interface SessionOptions extends QgaOptions {
  /** The longest wait for another session of the same instance to end. */
  waitMs?: number;
}

export class GuestAgent {
  private readonly locks = new Map<string, Promise<unknown>>();

  /** How long a freeze or a thaw may take before vmkit gives up on it (10 s). */
  private readonly freezeTimeoutMs: number;

  constructor(
    private readonly shared: InstanceContext,
    options: { freezeTimeoutMs?: number } = {},
  ) {
    this.freezeTimeoutMs = options.freezeTimeoutMs ?? 10_000;
  }

  /**
   * Runs `fn` in an agent session of a running instance (one at a time per instance).
   * `waitMs`: give up (VMKIT_AGENT_UNAVAILABLE, busy) rather than wait longer for another
   * session (a file transfer) to end — what stop and snapshots use, so they never queue
   * behind a guest's slow transfer.
   */
  async session<T>(name: string, fn: (c: QgaClient, inst: Instance) => Promise<T>, options: SessionOptions = {}): Promise<T> {
    const inst = await this.shared.registry.load(name);
    if (inst.state === 'paused') {
      throw vmkitError('VMKIT_AGENT_UNAVAILABLE', `Instance "${name}" is paused: its guest agent cannot answer.`, { hint: `Resume it with "vmkit resume ${name}".` });
    }
    if (inst.state !== 'running' || !this.shared.registry.current(name)) {
      throw vmkitError('VMKIT_INVALID_STATE', `Instance "${name}" is not running (it is ${inst.state}).`, { hint: `Start it with "vmkit start ${name}".` });
    }
    return this.open(inst, fn, options);
  }

  private async open<T>(inst: Instance, fn: (c: QgaClient, inst: Instance) => Promise<T>, options: SessionOptions): Promise<T> {
    const name = inst.name;
    const socket = join(this.shared.paths.run(inst.id), RUN_FILES.qga);
    const prev = this.locks.get(name);
    if (prev && options.waitMs !== undefined) {
      const free = await Promise.race([
        prev.then(
          () => true,
          () => true,
        ),
        sleep(options.waitMs).then(() => false),
      ]);
      if (!free) {
        throw vmkitError('VMKIT_AGENT_UNAVAILABLE', `The guest agent of ${name} is busy (a file transfer or another call).`, { hint: 'Try again when it ends.' });
      }
    }
    return this.serialized(name, async () => {
      const c = await QgaClient.connect(socket, options);
      try {
        return await fn(c, inst);
      } finally {
        c.close();
      }
    });
  }

  private serialized<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    this.locks.set(name, next);
    void next
      .finally(() => {
        if (this.locks.get(name) === next) this.locks.delete(name);
      })
      .catch(() => undefined);
    return next;
  }

  private busy(name: string): boolean {
    return this.locks.has(name);
  }

  // ---- exec --------------------------------------------------------------------------------

  async exec(name: string, req: ExecRequest): Promise<ExecResult> {
    if (req.command.length === 0 || req.command[0] === '') throw vmkitError('VMKIT_INVALID_ARGUMENT', 'exec needs a command.', { hint: 'vmkit exec NAME -- CMD [ARG…]' });
    for (const e of req.env ?? []) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(e)) throw vmkitError('VMKIT_INVALID_ARGUMENT', `--env ${JSON.stringify(e)} is not KEY=VALUE.`);
    }
    if (req.cwd !== undefined && !req.cwd.startsWith('/')) throw vmkitError('VMKIT_INVALID_ARGUMENT', `--cwd ${JSON.stringify(req.cwd)} is not an absolute path.`);
    const timeoutMs = Math.min(req.timeoutS ?? DEFAULT_EXEC_TIMEOUT_S, 24 * 3600) * 1000;
    // qemu-ga's guest-exec has no working directory: a shell changes to it, then execs the command.
    const [path, ...args] = req.cwd !== undefined ? ['/bin/sh', '-c', 'cd "$1" && shift && exec "$@"', 'vmkit-exec', req.cwd, ...req.command] : req.command;
    // The agent replaces the environment when one is given: keep a PATH.
    const env = req.env?.length ? (req.env.some((e) => e.startsWith('PATH=')) ? req.env : [`PATH=${DEFAULT_PATH}`, ...req.env]) : undefined;
    const t0 = Date.now();
    const pid = await this.session(name, (c) => ga.execStart(c, { path: path!, args, env, input: req.input }));
    // Each poll is a session of its own: between polls the channel is free for other calls
    // (a stop's guest-shutdown, a snapshot's freeze), however long the command runs.
    let delay = 20;
    for (;;) {
      const s = await this.session(name, (c) => ga.execStatus(c, pid, MAX_EXEC_OUTPUT_BYTES), {
        // Both streams may be up to qemu-ga's 16 MiB each, in base64.
        maxReplyBytes: Math.ceil((2 * MAX_EXEC_OUTPUT_BYTES * 4) / 3) + 4096,
      });
      if (s.exited) {
        const r: ExecResult = {
          exitCode: s.exitCode ?? (s.signal !== undefined ? 128 + s.signal : -1),
          stdout: s.stdout,
          stderr: s.stderr,
          truncated: s.truncated,
          durationMs: Date.now() - t0,
        };
        if (s.signal !== undefined) r.signal = s.signal;
        return r;
      }
      if (Date.now() - t0 > timeoutMs) {
        throw vmkitError('VMKIT_AGENT_TIMEOUT', `"${req.command.join(' ')}" still runs in ${name} after ${Math.round(timeoutMs / 1000)} s (guest pid ${pid}).`, {
          hint: 'vmkit stopped waiting; the process still runs in the guest. Give --timeout to wait longer.',
          details: { pid },
        });
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 500);
    }
  }

  // ---- files -------------------------------------------------------------------------------

  /** Writes `data` (chunks from the caller, e.g. an HTTP body) to `path` in the guest. */
  async push(name: string, path: string, data: AsyncIterable<Buffer | string>, opts: { overwrite?: boolean; mode?: number } = {}): Promise<{ bytes: number; path: string }> {
    checkGuestPath(path);
    if (opts.mode !== undefined && (!Number.isInteger(opts.mode) || opts.mode < 0 || opts.mode > 0o7777))
      throw vmkitError('VMKIT_INVALID_ARGUMENT', 'mode must be an octal permission (0 to 07777).');
    return this.session(name, async (c) => {
      if (!opts.overwrite) {
        const existing = await ga.fileOpen(c, path, 'r').catch(() => undefined);
        if (existing !== undefined) {
          await ga.fileClose(c, existing).catch(() => undefined);
          throw vmkitError('VMKIT_ALREADY_EXISTS', `${path} already exists in ${name}.`, { hint: 'Give --overwrite to replace it.' });
        }
      }
      const handle = await ga.fileOpen(c, path, 'w');
      let bytes = 0;
      let closed = false;
      try {
        let pending: Buffer[] = [];
        let pendingBytes = 0;
        const flush = async (all: boolean): Promise<void> => {
          let buf = Buffer.concat(pending);
          while (buf.length >= ga.FILE_CHUNK_BYTES || (all && buf.length > 0)) {
            const chunk = buf.subarray(0, ga.FILE_CHUNK_BYTES);
            let off = 0;
            while (off < chunk.length) {
              const n = await ga.fileWrite(c, handle, chunk.subarray(off));
              if (n === 0) throw new QgaError('VMKIT_AGENT_ERROR', `guest agent wrote 0 bytes to ${path} (disk full?)`);
              off += n;
            }
            bytes += chunk.length;
            buf = buf.subarray(chunk.length);
          }
          pending = buf.length ? [buf] : [];
          pendingBytes = buf.length;
        };
        for await (const part of data) {
          const b = typeof part === 'string' ? Buffer.from(part) : part;
          pending.push(b);
          pendingBytes += b.length;
          if (bytes + pendingBytes > MAX_PUSH_BYTES) throw vmkitError('VMKIT_INVALID_ARGUMENT', `A pushed file may be at most ${MAX_PUSH_BYTES} bytes.`);
          if (pendingBytes >= ga.FILE_CHUNK_BYTES) await flush(false);
        }
        await flush(true);
        closed = true;
        await ga.fileClose(c, handle);
        if (opts.mode !== undefined) {
          const pid = await ga.execStart(c, { path: 'chmod', args: [opts.mode.toString(8), path] });
          await waitExit(c, pid, 10_000);
        }
        return { bytes, path };
      } catch (err) {
        if (!closed && !c.isClosed) await ga.fileClose(c, handle).catch(() => undefined);
        // Nothing half-written is left behind when the agent can still remove it.
        if (!c.isClosed) {
          const pid = await ga.execStart(c, { path: 'rm', args: ['-f', '--', path] }).catch(() => undefined);
          if (pid !== undefined) await waitExit(c, pid, 5_000).catch(() => undefined);
        }
        throw err;
      }
    });
  }

  /**
   * Opens `path` in the guest for reading; the first chunk is read before this resolves (so a
   * missing file is an error, not an empty download). The session stays open until the
   * iterator ends or is returned.
   */
  async pull(name: string, path: string): Promise<AsyncGenerator<Buffer>> {
    checkGuestPath(path);
    let ready!: (v: { first: { data: Buffer; eof: boolean } }) => void;
    let failed!: (e: unknown) => void;
    const opened = new Promise<{ first: { data: Buffer; eof: boolean } }>((res, rej) => {
      ready = res;
      failed = rej;
    });
    const queue: Array<(v: IteratorResult<Buffer> | Error) => void> = [];
    const chunks: Array<IteratorResult<Buffer> | Error> = [];
    let stop = false;
    let wake: (() => void) | undefined;
    const push = (v: IteratorResult<Buffer> | Error): void => {
      const w = queue.shift();
      if (w) w(v);
      else chunks.push(v);
    };
    void this.session(name, async (c) => {
      const handle = await ga.fileOpen(c, path, 'r');
      try {
        const first = await ga.fileRead(c, handle);
        ready({ first });
        let eof = first.eof;
        while (!eof && !stop) {
          // Back-pressure: at most a few chunks ahead of the consumer.
          while (chunks.length > 4 && !stop) await new Promise<void>((r) => (wake = r));
          if (stop) break;
          const r = await ga.fileRead(c, handle);
          if (r.data.length) push({ value: r.data, done: false });
          eof = r.eof || r.data.length === 0;
        }
        push({ value: undefined, done: true });
      } finally {
        await ga.fileClose(c, handle).catch(() => undefined);
      }
    }).catch((err: unknown) => {
      failed(err);
      push(err instanceof Error ? err : new Error(String(err)));
    });
    const { first } = await opened;
    async function* gen(): AsyncGenerator<Buffer> {
      try {
        if (first.data.length) yield first.data;
        if (first.eof) return;
        for (;;) {
          const v = chunks.length ? chunks.shift()! : await new Promise<IteratorResult<Buffer> | Error>((r) => queue.push(r));
          wake?.();
          if (v instanceof Error) throw v;
          if (v.done) return;
          yield v.value;
        }
      } finally {
        stop = true;
        wake?.();
      }
    }
    return gen();
  }

  // ---- addresses ---------------------------------------------------------------------------

  /**
   * Asks the agent for the guest's interfaces (within `budgetMs`) and keeps the answer on the
   * runtime for info/list. Never throws: no agent is a state, not an error.
   */
  async refresh(name: string, budgetMs = INFO_BUDGET_MS): Promise<void> {
    const rt = this.shared.registry.current(name);
    if (!rt || this.busy(name)) return;
    const inst = await this.shared.registry.loadIfPresent(name);
    if (!inst || inst.state !== 'running') return;
    const sync = Math.max(500, budgetMs - 1000);
    let snap: AgentSnapshot;
    try {
      const answer = await this.session(
        name,
        async (c) => {
          const interfaces = await ga.networkInterfaces(c, 1000);
          // Who the guest is: optional (an agent may lack or refuse these commands), never a reason to call it absent.
          const hostname = await ga.hostName(c, 500).catch(() => undefined);
          const os = await ga.osInfo(c, 500).catch(() => ({}));
          return { interfaces, ...(hostname ? { hostname } : {}), ...os };
        },
        {
          connectTimeoutMs: 500,
          syncTimeoutMs: sync,
          commandTimeoutMs: 1000,
          maxReplyBytes: 1024 * 1024,
        },
      );
      snap = { checkedAt: new Date().toISOString(), available: true, ...answer };
    } catch (err) {
      snap = { checkedAt: new Date().toISOString(), available: false, reason: (err as Error).message.slice(0, 200) };
    }
    if (this.shared.registry.current(name) === rt) rt.agent = snap;
  }

  /** Refreshes the instances whose last answer is older than `maxAgeMs`, in the background. */
  refreshStale(names: string[], maxAgeMs = 10_000): void {
    for (const name of names) {
      const rt = this.shared.registry.current(name);
      if (!rt) continue;
      if (rt.agent && Date.now() - Date.parse(rt.agent.checkedAt) < maxAgeMs) continue;
      void this.refresh(name).catch(() => undefined);
    }
  }

  // ---- snapshots, power, clock -------------------------------------------------------------

  /**
   * Runs `fn` (a snapshot) with the guest's filesystems frozen. `auto`: freeze when an agent
   * answers, else take the snapshot as is (crash-consistent); `on`: no agent is an error.
   * A freeze that fails or does not answer within 10 s is thawed (asked to, at least) and
   * then: `auto` goes on without it, `on` fails. The thaw always runs after `fn`, even when
   * `fn` fails. Returns whether the filesystems were frozen.
   */
  async quiesced<T>(name: string, mode: QuiesceMode, fn: () => Promise<T>): Promise<{ result: T; frozen: boolean; note?: string }> {
    if (mode === 'off') return { result: await fn(), frozen: false };
    let client: QgaClient | undefined;
    let release: (() => void) | undefined;
    let note: string | undefined;
    try {
      const held = new Promise<void>((r) => (release = r));
      const ready = new Promise<QgaClient>((resolve, reject) => {
        void this.session(
          name,
          async (c) => {
            resolve(c);
            await held;
          },
          { syncTimeoutMs: mode === 'auto' ? 2_000 : 5_000, waitMs: 3_000 },
        ).catch(reject);
      });
      client = await ready;
      await ga.fsfreeze(client, this.freezeTimeoutMs);
    } catch (err) {
      note = `no filesystem freeze: ${(err as Error).message}`;
      // A freeze may have half-happened (some filesystems frozen): always thaw. On a broken
      // connection the thaw goes over a new one, once this session has let go of the channel.
      if (client && !client.isClosed) {
        await ga.fsthaw(client, this.freezeTimeoutMs).catch(() => undefined);
        release?.();
      } else {
        release?.();
        if (client) await this.thawFresh(name);
      }
      client = undefined;
      if (mode === 'on') {
        const e = err instanceof QgaError ? err : undefined;
        throw vmkitError(e?.code ?? 'VMKIT_AGENT_ERROR', `Cannot quiesce ${name}: ${(err as Error).message}`, {
          hint: 'Take the snapshot without --quiesce (crash-consistent), or start the guest agent in the guest.',
        });
      }
    }
    try {
      return { result: await fn(), frozen: client !== undefined, ...(note ? { note } : {}) };
    } finally {
      if (client) {
        const ok = await ga.fsthaw(client, this.freezeTimeoutMs).then(
          () => true,
          () => false,
        );
        release?.();
        if (!ok) await this.thawFresh(name);
      }
    }
  }

  /** After restoring a snapshot taken with frozen filesystems: thaw them (tried for ~15 s). */
  async thawAfterRestore(name: string): Promise<void> {
    const t0 = Date.now();
    for (;;) {
      try {
        await this.session(name, (c) => ga.fsthaw(c, this.freezeTimeoutMs), { syncTimeoutMs: 3_000 });
        return;
      } catch (err) {
        if (Date.now() - t0 > 15_000) {
          console.error(`vmkitd: thawing ${name} after a restore: ${(err as Error).message}`);
          return;
        }
        await sleep(500);
      }
    }
  }

  /** A thaw over a new connection (the old one failed); logged when that fails too. */
  private async thawFresh(name: string): Promise<void> {
    await this.session(name, (c) => ga.fsthaw(c, this.freezeTimeoutMs)).catch((err: Error) => console.error(`vmkitd: thawing the filesystems of ${name}: ${err.message}`));
  }

  /**
   * guest-shutdown for a stop in progress (the instance is `stopping`), when an agent answers
   * within ~2 s; false when none does (the caller presses the ACPI button instead).
   */
  async shutdownStopping(name: string): Promise<boolean> {
    const inst = await this.shared.registry.loadIfPresent(name);
    if (!inst || !this.shared.registry.current(name)) return false;
    try {
      await this.open(inst, (c) => ga.shutdown(c), { connectTimeoutMs: 1000, syncTimeoutMs: 2000, waitMs: 2000 });
      return true;
    } catch {
      return false;
    }
  }

  /** Sets the guest clock to the host's after a resume/restore; failures are logged only. */
  syncClock(name: string): void {
    void this.session(name, (c) => ga.setTime(c, BigInt(Date.now()) * 1_000_000n, 5_000), { syncTimeoutMs: 3_000 }).catch((err: Error) => {
      if (!(err instanceof QgaError && err.code === 'VMKIT_AGENT_UNAVAILABLE')) console.error(`vmkitd: setting the clock of ${name}: ${err.message}`);
    });
  }
}

async function waitExit(c: QgaClient, pid: number, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const s = await ga.execStatus(c, pid, 64 * 1024);
    if (s.exited) return s.exitCode ?? -1;
    if (Date.now() - t0 > timeoutMs) throw new QgaError('VMKIT_AGENT_TIMEOUT', `guest command (pid ${pid}) did not end within ${timeoutMs} ms`);
    await sleep(50);
  }
}

function checkGuestPath(path: string): void {
  if (typeof path !== 'string' || !path.startsWith('/') || path.length > 4096 || path.includes('\0')) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `The guest path ${JSON.stringify(String(path).slice(0, 100))} must be absolute (/…).`, {
      hint: 'vmkit file push LOCAL NAME:/path/in/guest',
    });
  }
  if (posix.normalize(path).endsWith('/')) throw vmkitError('VMKIT_INVALID_ARGUMENT', `The guest path ${path} names a folder; give a file name.`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export { AGENT_HINT };
