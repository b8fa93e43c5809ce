import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { idInRawRow, storedRowProblem } from './rows.js';

const good = {
  id: 'abc123',
  name: 'vm1',
  image: 'appliance',
  imageVersion: '1',
  cpus: 1,
  memoryMiB: 256,
  state: 'running',
  host: 'h',
  nics: [{ id: 'nic0', model: 'virtio-net', mac: '52:54:00:00:00:01', network: 'user' }],
  forwards: [],
  disks: [{ name: 'root', file: 'root.qcow2', format: 'qcow2' }],
  createdAt: 'x',
  updatedAt: 'x',
};

describe('a stored row the daemon can use', () => {
  it('accepts a complete instance, also without optional fields', () => {
    assert.equal(storedRowProblem('instances', 'vm1', good), undefined);
    const { imageVersion: _v, host: _h, createdAt: _c, ...older } = good;
    assert.equal(storedRowProblem('instances', 'vm1', older), undefined, 'only what the code reads unconditionally is required');
  });

  it('names what is wrong with a damaged one', () => {
    assert.match(storedRowProblem('instances', 'vm1', null)!, /not a JSON object/);
    assert.match(storedRowProblem('instances', 'vm1', { ...good, nics: undefined })!, /"nics" is missing/);
    assert.match(storedRowProblem('instances', 'vm1', { ...good, state: 'dancing' })!, /"state"/);
    assert.match(storedRowProblem('instances', 'other', good)!, /not its key/);
    assert.match(storedRowProblem('instances', 'vm1', { ...good, disks: [{ name: 'data', file: 'd', format: 'raw' }] })!, /root/);
    assert.match(storedRowProblem('instances', 'vm1', { ...good, disks: [null] })!, /disks\[0\]/);
    assert.match(storedRowProblem('images', 'appliance', { name: 'appliance' })!, /"disks"/);
    assert.equal(storedRowProblem('meta', 'x', { anything: 1 }), undefined);
    const stack = { name: 'shop', spec: { name: 'shop', networks: [], services: [] }, services: { web: { replicas: [], nextIndex: 1 } }, ownedNetworks: [], generation: 1 };
    assert.equal(storedRowProblem('stacks', 'shop', stack), undefined);
    assert.match(storedRowProblem('stacks', 'shop', { ...stack, spec: {} })!, /"spec"/);
    assert.match(storedRowProblem('stacks', 'shop', { ...stack, services: { web: {} } })!, /replica lists/);
  });

  it('finds the id of an instance row that no longer parses (its folder is kept)', () => {
    assert.equal(idInRawRow('{"id":"7f3a9c","name":"vm1","st'), '7f3a9c');
    assert.equal(idInRawRow('{"name":"vm1"'), undefined);
  });
});
