import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { vmkitError } from '../errors.js';
import type { OperationContext } from '../operations/operations.js';
import { maxImageBytes } from './safety.js';

/** Parses `https://…` (or http://) for a download; anything else is refused. */
export function downloadUrl(text: string): URL {
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:') || url.username || url.password) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${text}" is not an http(s) URL.`, {
      hint: 'Example: https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2',
    });
  }
  return url;
}

export function validateSha256(text: string | undefined): string {
  const hex = (text ?? '').replace(/^sha256:/i, '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', 'A download needs --sha256 with the 64 hex digits of the file.', {
      hint: "Take it from the publisher's SHA256SUMS/SHA512SUMS file (vmkit never runs a file it did not check).",
    });
  }
  return hex;
}

/**
 * Downloads `url` into `part`, resuming what an earlier attempt left (Range request; a
 * server that ignores Range starts over), with byte progress, under the image size quota,
 * then checks its sha256. A mismatch removes the file. Retries a dropped connection 5 times.
 */
export async function downloadChecked(url: URL, sha256: string, part: string, ctx?: OperationContext): Promise<void> {
  await mkdir(dirname(part), { recursive: true });
  const cap = maxImageBytes();
  let lastError: unknown;
  let done = false;
  for (let attempt = 0; attempt < 5 && !done; attempt++) {
    ctx?.checkCancelled();
    const have = await stat(part).then(
      (s) => s.size,
      () => 0,
    );
    try {
      const res = await fetch(url, { headers: have ? { range: `bytes=${have}-` } : {}, signal: ctx?.signal, redirect: 'follow' });
      if (res.status === 416 && have > 0) {
        done = true; // the server says we already have every byte
        break;
      }
      if (!res.ok || !res.body) {
        throw vmkitError('VMKIT_REPO_FAILED', `${url.host} answered ${res.status} for ${url.pathname}.`, { hint: 'Check the URL.' });
      }
      const resumed = res.status === 206 && have > 0;
      const length = Number(res.headers.get('content-length') ?? NaN);
      const total = Number.isFinite(length) ? length + (resumed ? have : 0) : undefined;
      if (total !== undefined && total > cap) {
        throw vmkitError('VMKIT_IMAGE_TOO_LARGE', `${url.pathname} is ${total} bytes, above the ${cap / 1024 ** 3} GiB quota.`, {
          hint: 'Raise VMKIT_MAX_IMAGE_GIB for the daemon if this size is genuine.',
        });
      }
      let n = resumed ? have : 0;
      let last = 0;
      const counter = new Transform({
        transform: (c: Buffer, _e, cb) => {
          n += c.length;
          if (n > cap) return cb(vmkitError('VMKIT_IMAGE_TOO_LARGE', `The download passed the ${cap / 1024 ** 3} GiB quota.`));
          if (Date.now() - last > 250) {
            last = Date.now();
            ctx?.progress({
              phase: `downloading ${url.host}${url.pathname}`,
              percent: total ? Math.min(95, Math.round((n / total) * 95)) : 0,
              bytesDone: n,
              ...(total ? { bytesTotal: total } : {}),
            });
          }
          cb(null, c);
        },
      });
      await pipeline(res.body as unknown as NodeJS.ReadableStream, counter, createWriteStream(part, { flags: resumed ? 'a' : 'w', mode: 0o600 }));
      if (total === undefined || n === total) done = true;
      else lastError = new Error(`connection ended after ${n} of ${total} bytes`);
    } catch (err) {
      if (ctx?.signal.aborted) {
        await rm(part, { force: true });
        throw vmkitError('VMKIT_OPERATION_CANCELLED', 'The download was cancelled; the partial file was removed.');
      }
      const code = (err as { code?: string }).code;
      if (code === 'VMKIT_REPO_FAILED' || code === 'VMKIT_IMAGE_TOO_LARGE') {
        await rm(part, { force: true });
        throw err;
      }
      lastError = err;
      await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
    }
  }
  if (!done) {
    throw vmkitError('VMKIT_REPO_FAILED', `Downloading ${url.href} failed: ${(lastError as Error)?.message ?? 'unknown error'}`, {
      hint: 'Run the import again: it resumes where it stopped.',
    });
  }
  ctx?.progress({ phase: 'verifying sha256', percent: 96 });
  const h = createHash('sha256');
  for await (const c of createReadStream(part, { highWaterMark: 1024 * 1024, signal: ctx?.signal })) h.update(c as Buffer);
  if (h.digest('hex') !== sha256) {
    await rm(part, { force: true });
    throw vmkitError('VMKIT_CHECKSUM_MISMATCH', `${url.href} does not match the sha256 given.`, { hint: 'The download was corrupted or the checksum is wrong; nothing was kept.' });
  }
}
