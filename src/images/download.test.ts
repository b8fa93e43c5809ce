import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmkitError } from '../errors.js';
import { downloadChecked, downloadUrl, validateSha256 } from './download.js';

/** A real HTTP server on 127.0.0.1 that honours Range and can cut the first answer short. */
async function server(body: Buffer, opts: { cutFirstAt?: number; ignoreRange?: boolean } = {}) {
  const ranges: string[] = [];
  let first = true;
  const srv = http.createServer((req, res) => {
    const range = req.headers.range;
    if (range) ranges.push(range);
    const m = /^bytes=(\d+)-$/.exec(range ?? '');
    const from = m && !opts.ignoreRange ? Number(m[1]) : 0;
    const part = body.subarray(from);
    res.writeHead(m && !opts.ignoreRange ? 206 : 200, {
      'content-length': part.length,
      ...(m && !opts.ignoreRange ? { 'content-range': `bytes ${from}-${body.length - 1}/${body.length}` } : {}),
    });
    if (first && opts.cutFirstAt !== undefined) {
      first = false;
      res.write(part.subarray(0, opts.cutFirstAt), () => res.destroy());
      return;
    }
    res.end(part);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const url = new URL(`http://127.0.0.1:${(srv.address() as AddressInfo).port}/disk.qcow2`);
  return { url, ranges, close: () => new Promise((r) => srv.close(r)) };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('a dropped download resumes with a Range request and is checked', async () => {
  const body = randomBytes(3 * 1024 * 1024 + 17);
  const s = await server(body, { cutFirstAt: 1024 * 1024 });
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-dl-'));
  try {
    const part = join(dir, 'x.part');
    await downloadChecked(s.url, sha(body), part);
    assert.ok(readFileSync(part).equals(body), 'byte for byte');
    assert.equal(s.ranges.length, 1, 'one resumed request');
    assert.match(s.ranges[0]!, /^bytes=\d+-$/);
    assert.ok(Number(/\d+/.exec(s.ranges[0]!)![0]) > 0);
  } finally {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a partial file from an earlier run is resumed; a server ignoring Range starts over', async () => {
  const body = randomBytes(256 * 1024);
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-dl-'));
  const s = await server(body);
  const t = await server(body, { ignoreRange: true });
  try {
    const part = join(dir, 'a.part');
    writeFileSync(part, body.subarray(0, 1000));
    await downloadChecked(s.url, sha(body), part);
    assert.deepEqual(s.ranges, ['bytes=1000-']);
    assert.ok(readFileSync(part).equals(body));
    const part2 = join(dir, 'b.part');
    writeFileSync(part2, body.subarray(0, 1000));
    await downloadChecked(t.url, sha(body), part2);
    assert.ok(readFileSync(part2).equals(body), 'not appended to the old bytes');
  } finally {
    await s.close();
    await t.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a checksum mismatch keeps nothing; bad URLs and checksums are refused', async () => {
  const body = randomBytes(4096);
  const s = await server(body);
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-dl-'));
  try {
    const part = join(dir, 'c.part');
    await assert.rejects(downloadChecked(s.url, sha(Buffer.from('other')), part), (e: unknown) => e instanceof VmkitError && e.code === 'VMKIT_CHECKSUM_MISMATCH');
    assert.equal(existsSync(part), false);
  } finally {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
  for (const bad of ['file:///etc/passwd', 'ftp://x/y', 'https://user:pw@host/x', 'not a url']) assert.throws(() => downloadUrl(bad), /not an http\(s\) URL/);
  assert.throws(() => validateSha256('abc'), /64 hex digits/);
  assert.equal(validateSha256('sha256:' + 'A'.repeat(64)), 'a'.repeat(64));
});
