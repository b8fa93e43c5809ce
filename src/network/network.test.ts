import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { allocateAddress, bridgeName, cidrsOverlap, parseCidr, tapName, validateNetworkRequest, type Network } from './network.js';

const net = (over: Partial<Network> = {}): Network => ({
  ...validateNetworkRequest({ name: 'lan', mode: 'nat', subnet: '10.80.0.0/24', dhcpRange: '.100-.102' }),
  bridge: 'vmkbr-lan',
  createdAt: 'now',
  ...over,
});

describe('network model', () => {
  it('parses subnets and refuses bad ones', () => {
    const c = parseCidr('10.80.0.0/24');
    assert.equal(c.size, 256);
    assert.throws(() => parseCidr('10.80.0.1/24'), /host bits.*/);
    assert.throws(() => parseCidr('10.80.0.0/30'), /too small/);
    assert.throws(() => parseCidr('10.0.0.0/7'), /too large/);
    assert.throws(() => parseCidr('127.0.0.0/8'), /reserved/);
    assert.throws(() => parseCidr('10.300.0.0/16'), /not an IPv4/);
    assert.ok(cidrsOverlap(parseCidr('10.80.0.0/16'), parseCidr('10.80.5.0/24')));
    assert.ok(!cidrsOverlap(parseCidr('10.80.0.0/24'), parseCidr('10.81.0.0/24')));
  });
  it('fills in defaults per mode', () => {
    const n = validateNetworkRequest({ name: 'lab', mode: 'host-only', subnet: '10.81.0.0/24' });
    assert.deepEqual([n.hostAddress, n.dhcp, n.dhcpRange, n.dns], ['10.81.0.1', true, { start: '10.81.0.2', end: '10.81.0.254' }, true]);
    const i = validateNetworkRequest({ name: 'be', mode: 'internal' });
    assert.deepEqual([i.subnet, i.hostAddress, i.dhcp], [undefined, undefined, false]);
    assert.equal(validateNetworkRequest({ name: 'be', mode: 'internal', subnet: '10.82.0.0/24' }).dhcp, false);
    assert.equal(validateNetworkRequest({ name: 'be', mode: 'internal', subnet: '10.82.0.0/24', dhcp: true }).dhcp, true);
    const b = validateNetworkRequest({ name: 'office', mode: 'bridged', uplink: 'eth1' });
    assert.equal(b.uplink, 'eth1');
    assert.throws(() => validateNetworkRequest({ name: 'office', mode: 'bridged' }), /needs an uplink/);
    assert.throws(() => validateNetworkRequest({ name: 'office', mode: 'bridged', uplink: 'eth1', subnet: '10.1.0.0/24' }), /takes no subnet/);
    assert.throws(() => validateNetworkRequest({ name: 'x', mode: 'nat', subnet: '10.1.0.0/24', uplink: 'eth1' }), /Only bridged/);
    assert.throws(() => validateNetworkRequest({ name: 'x', mode: 'nat', subnet: '10.1.0.0/24', dhcpRange: '.1-.5' }), /must lie within/);
  });
  it('names bridges and taps within 15 characters, without collisions', () => {
    assert.equal(bridgeName('lan'), 'vmkbr-lan');
    const long = bridgeName('a-very-long-network-name');
    assert.ok(long.length <= 15 && long.startsWith('vmkbr-'));
    assert.notEqual(bridgeName('a-very-long-network-name', new Set([long])), long);
    assert.equal(tapName('0123456789ab', 'nic3'), 'vmkt-0123456-3');
    assert.ok(tapName('0123456789ab', 'nic12').length <= 15);
  });
  it('allocates addresses: static checked, pool in order, exhaustion explained', () => {
    const n = net();
    assert.equal(allocateAddress(n, new Set()), '10.80.0.100');
    assert.equal(allocateAddress(n, new Set(['10.80.0.100'])), '10.80.0.101');
    assert.throws(
      () => allocateAddress(n, new Set(['10.80.0.100', '10.80.0.101', '10.80.0.102'])),
      (e: Error & { code?: string }) => e.code === 'VMKIT_POOL_EXHAUSTED',
    );
    assert.equal(allocateAddress(n, new Set(), '10.80.0.10'), '10.80.0.10');
    assert.throws(
      () => allocateAddress(n, new Set(['10.80.0.10']), '10.80.0.10'),
      (e: Error & { code?: string }) => e.code === 'VMKIT_ADDRESS_IN_USE',
    );
    assert.throws(
      () => allocateAddress(n, new Set(), '10.80.0.1'),
      (e: Error & { code?: string }) => e.code === 'VMKIT_ADDRESS_IN_USE',
    );
    assert.throws(() => allocateAddress(n, new Set(), '10.80.1.5'), /outside network "lan"/);
    assert.throws(() => allocateAddress(n, new Set(), '10.80.0.255'), /outside/);
  });

  it('never gives a reserved address (a stack service address): not from the pool, not as a static one', () => {
    const n = net();
    const reserved = new Map([['10.80.0.100', 'stack service shop/web']]);
    assert.equal(allocateAddress(n, new Set(), undefined, reserved), '10.80.0.101', 'the pool skips it');
    assert.equal(allocateAddress(n, new Set(['10.80.0.101']), undefined, reserved), '10.80.0.102');
    assert.throws(
      () => allocateAddress(n, new Set(['10.80.0.101', '10.80.0.102']), undefined, reserved),
      (e: Error & { code?: string }) => e.code === 'VMKIT_POOL_EXHAUSTED' && /1 reserved for stack service addresses/.test(e.message),
    );
    assert.throws(
      () => allocateAddress(n, new Set(), '10.80.0.100', reserved),
      (e: Error & { code?: string }) => e.code === 'VMKIT_ADDRESS_IN_USE' && /reserved: it is the address of stack service shop\/web/.test(e.message),
    );
    // Outside the pool too: a static address is refused as well.
    assert.throws(
      () => allocateAddress(n, new Set(), '10.80.0.20', new Map([['10.80.0.20', 'stack service a/b']])),
      (e: Error & { code?: string }) => e.code === 'VMKIT_ADDRESS_IN_USE',
    );
  });
});
