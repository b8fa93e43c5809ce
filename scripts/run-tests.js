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
const files = [...unit, ...(unitOnly ? [] : find('dist-test'))];
const args = ['--test', '--test-reporter=spec', `--test-concurrency=${process.env.VMKIT_TEST_CONCURRENCY ?? 2}`, ...files];
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
