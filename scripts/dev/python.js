#!/usr/bin/env node
// Runs the project's Python (lib/addon/python.ts: QWEN3_PYTHON, else .venv, else python3) with
// the given arguments, for npm scripts and shell scripts; `--which` prints its path instead.
//   node scripts/dev/python.js scripts/python/make_fixtures.py --out test/.fixtures
//   PYTHON=$(node scripts/dev/python.js --which)
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const path = require('node:path');

const compiled = path.join(__dirname, '..', '..', 'dist', 'addon', 'python.js');
if (!existsSync(compiled)) {
  process.stderr.write('scripts/dev/python.js: dist/ is not built yet: run `npm run build` first\n');
  process.exit(1);
}
const python = require(compiled).projectPython();
if (process.argv[2] === '--which') {
  process.stdout.write(`${python}\n`);
} else {
  const r = spawnSync(python, process.argv.slice(2), { stdio: 'inherit' });
  if (r.error) {
    process.stderr.write(`scripts/dev/python.js: could not run ${python}: ${r.error.message}\n`);
    process.exit(1);
  }
  if (r.signal) process.kill(process.pid, r.signal);
  process.exit(r.status ?? 1);
}
