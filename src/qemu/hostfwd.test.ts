import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { addHostForward, removeHostForward } from './hostfwd.js';
import { QmpClient } from './qmp.js';

/** A QmpClient whose monitor answers every HMP command line with `output`; records the lines. */
function fakeHmp(output: string): { qmp: QmpClient; lines: string[] } {
  const lines: string[] = [];
  const qmp = Object.create(QmpClient.prototype) as QmpClient;
  // Only the transport is faked: hmpOrThrow's own parsing of the output is what runs.
  qmp.execute = (async (command: string, args?: Record<string, unknown>) => {
    assert.equal(command, 'human-monitor-command');
    lines.push(String(args?.['command-line']));
    return output;
  }) as QmpClient['execute'];
  return { qmp, lines };
}

const fwd = { proto: 'tcp' as const, hostAddress: '127.0.0.1', hostPort: 2222, guestPort: 22, nic: 'nic0' };

describe('user-mode port forwards over HMP', () => {
  it('hostfwd_add: silence is success', async () => {
    const { qmp, lines } = fakeHmp('');
    await addHostForward(qmp, fwd);
    assert.deepEqual(lines, ['hostfwd_add nic0 tcp:127.0.0.1:2222-:22']);
  });

  it("hostfwd_add: any output is QEMU's refusal", async () => {
    const { qmp } = fakeHmp('Could not set up host forwarding rule');
    await assert.rejects(addHostForward(qmp, fwd), { code: 'VMKIT_QMP_ERROR', message: /Could not set up host forwarding rule/ });
  });

  it('hostfwd_remove: "removed" is success, other text is the refusal', async () => {
    const ok = fakeHmp('host forwarding rule for tcp:127.0.0.1:2222 removed\r\n');
    assert.equal(await removeHostForward(ok.qmp, fwd), undefined);
    assert.deepEqual(ok.lines, ['hostfwd_remove nic0 tcp:127.0.0.1:2222']);
    assert.equal(await removeHostForward(fakeHmp('').qmp, fwd), undefined);
    assert.equal(await removeHostForward(fakeHmp('host forwarding rule for tcp:127.0.0.1:2222 not found\r\n').qmp, fwd), 'host forwarding rule for tcp:127.0.0.1:2222 not found');
  });
});
