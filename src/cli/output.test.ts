import { test } from 'node:test';
import assert from 'node:assert/strict';
import YAML from 'yaml';
import type { Operation } from '../domain/types.js';
import { formatDuration, formatForward, formatMiB, progressLine, renderData, renderFields, renderList, renderTable } from './output.js';

test('tables align columns, uppercase headers and show missing cells as -', () => {
  const out = renderTable(
    ['name', 'state', 'ipv4'],
    [
      ['web1', 'running', '10.0.2.15'],
      ['database', 'stopped', undefined],
    ],
  );
  assert.equal(out, 'NAME      STATE    IPV4\nweb1      running  10.0.2.15\ndatabase  stopped  -\n');
});

test('an empty table is just its header', () => {
  assert.equal(renderTable(['a', 'bb'], []), 'A  BB\n');
});

test('json and yaml are exactly the data', () => {
  const data = [{ name: 'web1', cpus: 1, nested: { a: [1, 2] }, none: null }];
  assert.deepEqual(JSON.parse(renderData(data, 'json')), data);
  assert.deepEqual(YAML.parse(renderData(data, 'yaml')), data);
  const cols = [{ header: 'NAME', value: (r: { name: string }) => r.name }];
  assert.deepEqual(JSON.parse(renderList(data, 'json', cols)), data);
  assert.equal(renderList(data, undefined, cols), 'NAME\nweb1\n');
  assert.equal(renderList(data, 'table', cols), 'NAME\nweb1\n');
});

test('fields align labels, skip empty values and indent sections', () => {
  const out = renderFields([
    ['Name', 'web1'],
    ['PID', undefined],
    ['Memory', '256MiB'],
    ['Forwards', ['127.0.0.1:8080->80/tcp']],
    ['Disks', []],
  ]);
  assert.equal(out, 'Name:   web1\nMemory: 256MiB\nForwards:\n  127.0.0.1:8080->80/tcp\nDisks:  none\n');
});

test('small formatters', () => {
  assert.equal(formatForward({ proto: 'tcp', hostAddress: '127.0.0.1', hostPort: 8080, guestPort: 80 }), '127.0.0.1:8080->80/tcp');
  assert.equal(formatForward({ proto: 'udp', hostAddress: '::1', hostPort: 53, guestPort: 53 }), '[::1]:53->53/udp');
  assert.equal(formatMiB(256), '256MiB');
  assert.equal(formatMiB(2048), '2GiB');
  assert.equal(formatDuration(12.3), '12s');
  assert.equal(formatDuration(3725), '1h2m5s');
  assert.equal(formatDuration(90000), '1d1h0m0s');
});

test('progress line shows a bar when there is a percentage', () => {
  const op = { description: 'Starting web1', status: 'running', progress: { phase: 'booting', percent: 50 } } as Operation;
  assert.equal(progressLine(op, 10), 'Starting web1 [#####-----]  50% booting');
  assert.equal(progressLine({ ...op, progress: { phase: 'queued' } }), 'Starting web1: queued');
});
