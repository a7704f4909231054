#!/usr/bin/env node
// The set-up of a development checkout, run first by `npm run qwen3`, `npm run build`,
// `npm run bench` and `npm test` (pretest), so that a machine with only Node and Python 3 needs
// no other command. In order, each only when needed:
//   1. npm dependencies: `npm ci` when node_modules is missing or does not match package-lock.json;
//   2. TypeScript: lib/ compiled into a clean dist/ when a source changed since the last compile;
//   3. libtorch: found as the loader finds it (lib/addon/libtorch.ts: LIBTORCH, Torch_DIR,
//      python3's torch, the project .venv); with none, the pinned torch
//      (scripts/python/requirements.txt) is installed into a project-local .venv, never into
//      the user's own Python;
//   4. with --references: the pinned packages the Python scripts import, in the Python that runs
//      them (lib/addon/python.ts); unless that is QWEN3_PYTHON, what it lacks goes into .venv;
//   5. the native addon: cmake-js against that libtorch when the addon is missing, was built for
//      another libtorch, or is older than native/, CMakeLists.txt, binding.gyp or the libtorch.
// Each action prints one line on stderr with the time it took; with nothing to do, nothing is
// printed. What a step's tools print goes to a log file, shown when the step fails.
//   node scripts/dev/setup.js [--references]
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { buildJobs } = require('../install/build-jobs.js');

const root = path.resolve(__dirname, '..', '..');
const REQUIREMENTS = path.join(root, 'scripts', 'python', 'requirements.txt');
const CPU_WHEELS = 'https://download.pytorch.org/whl/cpu';

/** A failure with a message that says what to do; printed without a stack. */
class SetupError extends Error {}

let lineOpen = false;
// Ctrl-C also reaches the tool running in the foreground, which ends; the set-up's code is all
// synchronous, so this runs only after it has reported that and cleaned up.
process.on('SIGINT', () => process.exit(130));

/** Runs `fn` as one action: "qwen3-torch setup: WHAT ... done in 12.3 s". */
function act(what, fn) {
  process.stderr.write(`qwen3-torch setup: ${what} ...`);
  lineOpen = true;
  const t0 = Date.now();
  fn();
  process.stderr.write(` done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  lineOpen = false;
}

/** Runs a tool with its output in a log file; throws with the log's tail when it fails. */
function run(command, args, options = {}) {
  const log = path.join(os.tmpdir(), `qwen3-torch-setup-${process.pid}-${Date.now()}.log`);
  const fd = fs.openSync(log, 'w');
  let r;
  try {
    r = spawnSync(command, args, { cwd: root, env: options.env ?? process.env, stdio: ['ignore', fd, fd] });
  } finally {
    fs.closeSync(fd);
  }
  const shown = `${path.basename(command)} ${args.join(' ')}`;
  if (r.error) {
    fs.rmSync(log, { force: true });
    throw new SetupError(r.error.code === 'ENOENT' ? `${command} is not on PATH${options.missing ? `: ${options.missing}` : ''}` : `could not run ${shown}: ${r.error.message}`);
  }
  if (r.status !== 0) {
    const tail = fs.readFileSync(log, 'utf8').trimEnd().split('\n').slice(-40).join('\n');
    throw new SetupError(`${shown} failed (${r.signal ?? `exit ${r.status}`}); the end of its output (all of it in ${log}):\n${tail}`);
  }
  fs.rmSync(log, { force: true });
  return r;
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

/** The newest modification time under `paths` (folders count too: a deleted file changes its folder). */
function newestMtime(paths) {
  let newest = 0;
  const visit = (p) => {
    let s;
    try {
      s = fs.statSync(p);
    } catch {
      return;
    }
    newest = Math.max(newest, s.mtimeMs);
    if (s.isDirectory()) for (const f of fs.readdirSync(p)) visit(path.join(p, f));
  };
  paths.forEach(visit);
  return newest;
}

function mtime(file) {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return -1;
  }
}

/** Writes a stamp file dated `t0`, when the step began: a source edited during the step is newer. */
function writeStamp(file, content, t0) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
  fs.utimesSync(file, t0 / 1000, t0 / 1000);
}

// --- 1. npm dependencies ----------------------------------------------------------------------

/** Why `npm ci` is needed, or null. npm records what it installed in node_modules/.package-lock.json. */
function npmCiReason() {
  if (!fs.existsSync(path.join(root, 'node_modules'))) return 'node_modules is missing';
  const installed = readJson(path.join(root, 'node_modules', '.package-lock.json'));
  if (!installed) return 'node_modules has no record of what npm installed';
  const lock = readJson(path.join(root, 'package-lock.json'));
  for (const [key, entry] of Object.entries(lock?.packages ?? {})) {
    // Optional packages are other platforms' binaries, which npm leaves out here.
    if (!key.startsWith('node_modules/') || entry.optional) continue;
    if (installed.packages?.[key]?.version !== entry.version) return `node_modules does not match package-lock.json (${key.slice('node_modules/'.length)})`;
  }
  return null;
}

function npmDependencies() {
  const why = npmCiReason();
  if (!why) return;
  // Inside an npm script, the npm that runs it; otherwise the one on PATH.
  const cli = process.env.npm_execpath;
  const [command, prefix] = cli && /npm-cli\.js$/.test(cli) ? [process.execPath, [cli]] : ['npm', []];
  act(`installing the npm dependencies with npm ci (${why})`, () => {
    run(command, [...prefix, 'ci', '--no-audit', '--no-fund'], { missing: 'install Node.js 20 with npm' });
  });
}

// --- 2. TypeScript ----------------------------------------------------------------------------

function typescript() {
  const stamp = path.join(root, 'dist', '.compiled');
  const changed = newestMtime([path.join(root, 'lib'), path.join(root, 'tsconfig.json')]);
  if (changed <= mtime(stamp)) return;
  act(`compiling lib/ into dist/ with tsc (${fs.existsSync(stamp) ? 'lib/ changed' : 'not compiled yet'})`, () => {
    const t0 = Date.now();
    // A clean dist/: files of moved or deleted sources must not linger there (npm pack ships dist/).
    fs.rmSync(path.join(root, 'dist'), { recursive: true, force: true });
    run(process.execPath, [require.resolve('typescript/bin/tsc', { paths: [root] }), '-p', 'tsconfig.json']);
    writeStamp(stamp, '', t0);
  });
}

// --- 3. and 4. Python: libtorch and the references ----------------------------------------------

/** [{ name, version }] from scripts/python/requirements.txt. */
function pins() {
  return fs
    .readFileSync(REQUIREMENTS, 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean)
    .map((l) => {
      const m = /^([A-Za-z0-9_.-]+)==([^\s;]+)$/.exec(l);
      if (!m) throw new SetupError(`${REQUIREMENTS}: expected name==version but found "${l}"`);
      return { name: m[1], version: m[2] };
    });
}

const spec = (p) => `${p.name}==${p.version}`;

/** The installed version of each package in `python` (null where missing), or null if it does not run. */
function installedVersions(python, names) {
  const program =
    'import importlib.metadata as m, json, sys\n' +
    'def v(n):\n  try: return m.version(n)\n  except m.PackageNotFoundError: return None\n' +
    'print(json.dumps({n: v(n) for n in sys.argv[1:]}))';
  const r = spawnSync(python, ['-c', program, ...names], { encoding: 'utf8' });
  return r.status === 0 ? JSON.parse(r.stdout) : null;
}

/** torch==2.13.0 is met by 2.13.0+cpu or 2.13.0+cu130: the local label names the build, not the version. */
const satisfies = (installed, pin) => Boolean(installed) && installed.split('+')[0] === pin.version;

function venvPaths() {
  const { venvDir, venvPython } = require(path.join(root, 'dist', 'addon', 'python.js'));
  return { dir: venvDir(root), python: venvPython(root) };
}

/** The project's .venv, made with python3 -m venv when missing. */
function ensureVenv() {
  const venv = venvPaths();
  if (fs.existsSync(venv.python)) {
    if (spawnSync(venv.python, ['-c', '']).status === 0) return venv;
    throw new SetupError(`${venv.dir} exists but ${venv.python} does not run: remove ${venv.dir} and run again`);
  }
  if (fs.existsSync(venv.dir)) throw new SetupError(`${venv.dir} exists but holds no Python environment: remove it and run again`);
  try {
    run('python3', ['-m', 'venv', venv.dir], { missing: 'install Python 3.10 or newer, or set LIBTORCH to an unpacked libtorch (see docs/install.md)' });
  } catch (err) {
    fs.rmSync(venv.dir, { recursive: true, force: true }); // a half-made environment would only fail later
    throw err;
  }
  return venv;
}

/**
 * Where pip gets torch. On Linux x64 without an NVIDIA driver, PyTorch's CPU wheels: PyPI's torch
 * would bring gigabytes of CUDA libraries. A pip configured with its own sources (a mirror or
 * local wheels, in pip.conf or PIP_* variables) is left to them; QWEN3_TORCH_INDEX_URL overrides.
 */
function torchIndexArgs(python) {
  if (process.env.QWEN3_TORCH_INDEX_URL !== undefined) return process.env.QWEN3_TORCH_INDEX_URL ? ['--index-url', process.env.QWEN3_TORCH_INDEX_URL] : [];
  if (process.platform !== 'linux' || process.arch !== 'x64' || fs.existsSync('/proc/driver/nvidia/version')) return [];
  if (['PIP_INDEX_URL', 'PIP_EXTRA_INDEX_URL', 'PIP_FIND_LINKS'].some((k) => process.env[k])) return [];
  const config = spawnSync(python, ['-m', 'pip', 'config', 'list'], { encoding: 'utf8' });
  if (/(index-url|find-links)=/.test(config.stdout ?? '')) return [];
  return ['--index-url', CPU_WHEELS];
}

function pipInstall(python, args) {
  run(python, ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', ...args]);
}

function installTorch(python) {
  const torch = pins().find((p) => p.name === 'torch');
  pipInstall(python, [...torchIndexArgs(python), spec(torch)]);
}

function libtorch() {
  const finder = require(path.join(root, 'dist', 'addon', 'libtorch.js'));
  const search = () => {
    const s = finder.searchLibtorch(process.env, root);
    return { ...s, lib: s.found ? finder.inspectLibtorch(s.found) : null };
  };
  let s = search();
  if (s.lib?.problem && s.lib.explicit) throw new SetupError(`${s.lib.via}: ${s.lib.problem}. Point it at a libtorch, or unset it to let the set-up find or install one.`);
  if (s.lib && !s.lib.problem) return s.lib;
  const torch = pins().find((p) => p.name === 'torch');
  const why = s.lib ? `${s.lib.via}: ${s.lib.problem}` : `none found: ${s.tried.join('; ')}`;
  act(`installing libtorch (${spec(torch)}) into .venv (${why})`, () => installTorch(ensureVenv().python));
  s = search();
  if (!s.lib || s.lib.problem) throw new SetupError(`torch was installed into .venv but libtorch is still not found (${s.lib ? `${s.lib.via}: ${s.lib.problem}` : s.tried.join('; ')})`);
  return s.lib;
}

function references() {
  const { projectPython } = require(path.join(root, 'dist', 'addon', 'python.js'));
  const wanted = pins();
  const python = projectPython(root);
  const have = installedVersions(python, wanted.map((p) => p.name)) ?? {};
  const unmet = wanted.filter((p) => !satisfies(have[p.name], p));
  if (unmet.length === 0) return;
  if (process.env.QWEN3_PYTHON) {
    // The user's own Python is used as it is: other versions are their choice, missing packages an error.
    const missing = wanted.filter((p) => !have[p.name]);
    if (missing.length === 0) return;
    throw new SetupError(
      `QWEN3_PYTHON=${python} lacks ${missing.map((p) => p.name).join(', ')}, which the Python references need: ` +
        `install them (${python} -m pip install -r ${path.relative(root, REQUIREMENTS)}) or unset QWEN3_PYTHON to let the set-up use .venv`,
    );
  }
  const found = unmet.map((p) => `${p.name} ${have[p.name] ?? 'missing'}`).join(', ');
  act(`installing the Python references (${unmet.map(spec).join(', ')}) into .venv (${python}: ${found})`, () => {
    const venv = ensureVenv();
    installTorch(venv.python);
    pipInstall(venv.python, ['-r', REQUIREMENTS]);
  });
}

// --- 5. the native addon ----------------------------------------------------------------------

/** The Torch_DIR CMake settled on in the existing build folder, if any. */
function cachedTorchDir() {
  try {
    return /^Torch_DIR:PATH=(.*)$/m.exec(fs.readFileSync(path.join(root, 'build', 'CMakeCache.txt'), 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
}

const real = (p) => {
  try {
    return fs.realpathSync(p);
  } catch {
    return p;
  }
};

/**
 * An addon built without this set-up (no stamp): when it says it was built against this libtorch
 * and is newer than every input, it is recorded as is instead of being compiled again.
 */
function adoptBuild(addon, stamp, lib, inputs) {
  const { probe } = require(path.join(root, 'dist', 'addon', 'probe.js'));
  const r = probe({ addon, helper: null, libraries: [] });
  if (!r.ok || real(r.built.torchRoot) !== real(lib.root) || mtime(addon) < newestMtime(inputs)) return false;
  writeStamp(stamp, `${JSON.stringify({ libtorch: lib.root, via: lib.via })}\n`, mtime(addon));
  return true;
}

function nativeAddon(lib) {
  const addon = path.join(root, 'build', 'Release', 'qwen3_torch.node');
  const stamp = path.join(root, 'build', 'setup-native.json');
  const inputs = [path.join(root, 'native'), path.join(root, 'CMakeLists.txt'), path.join(root, 'binding.gyp'), ...lib.libraries];
  if (fs.existsSync(addon) && !fs.existsSync(stamp) && adoptBuild(addon, stamp, lib, inputs)) return;
  const built = readJson(stamp);
  const why = !fs.existsSync(addon)
    ? 'not built yet'
    : !built
      ? 'no record of the libtorch it was built for'
      : built.libtorch !== lib.root
        ? `it was built for the libtorch at ${built.libtorch}`
        : newestMtime(inputs) > mtime(stamp)
          ? 'native sources or libtorch changed'
          : null;
  if (!why) return;
  const cmake = spawnSync('cmake', ['--version']);
  if (cmake.error || cmake.status !== 0) {
    throw new SetupError(
      'compiling the addon needs CMake 3.19 or newer and a C++20 compiler, and cmake is not on PATH. Install them ' +
        '(Debian/Ubuntu: apt install cmake g++; macOS: xcode-select --install && brew install cmake; anywhere: pip install cmake).',
    );
  }
  // A build folder configured for another libtorch keeps it in CMake's cache: start it afresh.
  const cached = cachedTorchDir();
  const command = cached && real(cached) !== real(path.join(lib.root, 'share', 'cmake', 'Torch')) ? 'rebuild' : 'compile';
  const env = { ...process.env };
  if (!lib.explicit) {
    // CMake looks for LIBTORCH first: hand it the libtorch found here, so build and loader agree.
    env.LIBTORCH = lib.root;
    delete env.Torch_DIR;
  }
  const jobs = buildJobs();
  act(`compiling the native addon with cmake-js against libtorch ${lib.version} ${lib.variant} (${lib.via}; ${why})`, () => {
    const t0 = Date.now();
    run(process.execPath, [require.resolve('cmake-js/bin/cmake-js', { paths: [root] }), command, '--parallel', jobs], { env });
    if (!fs.existsSync(addon)) throw new SetupError(`cmake-js finished but ${addon} is missing`);
    writeStamp(stamp, `${JSON.stringify({ libtorch: lib.root, via: lib.via })}\n`, t0);
  });
}

function main(argv) {
  const unknown = argv.filter((a) => a !== '--references');
  if (unknown.length) throw new SetupError(`unknown argument ${unknown[0]} (the only option is --references)`);
  npmDependencies();
  typescript();
  const lib = libtorch();
  if (argv.includes('--references')) references();
  nativeAddon(lib);
}

try {
  main(process.argv.slice(2));
} catch (err) {
  if (!(err instanceof SetupError)) throw err;
  process.stderr.write(`${lineOpen ? '\n' : ''}qwen3-torch setup: ${err.message}\n`);
  process.exitCode = 1;
}
