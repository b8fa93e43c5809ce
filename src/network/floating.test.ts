import { it } from 'node:test';
import assert from 'node:assert/strict';
import { arpingArgv, conntrackFlushArgv } from './floating.js';

it('floating addresses: gratuitous ARP and conntrack argv (golden)', () => {
  assert.deepEqual(arpingArgv('eth0', '10.0.0.100', 3), ['arping', '-U', '-c', '3', '-I', 'eth0', '10.0.0.100']);
  assert.deepEqual(conntrackFlushArgv('10.0.0.100'), ['conntrack', '-D', '--orig-dst', '10.0.0.100']);
});
