import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { QmpClient, QmpEvent } from './qmp.js';
import { runJob } from './jobs.js';
import { listLiveSnapshots, restoreLive, saveForSuspend } from './snapshots.js';

/**
 * A stand-in for QmpClient: records commands (and their arguments), concludes jobs (with
 * `jobError` for the job commands listed in `failJobs`), and reports `snapshots` on the root node.
 */
class FakeQmp extends EventEmitter {
  readonly calls: string[] = [];
  readonly args: Array<Record<string, unknown> | undefined> = [];
  private lastJob: { id: string; command: string } | undefined;
  constructor(private readonly opts: { failJobs?: string[]; jobError?: string; snapshots?: string[] } = {}) {
    super();
  }
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    this.calls.push(command);
    this.args.push(args);
    if (command === 'query-named-block-nodes') {
      const snaps = (this.opts.snapshots ?? []).map((name) => ({ name, 'vm-state-size': 5, 'date-sec': 0 }));
      return [{ 'node-name': 'cidata' }, { 'node-name': 'root', image: { snapshots: snaps } }];
    }
    if (command === 'query-jobs') {
      const j = this.lastJob!;
      return [{ id: j.id, type: j.command, status: 'concluded', ...(this.opts.failJobs?.includes(j.command) ? { error: this.opts.jobError ?? 'refused' } : {}) }];
    }
    if (typeof args?.['job-id'] === 'string') {
      const id = args['job-id'];
      this.lastJob = { id, command };
      // A `running` change first: the waiter must not take it for the end.
      setImmediate(() => {
        this.emit('event', { event: 'JOB_STATUS_CHANGE', data: { id, status: 'running' }, timestamp: { seconds: 0, microseconds: 0 } });
        this.emit('event', { event: 'JOB_STATUS_CHANGE', data: { id, status: 'concluded' }, timestamp: { seconds: 0, microseconds: 0 } });
      });
    }
    return {};
  }
  async stop(): Promise<void> {
    this.calls.push('stop');
  }
  async cont(): Promise<void> {
    this.calls.push('cont');
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
  get client(): QmpClient {
    return this as unknown as QmpClient;
  }
}

describe('QMP snapshot jobs', () => {
  it('start the job with an id, wait for it to conclude and dismiss it', async () => {
    const qmp = new FakeQmp();
    await runJob(qmp.client, 'snapshot-save', { tag: 's1', vmstate: 'root', devices: ['root'] });
    assert.deepEqual(qmp.calls, ['snapshot-save', 'query-jobs', 'job-dismiss']);
    const save = qmp.args[0]!;
    assert.match(String(save['job-id']), /^vmkit-snapshot-save-[0-9a-f]{8}$/);
    assert.deepEqual({ ...save, 'job-id': 'x' }, { 'job-id': 'x', tag: 's1', vmstate: 'root', devices: ['root'] });
    assert.deepEqual(qmp.args[2], { id: save['job-id'] });
  });

  it("report the job's error with a stable code, and still dismiss it", async () => {
    const qmp = new FakeQmp({ failJobs: ['snapshot-load'], jobError: "Snapshot 's1' does not exist in one or more devices" });
    await assert.rejects(runJob(qmp.client, 'snapshot-load', { tag: 's1', vmstate: 'root', devices: ['root'] }), {
      code: 'VMKIT_QMP_ERROR',
      message: /snapshot-load of "s1" failed: Snapshot 's1' does not exist/,
    });
    assert.equal(qmp.calls.at(-1), 'job-dismiss');
  });
});

describe('internal snapshots of a live QEMU', () => {
  it("lists the root node's snapshots only", async () => {
    const qmp = new FakeQmp({ snapshots: ['a', 'b'] });
    assert.deepEqual(
      (await listLiveSnapshots(qmp.client)).map((s) => [s.name, s.vmStateSize]),
      [
        ['a', 5],
        ['b', 5],
      ],
    );
  });

  it('restore of a running guest: stop, load, cont', async () => {
    const qmp = new FakeQmp();
    await restoreLive(qmp.client, 's1', true, true);
    assert.deepEqual(qmp.calls, ['stop', 'snapshot-load', 'query-jobs', 'job-dismiss', 'cont']);
  });

  it('restore into a paused snapshot leaves the vCPUs stopped', async () => {
    const qmp = new FakeQmp();
    await restoreLive(qmp.client, 's1', true, false);
    assert.equal(qmp.calls.includes('cont'), false);
  });

  it('a refused load lets a running guest go on, and reports the error', async () => {
    const qmp = new FakeQmp({ failJobs: ['snapshot-load'] });
    await assert.rejects(restoreLive(qmp.client, 's1', true, true), { code: 'VMKIT_QMP_ERROR' });
    assert.deepEqual(qmp.calls, ['stop', 'snapshot-load', 'query-jobs', 'job-dismiss', 'cont']);
  });

  it('suspend: stop, replace an old suspend tag, save; progress is reported just before the save', async () => {
    const qmp = new FakeQmp({ snapshots: ['vmkit-suspend'] });
    await saveForSuspend(qmp.client, 'vmkit-suspend', true, () => qmp.calls.push('progress'));
    assert.deepEqual(qmp.calls, ['stop', 'query-named-block-nodes', 'snapshot-delete', 'query-jobs', 'job-dismiss', 'progress', 'snapshot-save', 'query-jobs', 'job-dismiss']);
  });

  it('a failed suspend resumes a guest that was running, not one that was paused', async () => {
    const running = new FakeQmp({ failJobs: ['snapshot-save'] });
    await assert.rejects(saveForSuspend(running.client, 'vmkit-suspend', true), { code: 'VMKIT_QMP_ERROR' });
    assert.equal(running.calls.at(-1), 'cont');
    const paused = new FakeQmp({ failJobs: ['snapshot-save'] });
    await assert.rejects(saveForSuspend(paused.client, 'vmkit-suspend', false), { code: 'VMKIT_QMP_ERROR' });
    assert.equal(paused.calls.includes('cont'), false);
  });
});
