#!/usr/bin/env node
// `npm run prebuild`: builds the addon with prebuildify for the libtorch found here (LIBTORCH,
// Torch_DIR, python3's torch, the project .venv: lib/addon/libtorch.ts) and writes
//   prebuilds/<platform>-<arch>/qwen3-torch.torch<version>.<variant>.<libc>.node
// plus the preload helper beside it. The libtorch tag is in the name because a binary only loads
// against the libtorch version and variant it was built for; lib/addon/choose.ts picks the file by it.
// A prebuild carries no run path (QWEN3_TORCH_PREBUILD=1): the loader opens the user's libtorch.
//
//   node scripts/dev/prebuild.js [--backend node-gyp|cmake-js] [--if-stale]
//
// --backend node-gyp (default) builds binding.gyp with the local Node headers; cmake-js builds
// CMakeLists.txt with node-api-headers, for machines without Node headers (the CUDA host).
// --if-stale skips the build when the prebuild is newer than every native source (prepack).
// The build runs in a temporary copy of the sources: prebuildify's `rebuild` wipes build/, where
// the development build lives. It needs dist/ (the libtorch finder): `npm run build` first.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { buildJobs } = require('../install/build-jobs.js');

const root = path.resolve(__dirname, '..', '..');
const FINDER = path.join('dist', 'addon', 'libtorch.js');
const INPUTS = ['binding.gyp', 'CMakeLists.txt', 'package.json', 'native', path.join('lib', 'addon', 'libtorch.ts')];
// What the staged build runs besides INPUTS: the compiled finder, which binding.gyp calls as
// `node dist/addon/libtorch.js QUERY`.
const STAGED = [FINDER, path.join('dist', 'addon', 'python.js')];
// Each compile of a libtorch-heavy source takes 1-2 GB: the jobs follow the memory
// (build-jobs.js); JOBS overrides.
const jobs = String(process.env.JOBS || buildJobs());

function die(message) {
  process.stderr.write(`prebuild: ${message}\n`);
  process.exit(1);
}

// prebuildify calls its "node-gyp" as `<cmd> rebuild --target=… --devdir=… --arch=… --release`
// in the staged folder; with --backend cmake-js that command is this script, which runs cmake-js.
if (process.argv[2] === 'rebuild') {
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [process.cwd()] });
  const r = spawnSync(process.execPath, [cmakeJs, 'rebuild', '--parallel', jobs], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

/**
 * npm runs a script named "prebuild" before every `npm run build` too, with the same environment
 * as an explicit `npm run prebuild`; only npm's command line tells the two apart. As that hook
 * this script does nothing: a development build must not cost a full prebuild.
 */
function hookOfBuild() {
  if (process.env.npm_lifecycle_event !== 'prebuild') return false;
  const parent = (pid) => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      return { ppid: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]), args: fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim().split(/\s+/) };
    } catch {
      const r = spawnSync('ps', ['-o', 'ppid=,args=', '-p', String(pid)], { encoding: 'utf8' });
      const m = r.status === 0 ? r.stdout.trim().match(/^(\d+)\s+(.*)$/) : null;
      return m ? { ppid: Number(m[1]), args: m[2].split(/\s+/) } : null;
    }
  };
  let pid = process.ppid;
  for (let depth = 0; depth < 5 && pid > 1; depth++) {
    const p = parent(pid);
    if (!p) return false;
    const run = p.args.findIndex((a) => a === 'run' || a === 'run-script');
    if (run >= 0 && p.args.some((a) => /npm/.test(a))) return p.args.slice(run + 1).find((a) => !a.startsWith('-')) === 'build';
    pid = p.ppid;
  }
  return false;
}
if (hookOfBuild()) process.exit(0);

const args = process.argv.slice(2);
const backend = args.includes('--backend') ? args[args.indexOf('--backend') + 1] : 'node-gyp';
if (!['node-gyp', 'cmake-js'].includes(backend)) die(`unknown --backend ${backend} (node-gyp or cmake-js)`);

if (!fs.existsSync(path.join(root, FINDER))) die(`${FINDER} is missing: run npm run build first`);
const { findLibtorch, inspectLibtorch, prebuildTag } = require(path.join(root, FINDER));
const found = findLibtorch();
if (!found) die('libtorch was not found: pip install torch, or set LIBTORCH to an unpacked libtorch folder');
const lib = inspectLibtorch(found);
if (lib.problem) die(`${lib.via}: ${lib.problem}`);
if (!fs.existsSync(path.join(lib.root, 'include', 'ATen', 'Context.h'))) die(`${lib.root} has no C++ headers (include/ATen/Context.h)`);
if (!lib.version || lib.variant === 'cuda') die(`cannot tell the version and variant of the libtorch at ${lib.root}, so the prebuild could not be named`);

const name = `qwen3-torch.${prebuildTag(lib)}`;
const libc = process.platform === 'linux' ? (process.report.getReport().header.glibcVersionRuntime ? 'glibc' : 'musl') : null;
const outDir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const outFile = path.join(outDir, `${name}${libc ? `.${libc}` : ''}.node`);

function newestInput() {
  let newest = 0;
  const visit = (p) => {
    const s = fs.statSync(p);
    if (s.isDirectory()) for (const f of fs.readdirSync(p)) visit(path.join(p, f));
    else newest = Math.max(newest, s.mtimeMs);
  };
  for (const p of INPUTS) visit(path.join(root, p));
  return newest;
}

function warnStaleOthers(inputTime) {
  if (!fs.existsSync(path.join(root, 'prebuilds'))) return;
  for (const dir of fs.readdirSync(path.join(root, 'prebuilds'))) {
    for (const f of fs.readdirSync(path.join(root, 'prebuilds', dir))) {
      const p = path.join(root, 'prebuilds', dir, f);
      if (p !== outFile && f.endsWith('.node') && fs.statSync(p).mtimeMs < inputTime) {
        process.stderr.write(`prebuild: warning: ${path.relative(root, p)} is older than the native sources; rebuild it where its libtorch is\n`);
      }
    }
  }
}

const inputTime = newestInput();
if (args.includes('--if-stale') && fs.existsSync(outFile) && fs.statSync(outFile).mtimeMs >= inputTime) {
  process.stdout.write(`prebuild: ${path.relative(root, outFile)} is up to date\n`);
  warnStaleOthers(inputTime);
  process.exit(0);
}

const env = { ...process.env, QWEN3_TORCH_PREBUILD: '1', JOBS: jobs, CMAKE_BUILD_PARALLEL_LEVEL: jobs };
// Pin the libtorch found above, so the build cannot pick another one.
delete env.Torch_DIR;
env.LIBTORCH = lib.root;
if (backend === 'node-gyp' && !env.npm_config_nodedir) {
  // node-gyp would download headers; use those of the Node that runs this, if it has them.
  const nodedir = path.resolve(process.execPath, '..', '..');
  if (!fs.existsSync(path.join(nodedir, 'include', 'node', 'node_api.h'))) {
    die(`no Node headers at ${nodedir}/include/node: set npm_config_nodedir, or use --backend cmake-js`);
  }
  env.npm_config_nodedir = nodedir;
}

const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen3-torch-prebuild-'));
try {
  for (const p of [...INPUTS, ...STAGED]) fs.cpSync(path.join(root, p), path.join(stage, p), { recursive: true });
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(stage, 'node_modules'), 'junction');
  process.stdout.write(`prebuild: ${name} with ${backend} against libtorch ${lib.version} ${lib.variant} at ${lib.root}\n`);
  const t0 = Date.now();
  const prebuildify = require('prebuildify');
  const opts = {
    cwd: stage,
    out: root,
    name,
    napi: true,
    tagLibc: true,
    strip: true,
    targets: [{ runtime: 'node', target: process.versions.node }],
  };
  if (backend === 'cmake-js') {
    // spawned with a shell, so the quoted command with its argument works on every platform
    opts.nodeGyp = `"${process.execPath}" "${__filename}"`;
    opts.shell = true;
  }
  // prebuildify hands its own process.env to the build
  delete process.env.Torch_DIR;
  Object.assign(process.env, env);
  prebuildify(opts, (err) => {
    fs.rmSync(stage, { recursive: true, force: true });
    if (err) die(`${backend} build failed: ${err.message}`);
    // the libc tag comes from prebuildify: check the file is where the loader will look
    if (!fs.existsSync(outFile)) die(`expected ${outFile}, but prebuildify wrote ${fs.readdirSync(outDir).join(', ')}`);
    const size = (fs.statSync(outFile).size / 1024).toFixed(0);
    process.stdout.write(`prebuild: wrote ${path.relative(root, outFile)} (${size} KiB) in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
    warnStaleOthers(inputTime);
  });
} catch (err) {
  fs.rmSync(stage, { recursive: true, force: true });
  die(err.message);
}
