#!/usr/bin/env node
// The package's install script (npm install, npm rebuild). With a prebuild made for the libtorch
// found here it checks that the prebuild loads and compiles nothing; with none it compiles the
// addon from source with cmake-js and says so; with no libtorch at all it explains and leaves the
// choice to first use. QWEN3_TORCH_BUILD_FROM_SOURCE=1 or `npm rebuild qwen3-torch` compiles.
// npm shows install output only with --foreground-scripts or on failure, so what happened is also
// written to build/install.json, which `qwen3 info` prints.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { buildJobs } = require('./build-jobs.js');

const root = path.resolve(__dirname, '..', '..');
const t0 = Date.now();

function say(message) {
  process.stdout.write(`qwen3-torch: ${message}\n`);
}

function record(action, message) {
  try {
    fs.mkdirSync(path.join(root, 'build'), { recursive: true });
    const seconds = (Date.now() - t0) / 1000;
    fs.writeFileSync(path.join(root, 'build', 'install.json'), `${JSON.stringify({ action, message, seconds, date: new Date().toISOString() }, null, 2)}\n`);
  } catch {
    // a read-only install still works; `qwen3 info` then has no install line
  }
}

function fail(message) {
  record('fail', message);
  process.stderr.write(`qwen3-torch: ${message}\n`);
  process.exit(1);
}

// A git checkout has the TypeScript sources; its set-up is scripts/dev/setup.js.
if (fs.existsSync(path.join(root, 'lib', 'native.ts'))) {
  say('development checkout: nothing to install (npm run build, npm test and npm run qwen3 set it up)');
  process.exit(0);
}

const { planInstall, preloadHelperFor, probe } = require('../../dist/addon/index.js');
const plan = planInstall({ root });

if (plan.action === 'none') {
  say(plan.message);
  record('none', plan.message.split('\n')[0]);
  process.exit(0);
}
if (plan.action === 'fail') fail(plan.message);

if (plan.action === 'prebuild') {
  const helper = preloadHelperFor(plan.prebuild.path, root);
  const r = probe({ addon: plan.prebuild.path, helper, libraries: plan.libtorch.libraries });
  if (r.ok) {
    say(plan.message);
    record('prebuild', plan.message);
    process.exit(0);
  }
  say(`the prebuilt addon ${plan.prebuild.file} does not load here (${r.why}); building from source with cmake-js instead`);
} else {
  say(plan.message);
}

// --- build from source ------------------------------------------------------------------------
const cmake = spawnSync('cmake', ['--version'], { encoding: 'utf8' });
if (cmake.error || cmake.status !== 0) {
  fail(
    'compiling the addon needs CMake 3.19 or newer and a C++20 compiler, and cmake is not on PATH. ' +
      'Install them (Debian/Ubuntu: apt install cmake g++; macOS: xcode-select --install && brew install cmake; ' +
      'anywhere: pip install cmake), or install the PyTorch version a prebuild is made for (see `npx qwen3 info`).',
  );
}
if (!fs.existsSync(path.join(plan.libtorch.root, 'include', 'ATen', 'Context.h'))) {
  fail(`the libtorch at ${plan.libtorch.root} has no C++ headers (include/ATen/Context.h), so the addon cannot be compiled against it`);
}
const jobs = buildJobs();
const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
// CMake looks for LIBTORCH first: the libtorch the plan found is the one compiled against.
const env = plan.libtorch.explicit ? process.env : { ...process.env, LIBTORCH: plan.libtorch.root };
const build = spawnSync(process.execPath, [cmakeJs, 'rebuild', '--parallel', jobs], { cwd: root, stdio: 'inherit', env });
if (build.status !== 0) fail(`the cmake-js build failed (exit ${build.status ?? build.signal}); its output is above`);
const built = probe({ addon: path.join(root, 'build', 'Release', 'qwen3_torch.node'), helper: null, libraries: [] });
if (!built.ok) fail(`the addon compiled but does not load: ${built.why}`);
const done = `${plan.message}: built build/Release/qwen3_torch.node for libtorch ${built.built.torchVersion}`;
say(`${done} in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
record('build', done);
