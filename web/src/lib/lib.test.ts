import { describe, expect, it } from 'vitest';
import { cpusProblem, forwardProblems, memoryProblem, nameProblem, portProblem, addressProblem, snapshotNameProblem, networkProblems, subnetProblem } from './validate.js';
import { actionsFor, filterAndSort, formatDuration, formatForward, formatMemory } from './format.js';
import { codeInWords, describeError } from './errors.js';
import type { Instance } from './types.js';

describe('validation mirrors the server', () => {
  it('accepts good names and explains bad ones', () => {
    for (const ok of ['a', 'web1', 'my-vm-2', 'x'.repeat(63)]) expect(nameProblem(ok)).toBeNull();
    expect(nameProblem('')).toMatch(/name/);
    expect(nameProblem('x'.repeat(64))).toMatch(/63/);
    expect(nameProblem('Web1')).toMatch(/lowercase/);
    expect(nameProblem('web_1')).toMatch(/a-z/);
    expect(nameProblem('web.1')).toMatch(/a-z/);
    expect(nameProblem('-web')).toMatch(/Start and end/);
    expect(nameProblem('web-')).toMatch(/Start and end/);
    expect(nameProblem('wéb')).toMatch(/a-z/);
  });
  it('checks snapshot names with the same grammar, the reserved tag and taken names', () => {
    expect(snapshotNameProblem('before-upgrade')).toBeNull();
    expect(snapshotNameProblem('')).toMatch(/snapshot a name/);
    expect(snapshotNameProblem('Snap_1')).toMatch(/lowercase/);
    expect(snapshotNameProblem('snap-')).toMatch(/Start and end/);
    expect(snapshotNameProblem('vmkit-suspend')).toMatch(/reserved/);
    expect(snapshotNameProblem('s1', ['s1'])).toMatch(/already/);
  });
  it('checks network forms like the server', () => {
    expect(subnetProblem('10.80.0.0/24')).toBeNull();
    expect(subnetProblem('10.80.0.1/24')).toMatch(/10\.80\.0\.0\/24/);
    expect(subnetProblem('10.80.0.0/30')).toMatch(/29/);
    expect(subnetProblem('127.0.0.0/8')).toMatch(/reserved/);
    expect(subnetProblem('10.80.0.0')).toMatch(/NETWORK\/PREFIX/);
    const d = { name: 'lan', mode: 'nat' as const, subnet: '10.80.0.0/24', dhcpRange: '', uplink: '' };
    expect(networkProblems(d)).toEqual({ name: null, subnet: null, uplink: null });
    expect(networkProblems({ ...d, name: 'user' }).name).toMatch(/reserved/);
    expect(networkProblems({ ...d, subnet: '' }).subnet).toMatch(/needs a subnet/);
    expect(networkProblems({ ...d, mode: 'internal', subnet: '' }).subnet).toBeNull();
    expect(networkProblems({ ...d, mode: 'bridged', subnet: '' }).uplink).toMatch(/host interface/);
  });
  it('checks ports, sizes, addresses and duplicate forwards', () => {
    expect(portProblem('8080', 'host port')).toBeNull();
    expect(portProblem('80', 'host port')).toMatch(/1024/);
    expect(portProblem('80', 'guest port')).toBeNull();
    expect(portProblem('70000', 'guest port')).toMatch(/65535/);
    expect(portProblem('8a', 'host port')).toMatch(/whole/);
    expect(cpusProblem('0')).toMatch(/1 and 64/);
    expect(cpusProblem('2')).toBeNull();
    expect(memoryProblem('32')).toMatch(/64/);
    expect(memoryProblem('512')).toBeNull();
    expect(addressProblem('127.0.0.1')).toBeNull();
    expect(addressProblem('300.0.0.1')).not.toBeNull();
    expect(
      forwardProblems([
        { hostPort: '8080', guestPort: '80', proto: 'tcp' },
        { hostPort: '8080', guestPort: '81', proto: 'tcp' },
        { hostPort: '8080', guestPort: '53', proto: 'udp' },
      ]),
    ).toEqual([null, expect.stringMatching(/twice/), null]);
  });
});

const inst = (name: string, state: Instance['state'], extra: Partial<Instance> = {}): Instance => ({
  id: name,
  name,
  image: 'appliance',
  imageVersion: '1',
  cpus: 1,
  memoryMiB: 256,
  state,
  host: 'h1',
  nics: [],
  forwards: [],
  disks: [],
  createdAt: '2026-01-01T00:00:00Z',
  updatedAt: '2026-01-01T00:00:00Z',
  runtime: {},
  ...extra,
});

describe('formatting, filtering, sorting', () => {
  it('formats sizes and forwards', () => {
    expect(formatMemory(256)).toBe('256 MiB');
    expect(formatMemory(2048)).toBe('2 GiB');
    expect(formatForward({ proto: 'tcp', hostAddress: '127.0.0.1', hostPort: 8080, guestPort: 80 })).toBe('127.0.0.1:8080→80/tcp');
  });
  it('filters by text and state and sorts by a column', () => {
    const list = [inst('b', 'running', { cpus: 4 }), inst('a', 'stopped', { cpus: 2 }), inst('c', 'running', { image: 'debian', cpus: 1 })];
    expect(filterAndSort(list, { sort: 'name' }).map((i) => i.name)).toEqual(['a', 'b', 'c']);
    expect(filterAndSort(list, { sort: 'cpus', desc: true }).map((i) => i.name)).toEqual(['b', 'a', 'c']);
    expect(filterAndSort(list, { sort: 'name', state: 'running' }).map((i) => i.name)).toEqual(['b', 'c']);
    expect(filterAndSort(list, { sort: 'name', text: 'debian' }).map((i) => i.name)).toEqual(['c']);
  });
  it('offers the verbs a state allows', () => {
    expect(actionsFor('stopped')).toEqual(['start']);
    expect(actionsFor('running')).toContain('pause');
    expect(actionsFor('paused')).toContain('resume');
    expect(actionsFor('running')).toContain('suspend');
    expect(actionsFor('suspended')).toEqual(['start']);
  });
  it('formats durations', () => {
    expect(formatDuration(840)).toBe('840 ms');
    expect(formatDuration(2400)).toBe('2.4 s');
    expect(formatDuration(65_000)).toBe('1m 5s');
    expect(formatDuration(undefined)).toBe('—');
  });
  it('says error codes in words', () => {
    expect(codeInWords('VMKIT_ALREADY_EXISTS')).toMatch(/taken/);
    expect(codeInWords('VMKIT_SOMETHING_NEW')).toBe('something new');
    expect(describeError({ code: 'VMKIT_PORT_IN_USE', message: 'm', hint: 'h' })).toMatchObject({ title: expect.stringMatching(/host port/), hint: 'h' });
  });
});
