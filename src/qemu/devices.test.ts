import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { hotplugNic, unplugNic } from './devices.js';
import { QmpCommandError, type QmpClient } from './qmp.js';

/** A stand-in for QmpClient: records commands, refuses the ones in `refuse`, runs `after` hooks. */
class FakeQmp extends EventEmitter {
  readonly calls: Array<{ command: string; args?: Record<string, unknown> }> = [];
  constructor(
    private readonly refuse: string[] = [],
    private readonly after: Record<string, (fake: FakeQmp) => void> = {},
  ) {
    super();
  }
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    this.calls.push({ command, args });
    if (this.refuse.includes(command)) throw new QmpCommandError(command, 'GenericError', `${command} refused`);
    this.after[command]?.(this);
    return {};
  }
  get client(): QmpClient {
    return this as unknown as QmpClient;
  }
}

const deviceDeleted = (device: string) => (fake: FakeQmp) =>
  setImmediate(() => fake.emit('event', { event: 'DEVICE_DELETED', data: { device }, timestamp: { seconds: 0, microseconds: 0 } }));

describe('NIC hot-plug', () => {
  it('adds a tap netdev, then the device named after it', async () => {
    const qmp = new FakeQmp();
    await hotplugNic(qmp.client, { id: 'nic1', model: 'virtio-net', mac: '52:54:00:00:00:01', tap: 'vk-tap1' });
    assert.deepEqual(qmp.calls, [
      { command: 'netdev_add', args: { type: 'tap', id: 'nic1', ifname: 'vk-tap1', script: 'no', downscript: 'no' } },
      { command: 'device_add', args: { driver: 'virtio-net-pci', netdev: 'nic1', mac: '52:54:00:00:00:01', id: 'nic1-dev' } },
    ]);
  });

  it('adds a user-mode netdev when there is no tap', async () => {
    const qmp = new FakeQmp();
    await hotplugNic(qmp.client, { id: 'nic0', model: 'e1000', mac: '52:54:00:00:00:02' });
    assert.deepEqual(qmp.calls[0], { command: 'netdev_add', args: { type: 'user', id: 'nic0', ipv6: false } });
  });

  it('takes the netdev away again when the device is refused, and reports the device_add error', async () => {
    const qmp = new FakeQmp(['device_add']);
    await assert.rejects(hotplugNic(qmp.client, { id: 'nic1', model: 'virtio-net', mac: '52:54:00:00:00:01' }), /device_add refused/);
    assert.deepEqual(
      qmp.calls.map((c) => c.command),
      ['netdev_add', 'device_add', 'netdev_del'],
    );
    assert.deepEqual(qmp.calls[2]!.args, { id: 'nic1' });
  });
});

describe('NIC hot-unplug', () => {
  it('removes the netdev only after the guest released the device', async () => {
    const qmp = new FakeQmp([], { device_del: deviceDeleted('nic1-dev') });
    assert.equal(await unplugNic(qmp.client, 'nic1'), true);
    assert.deepEqual(qmp.calls, [
      { command: 'device_del', args: { id: 'nic1-dev' } },
      { command: 'netdev_del', args: { id: 'nic1' } },
    ]);
    assert.equal(qmp.listenerCount('event'), 0);
  });

  it('ignores other devices and gives up (netdev kept) when the guest never releases it', async () => {
    const qmp = new FakeQmp([], { device_del: deviceDeleted('nic2-dev') });
    assert.equal(await unplugNic(qmp.client, 'nic1', 50), false);
    assert.deepEqual(
      qmp.calls.map((c) => c.command),
      ['device_del'],
    );
    assert.equal(qmp.listenerCount('event'), 0);
  });
});
