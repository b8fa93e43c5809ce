import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { confinePath, isConfined, isSafeSegment } from './confine.js';

describe('confinePath: paths from requests and peers stay inside their folder', () => {
  let top: string;
  let root: string;
  let outside: string;

  before(() => {
    top = mkdtempSync(join(tmpdir(), 'vmkit-confine-'));
    root = join(top, 'data');
    outside = join(top, 'elsewhere');
    mkdirSync(join(root, 'instances', 'abc'), { recursive: true });
    mkdirSync(outside);
    writeFileSync(join(outside, 'secret'), 'x');
    symlinkSync(outside, join(root, 'instances', 'link-out'));
    symlinkSync(join(root, 'instances', 'abc'), join(root, 'instances', 'link-in'));
    symlinkSync(join(outside, 'missing'), join(root, 'dangling'));
  });
  after(() => rmSync(top, { recursive: true, force: true }));

  const refused = (p: string, opts?: { allowRoot?: boolean }) =>
    assert.throws(
      () => confinePath(root, p, 'test path', opts),
      (e: { code?: string }) => e.code === 'VMKIT_PATH_FORBIDDEN',
      p,
    );

  it('accepts relative and absolute paths inside, existing or not', () => {
    assert.equal(confinePath(root, 'instances/abc'), join(root, 'instances', 'abc'));
    assert.equal(confinePath(root, join(root, 'instances', 'abc', 'root.qcow2')), join(root, 'instances', 'abc', 'root.qcow2'));
    assert.equal(confinePath(root, 'instances/new/deeper/file'), join(root, 'instances', 'new', 'deeper', 'file'));
    // `..` that stays inside is folded, not refused.
    assert.equal(confinePath(root, 'instances/abc/../abc/x'), join(root, 'instances', 'abc', 'x'));
  });

  it('refuses .. out of the folder', () => {
    refused('..');
    refused('../elsewhere/secret');
    refused('instances/../../elsewhere');
    refused('instances/abc/../../../x');
    refused(join(root, '..', 'elsewhere'));
  });

  it('refuses absolute paths outside, and look-alike prefixes', () => {
    refused('/etc/passwd');
    refused(outside);
    refused(`${root}-other/x`);
    refused(`${root}x`);
  });

  it('refuses the folder itself unless allowed', () => {
    refused('');
    refused('.');
    refused(root);
    refused('instances/..');
    assert.equal(confinePath(root, '.', 'root', { allowRoot: true }), root);
  });

  it('refuses symbolic links that lead out, follows those that stay in', () => {
    refused('instances/link-out');
    refused('instances/link-out/secret');
    refused('instances/link-out/new-file');
    assert.equal(confinePath(root, 'instances/link-in/file'), join(root, 'instances', 'abc', 'file'));
    // A dangling link cannot be checked (a write would follow it): refused.
    refused('dangling');
    refused('dangling/below');
  });

  it('refuses NUL bytes and non-strings', () => {
    refused('instances/abc\0/x');
    assert.equal(isConfined(root, 'instances/abc'), true);
    assert.equal(isConfined(root, '/etc'), false);
  });

  it('safe segments: names only', () => {
    for (const ok of ['abc', 'root.qcow2', 'a-b_c.1', '0123456789ab']) assert.equal(isSafeSegment(ok), true, ok);
    for (const bad of ['', '.', '..', '../x', 'a/b', '/abs', '.hidden', 'a..b', 'x\0', 5]) assert.equal(isSafeSegment(bad), false, String(bad));
  });
});
