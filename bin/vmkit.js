#!/usr/bin/env node
// The installed `vmkit` command: the compiled CLI lives in dist/ (npm run build).
import('../dist/cli/main.js').catch((err) => {
  process.stderr.write(`Error: cannot load the vmkit CLI: ${err && err.message ? err.message : err}\nHint: Run "npm run build" in the vmkit folder.\n(code VMKIT_INTERNAL)\n`);
  process.exitCode = 3;
});
