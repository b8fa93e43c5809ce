import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Instance } from '../../domain/types.js';
import type { MigrationContext } from './context.js';
import type { PrepareRequest } from './protocol.js';
import { MigrationTarget } from './target.js';
import { peerInstance, prepareRequest } from './payload.test-support.js';
import { checkPrepareReply } from './source.js';

/**
 * The target's own check of what a peer names, independent of the route's schema: a fake
 * context that has only what the check may use, so going any further than the check fails
 * with a TypeError, not with VMKIT_PATH_FORBIDDEN.
 */
describe('MigrationTarget: a peer names files only inside this host’s folders', () => {
  let top: string;
  let data: string;
  let shared: string;
  let target: MigrationTarget;

  before(() => {
    top = mkdtempSync(join(tmpdir(), 'vmkit-target-'));
    data = join(top, 'data');
    shared = join(top, 'shared');
    mkdirSync(join(data, 'instances'), { recursive: true });
    mkdirSync(join(shared, 'disks', '0123456789ab'), { recursive: true });
    mkdirSync(join(top, 'victim'));
    writeFileSync(join(top, 'victim', 'keep'), 'x');
    symlinkSync(join(top, 'victim'), join(shared, 'disks', 'linkout'));
    const ctx = {
      registry: { instanceDir: (i: Instance) => join(data, 'instances', i.id) },
      self: async () => ({ sharedStorage: { id: 's', path: shared } }),
    } as unknown as MigrationContext;
    target = new MigrationTarget(ctx);
  });
  after(() => rmSync(top, { recursive: true, force: true }));

  const request = (inst: Partial<Instance>, extra: Partial<PrepareRequest> = {}): PrepareRequest =>
    prepareRequest(peerInstance(inst), { id: 'm1', disks: [{ name: 'root', virtualSize: 1 }], ...extra });

  const refused = async (req: PrepareRequest) =>
    assert.rejects(
      () => target.prepareIncoming(req),
      (e: { code?: string; message: string }) => {
        assert.equal(e.code, 'VMKIT_PATH_FORBIDDEN', e.message);
        return true;
      },
    );

  it('refuses ../ and absolute ids, dotted disk names and files, foreign snapshot keys', async () => {
    await refused(request({ id: '../../x' }));
    await refused(request({ id: '/etc' }));
    await refused(request({ id: '..' }));
    await refused(request({ disks: [{ name: '../r', file: 'root.qcow2', format: 'qcow2' }] }));
    await refused(request({ disks: [{ name: 'root', file: '../../victim/keep', format: 'qcow2' }] }));
    await refused(request({ disks: [{ name: 'root', file: 'a/b.qcow2', format: 'qcow2' }] }));
    await refused(request({}, { snapshots: [{ key: 'other/s1', value: {} }] }));
    await refused(request({}, { snapshots: [{ key: 'web/../../x', value: {} }] }));
  });

  it('refuses shared disks outside <shared>/disks/<id>/, also through a link', async () => {
    const shared1 = (file: string) => request({ disks: [{ name: 'root', file, format: 'qcow2' }] }, { sharedDisks: true });
    await refused(shared1(join(top, 'victim', 'keep')));
    await refused(shared1('/etc/passwd'));
    await refused(shared1(join(shared, 'disks', 'ffffffffffff', 'root.qcow2')));
    await refused(shared1(join(shared, 'disks', '0123456789ab', '..', '..', '..', 'victim', 'keep')));
    await refused(shared1(join(shared, 'disks', 'linkout', 'keep')));
    await refused(shared1(join(shared, 'disks', '0123456789ab')));
  });

  it('lets a well-formed request through the check (the fake context then stops it)', async () => {
    for (const req of [request({}), request({ disks: [{ name: 'root', file: join(shared, 'disks', '0123456789ab', 'root.qcow2'), format: 'qcow2' }] }, { sharedDisks: true })]) {
      await assert.rejects(
        () => target.prepareIncoming(req),
        (e: { code?: string }) => e.code !== 'VMKIT_PATH_FORBIDDEN',
      );
    }
    assert.deepEqual(readdirSync(join(data, 'instances')), [], 'nothing was created');
    assert.deepEqual(readdirSync(join(top, 'victim')), ['keep']);
  });
});

describe('the source checks the target’s answer', () => {
  it('accepts the target’s own address and real ports; refuses another address or bad ports', () => {
    checkPrepareReply({ targetIp: '10.0.0.2', migrationPort: 4000 }, '10.0.0.2', 'live');
    checkPrepareReply({ targetIp: '10.0.0.2', migrationPort: 4000, nbdPort: 4001 }, '10.0.0.2', 'live-copy');
    checkPrepareReply({ targetIp: '10.0.0.2' }, '10.0.0.2', 'cold');
    for (const [reply, mode] of [
      [{ targetIp: '169.254.169.254', migrationPort: 80 }, 'live'],
      [{ targetIp: '10.0.0.2', migrationPort: 0 }, 'live'],
      [{ targetIp: '10.0.0.2', migrationPort: 70000 }, 'live'],
      [{ targetIp: '10.0.0.2' }, 'live'],
      [{ targetIp: '10.0.0.2', migrationPort: 4000 }, 'live-copy'],
    ] as const)
      assert.throws(
        () => checkPrepareReply(reply, '10.0.0.2', mode),
        (e: { code?: string }) => e.code === 'VMKIT_MIGRATION_FAILED',
      );
  });
});
