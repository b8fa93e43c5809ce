import { watch, type FSWatcher } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';

/**
 * The serial console log of an instance, kept bounded while the guest runs.
 *
 * QEMU appends everything the guest prints to `console.log` (its chardev opens the file with
 * O_APPEND, `logappend=on`). The daemon cannot make QEMU reopen it, so it rotates by copy and
 * truncate, like logrotate's `copytruncate`: the newest bytes of `console.log` go to
 * `console.log.1` and `console.log` is emptied in place; QEMU's next write lands at its new end.
 * Both files together stay under the cap (default 8 MiB):
 *
 * - `console.log` is rotated once it passes `rotateAt` = 7/16 of the cap (3.5 MiB);
 * - `console.log.1` keeps the last `rotateAt` bytes of it;
 * - the 1/8 of the cap left (1 MiB) is room for what the guest writes between two checks.
 *
 * A check runs on a change of the file (fs.watch, at most one per 25 ms: the watch is re-armed
 * by each check) and every second (a watch can miss events), so a flooding guest is caught
 * within milliseconds at a small cost: ≈ 2% of a CPU against 60 000 one-byte appends a second,
 * where a watch left armed took 24% against 165 000 (measured on a busy 2-core host). The bytes a
 * guest writes between the copy and the truncation (microseconds) are lost, as with logrotate.
 */
export const DEFAULT_CONSOLE_LOG_MAX_BYTES = 8 * 1024 * 1024;
/** Below this a cap cannot hold a useful console (a kernel's boot messages). */
export const MIN_CONSOLE_LOG_MAX_BYTES = 64 * 1024;

export interface ConsoleLogLimits {
  maxBytes: number;
  /** `console.log` is rotated once it is larger. */
  rotateAt: number;
}

export function consoleLogLimits(maxBytes = DEFAULT_CONSOLE_LOG_MAX_BYTES): ConsoleLogLimits {
  const max = Math.max(MIN_CONSOLE_LOG_MAX_BYTES, Math.floor(maxBytes));
  return { maxBytes: max, rotateAt: Math.floor((max * 7) / 16) };
}

/** The file the previous part of the log is kept in. */
export function previousConsoleLog(file: string): string {
  return `${file}.1`;
}

/**
 * Rotates `file` when it is past its limit: its last `rotateAt` bytes go to `file.1`, then it
 * is emptied in place (QEMU keeps appending to the same inode). Returns whether it rotated.
 * A missing file is not an error: QEMU creates it when it starts.
 */
export async function rotateConsoleLog(file: string, limits: ConsoleLogLimits): Promise<boolean> {
  const fh = await open(file, 'r+').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (!fh) return false;
  let kept: Buffer;
  try {
    const { size } = await fh.stat();
    if (size <= limits.rotateAt) return false;
    const n = Math.min(size, limits.rotateAt);
    kept = Buffer.alloc(n);
    const { bytesRead } = await fh.read(kept, 0, n, size - n);
    kept = kept.subarray(0, bytesRead);
    // Truncated at once after the read: what the guest writes in between is what a rotation loses.
    await fh.truncate(0);
  } finally {
    await fh.close();
  }
  await writeFile(previousConsoleLog(file), kept, { mode: 0o640 });
  return true;
}

/** The end of a console: `console.log.1` then `console.log`, the last `tailBytes` bytes of both. */
export async function readConsoleLog(file: string, tailBytes?: number): Promise<string> {
  // No log yet (never started) or no rotation yet: that part is empty.
  const [older, newer] = await Promise.all([readFile(previousConsoleLog(file)).catch(() => Buffer.alloc(0)), readFile(file).catch(() => Buffer.alloc(0))]);
  let all = Buffer.concat([older, newer]);
  if (tailBytes && all.length > tailBytes) all = all.subarray(all.length - tailBytes);
  return all.toString('utf8');
}

const MIN_CHECK_INTERVAL_MS = 25;
const PERIODIC_CHECK_MS = 1_000;

/** Keeps one running instance's console log under its cap until closed. */
export class ConsoleLogCap {
  private watcher?: FSWatcher;
  private timer?: NodeJS.Timeout;
  private delayed?: NodeJS.Timeout;
  private busy = false;
  private again = false;
  private closed = false;
  private lastCheck = 0;
  private lastError = '';

  constructor(
    private readonly file: string,
    private readonly limits: ConsoleLogLimits,
    private readonly log: (msg: string) => void = (msg) => console.error(msg),
  ) {}

  start(): this {
    this.timer = setInterval(() => this.poke(), PERIODIC_CHECK_MS);
    this.timer.unref();
    this.poke();
    return this;
  }

  /** A change was seen (or the periodic tick): check soon, never two checks at once. */
  poke(): void {
    if (this.closed) return;
    if (this.busy || this.delayed) {
      this.again = true;
      return;
    }
    const wait = this.lastCheck + MIN_CHECK_INTERVAL_MS - Date.now();
    if (wait > 0) {
      this.delayed = setTimeout(() => {
        this.delayed = undefined;
        this.poke();
      }, wait);
      this.delayed.unref();
      return;
    }
    this.busy = true;
    this.again = false;
    this.lastCheck = Date.now();
    void this.check().finally(() => {
      this.busy = false;
      if (this.again) this.poke();
    });
  }

  private async check(): Promise<void> {
    try {
      // Watched once QEMU has made the file (it does so at launch); re-armed if the watch died.
      if (!this.watcher) this.watchFile();
      await rotateConsoleLog(this.file, this.limits);
      this.lastError = '';
    } catch (err) {
      // Said once per distinct failure; the next tick tries again.
      const msg = (err as Error).message;
      if (msg !== this.lastError) this.log(`vmkitd: console log ${this.file}: ${msg}`);
      this.lastError = msg;
    }
  }

  /**
   * One change is all a check needs to hear of: the watch is dropped at the first event and
   * armed again by the check. A guest's serial port writes one byte per write(2), so a
   * flooding guest would otherwise wake the daemon a few hundred thousand times a second.
   */
  private watchFile(): void {
    try {
      const w = watch(this.file, { persistent: false }, () => {
        w.close();
        if (this.watcher === w) this.watcher = undefined;
        this.poke();
      });
      w.on('error', () => {
        w.close();
        if (this.watcher === w) this.watcher = undefined;
      });
      this.watcher = w;
    } catch {
      // Not there yet: the periodic check tries again.
    }
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.delayed) clearTimeout(this.delayed);
    this.watcher?.close();
    this.watcher = undefined;
  }
}
