import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { QmpClient, QmpEvent } from '../qemu/qmp.js';
import { SUSPEND_TAG, validateSnapshotName } from './snapshots.js';
import { runJob } from '../qemu/jobs.js';

describe('snapshot names', () => {
  it('follow the common name grammar', () => {
    assert.equal(validateSnapshotName('before-upgrade'), 'before-upgrade');
    for (const bad of ['', 'Bad', 'a_b', '../x', 'a b', '-a', 'x'.repeat(64)]) {
      assert.throws(() => validateSnapshotName(bad), { code: 'VMKIT_NAME_INVALID' });
    }
  });

  it('reserve the suspend tag', () => {
    assert.throws(() => validateSnapshotName(SUSPEND_TAG), { code: 'VMKIT_NAME_INVALID', message: /reserved/ });
  });
});

/** A stand-in for QmpClient: records commands, concludes jobs with or without an error. */
class FakeQmp extends EventEmitter {
  readonly calls: Array<{ command: string; args?: Record<string, unknown> }> = [];
  constructor(private readonly jobError?: string) {
    super();
  }
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    this.calls.push({ command, args });
    if (command === 'query-jobs') {
      const id = this.calls.find((c) => c.args?.['job-id'])!.args!['job-id'];
      return [{ id, type: 'snapshot-save', status: 'concluded', ...(this.jobError ? { error: this.jobError } : {}) }];
    }
    if (typeof args?.['job-id'] === 'string') {
      const id = args['job-id'];
      setImmediate(() => {
        this.emit('event', { event: 'JOB_STATUS_CHANGE', data: { id, status: 'running' }, timestamp: { seconds: 0, microseconds: 0 } });
        this.emit('event', { event: 'JOB_STATUS_CHANGE', data: { id, status: 'concluded' }, timestamp: { seconds: 0, microseconds: 0 } });
      });
    }
    return {};
  }
  waitForEvent(name: string, o: { predicate?: (e: QmpEvent) => boolean }): Promise<QmpEvent> {
    return new Promise((resolve) => {
      const on = (e: QmpEvent) => {
        if (e.event === name && (!o.predicate || o.predicate(e))) {
          this.off('event', on);
          resolve(e);
        }
      };
      this.on('event', on);
    });
  }
}

describe('QMP snapshot jobs', () => {
  it('start the job with an id, wait for it to conclude and dismiss it', async () => {
    const qmp = new FakeQmp();
    await runJob(qmp as unknown as QmpClient, 'snapshot-save', { tag: 's1', vmstate: 'root', devices: ['root'] });
    assert.deepEqual(
      qmp.calls.map((c) => c.command),
      ['snapshot-save', 'query-jobs', 'job-dismiss'],
    );
    const save = qmp.calls[0]!.args!;
    assert.match(String(save['job-id']), /^vmkit-snapshot-save-[0-9a-f]{8}$/);
    assert.deepEqual({ ...save, 'job-id': 'x' }, { 'job-id': 'x', tag: 's1', vmstate: 'root', devices: ['root'] });
    assert.deepEqual(qmp.calls[2]!.args, { id: save['job-id'] });
  });

  it("report the job's error with a stable code, and still dismiss it", async () => {
    const qmp = new FakeQmp("Snapshot 's1' does not exist in one or more devices");
    await assert.rejects(runJob(qmp as unknown as QmpClient, 'snapshot-load', { tag: 's1', vmstate: 'root', devices: ['root'] }), {
      code: 'VMKIT_QMP_ERROR',
      message: /snapshot-load of "s1" failed: Snapshot 's1' does not exist/,
    });
    assert.equal(qmp.calls.at(-1)!.command, 'job-dismiss');
  });
});
