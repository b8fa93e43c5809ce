#!/usr/bin/env node
// Runs every test with node's test runner: unit tests beside the code (dist/**/*.test.js)
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
const files = [...find('dist'), ...(unitOnly ? [] : find('dist-test'))];
if (files.length === 0) {
  console.error('no test files found: run "npm run build" first');
  process.exit(1);
}
const args = ['--test', '--test-reporter=spec', `--test-concurrency=${process.env.VMKIT_TEST_CONCURRENCY ?? 2}`, ...files];
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
