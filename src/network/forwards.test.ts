import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { assertHostPortFree, forwardsCollide, normalizeForward } from './forwards.js';

describe('port forwards', () => {
  it('fills defaults', () => {
    assert.deepEqual(normalizeForward({ hostPort: 8080, guestPort: 80 }, 'nic0'), {
      proto: 'tcp',
      hostAddress: '127.0.0.1',
      hostPort: 8080,
      guestPort: 80,
      nic: 'nic0',
    });
  });
  it('rejects bad ports, addresses and privileged ports without permission', () => {
    assert.throws(() => normalizeForward({ hostPort: 0, guestPort: 80 }, 'nic0'), { code: 'VMKIT_INVALID_ARGUMENT' });
    assert.throws(() => normalizeForward({ hostPort: 8080, guestPort: 70000 }, 'nic0'), { code: 'VMKIT_INVALID_ARGUMENT' });
    assert.throws(() => normalizeForward({ hostPort: 8080, guestPort: 80, hostAddress: 'localhost' }, 'nic0'), { code: 'VMKIT_INVALID_ARGUMENT' });
    assert.throws(() => normalizeForward({ hostPort: 80, guestPort: 80 }, 'nic0'), { code: 'VMKIT_PORT_PRIVILEGED' });
    assert.equal(normalizeForward({ hostPort: 80, guestPort: 80, allowPrivileged: true }, 'nic0').hostPort, 80);
  });
  it('detects collisions, including the wildcard address', () => {
    const a = normalizeForward({ hostPort: 8080, guestPort: 80 }, 'nic0');
    assert.ok(forwardsCollide(a, normalizeForward({ hostPort: 8080, guestPort: 22 }, 'nic0')));
    assert.ok(forwardsCollide(a, normalizeForward({ hostPort: 8080, guestPort: 22, hostAddress: '0.0.0.0' }, 'nic0')));
    assert.ok(!forwardsCollide(a, normalizeForward({ hostPort: 8080, guestPort: 22, proto: 'udp' }, 'nic0')));
    assert.ok(!forwardsCollide(a, normalizeForward({ hostPort: 8081, guestPort: 80 }, 'nic0')));
  });
  it('sees a host port in use', async () => {
    const s = net.createServer();
    const port = await new Promise<number>((r) => s.listen(0, '127.0.0.1', () => r((s.address() as net.AddressInfo).port)));
    try {
      await assert.rejects(assertHostPortFree(normalizeForward({ hostPort: port, guestPort: 80 }, 'nic0')), { code: 'VMKIT_PORT_IN_USE' });
    } finally {
      s.close();
    }
    await assertHostPortFree(normalizeForward({ hostPort: port, guestPort: 80 }, 'nic0'));
  });
});
