import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VmkitError } from '../errors.js';
import { parseForwardSpec, withProto } from './forward.js';

test('parses HOST:GUEST with tcp default and no address', () => {
  assert.deepEqual(parseForwardSpec('8080:80'), { hostPort: 8080, guestPort: 80, proto: 'tcp' });
});

test('parses ADDR:HOST:GUEST', () => {
  assert.deepEqual(parseForwardSpec('127.0.0.1:8080:80'), { hostPort: 8080, guestPort: 80, proto: 'tcp', hostAddress: '127.0.0.1' });
});

test('parses a /udp suffix', () => {
  assert.deepEqual(parseForwardSpec('0.0.0.0:5353:53/udp'), { hostPort: 5353, guestPort: 53, proto: 'udp', hostAddress: '0.0.0.0' });
  assert.equal(parseForwardSpec('53:53/TCP').proto, 'tcp');
});

test('parses a bracketed IPv6 address', () => {
  assert.deepEqual(parseForwardSpec('[::1]:8080:80'), { hostPort: 8080, guestPort: 80, proto: 'tcp', hostAddress: '::1' });
});

for (const bad of [
  '',
  '8080',
  '8080:',
  ':80',
  '0:80',
  '8080:65536',
  'a:80',
  '8080:80/sctp',
  '1.2.3:8080:80',
  'host:8080:80',
  '1:2:3:4',
  '[::1:8080:80',
  '[1.2.3.4]:1:2',
  '8080:80/',
  '-1:80',
  '80.5:80',
]) {
  test(`rejects ${JSON.stringify(bad)} with VMKIT_INVALID_ARGUMENT and a hint`, () => {
    assert.throws(
      () => parseForwardSpec(bad),
      (err: unknown) => err instanceof VmkitError && err.code === 'VMKIT_INVALID_ARGUMENT' && /8080:80/.test(err.hint ?? ''),
    );
  });
}

test('--proto applies unless the spec says otherwise', () => {
  assert.equal(withProto(parseForwardSpec('53:53'), 'udp', '53:53').proto, 'udp');
  assert.equal(withProto(parseForwardSpec('53:53/udp'), 'udp', '53:53/udp').proto, 'udp');
  assert.throws(() => withProto(parseForwardSpec('53:53/tcp'), 'udp', '53:53/tcp'), /--proto/);
});
