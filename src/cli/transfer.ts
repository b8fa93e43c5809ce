import { createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { VmkitError } from '../errors.js';
import type { VmkitClient } from './client.js';
import { formatBytes } from './output.js';

/**
 * Moving bytes between the daemon and a local file for the CLI: `file push|pull` and the
 * remote `image export` share the progress line and the download into place.
 */

/** Counts bytes through a stream and draws "push web1:/x 1.0MiB/4.0MiB" on a TTY's stderr. */
export function progress(label: string, total: number | undefined): Transform {
  let done = 0;
  let last = 0;
  const tty = process.stderr.isTTY === true;
  const draw = (): void => {
    if (!tty) return;
    const pct = total ? ` ${Math.floor((done / total) * 100)}%` : '';
    process.stderr.write(`\r\x1b[K${label} ${formatBytes(done)}${total ? `/${formatBytes(total)}` : ''}${pct}`);
  };
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      done += chunk.length;
      if (Date.now() - last > 100) {
        last = Date.now();
        draw();
      }
      cb(null, chunk);
    },
    flush(cb) {
      if (tty) process.stderr.write('\r\x1b[K');
      cb();
    },
  });
}

/** Refuses a destination that already exists (VMKIT_ALREADY_EXISTS with `hint`). */
export async function refuseExisting(dest: string, hint: string): Promise<void> {
  const exists = await stat(dest).then(
    () => true,
    () => false,
  );
  if (exists) throw new VmkitError('VMKIT_ALREADY_EXISTS', `${dest} already exists.`, { hint });
}

/**
 * GETs `path` from the daemon into `dest`: written under a temporary name beside it (never
 * half a file under the real name), renamed into place once complete, removed on failure.
 * Draws `label`'s progress on a TTY; returns the size written.
 */
export async function downloadFile(client: VmkitClient, path: string, dest: string, label: string): Promise<number> {
  const body = await client.download(path);
  const partial = join(dirname(dest), `.${basename(dest)}.partial-${process.pid}`);
  try {
    await pipeline(body, progress(label, undefined), createWriteStream(partial, { flags: 'wx' }));
    await rename(partial, dest);
  } catch (err) {
    await rm(partial, { force: true });
    throw err;
  }
  return (await stat(dest)).size;
}
