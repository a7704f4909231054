#!/usr/bin/env node
// Finds libtorch the same way CMakeLists.txt does — LIBTORCH, then Torch_DIR, then the Python
// PyTorch install — and says what it is. Shipped with the package: the loader (lib/binary.ts) and
// the install script use it at run time to pick a prebuild, binding.gyp (node-gyp) at build time:
//   node scripts/find-libtorch.js root|include|libdir|rpath|libraries|defines|tag|json
'use strict';
const { execFileSync } = require('node:child_process');
const { existsSync, readFileSync, readdirSync } = require('node:fs');
const { join, resolve } = require('node:path');

// Where the torch package lives, without importing it: `import torch` takes a second or more, and
// the loader runs this at every process start.
const PY_FIND_TORCH =
  'import importlib.util as u\ns = u.find_spec("torch")\nprint(s.submodule_search_locations[0] if s and s.submodule_search_locations else "", end="")';

/**
 * Looks for libtorch in the build's order. `found` is `{ root, via }` (root holds lib/ and, for
 * building, include/) or null; `tried` lists what each step saw, for error messages.
 */
function searchLibtorch(env = process.env) {
  const tried = [];
  if (env.LIBTORCH) return { found: { root: resolve(env.LIBTORCH), via: `LIBTORCH=${env.LIBTORCH}` }, tried };
  tried.push('LIBTORCH is not set');
  if (env.Torch_DIR) return { found: { root: resolve(env.Torch_DIR, '..', '..', '..'), via: `Torch_DIR=${env.Torch_DIR}` }, tried };
  tried.push('Torch_DIR is not set');
  for (const python of ['python3', 'python']) {
    let root;
    try {
      root = execFileSync(python, ['-c', PY_FIND_TORCH], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], env, timeout: 30_000 });
    } catch (err) {
      tried.push(`${python}: ${err.code === 'ENOENT' ? 'not on PATH' : 'failed to run'}`);
      continue;
    }
    if (root) return { found: { root, via: `python: ${python}` }, tried };
    tried.push(`${python}: no torch package (pip install torch)`);
  }
  return { found: null, tried };
}

/** `{ root, via }` of the libtorch to use, or null. */
function findLibtorch(env = process.env) {
  return searchLibtorch(env).found;
}

function readIfExists(path) {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function headerVersion(root) {
  const header = [join(root, 'include', 'torch', 'headeronly', 'version.h'), join(root, 'include', 'torch', 'csrc', 'api', 'include', 'torch', 'version.h')]
    .map(readIfExists)
    .filter(Boolean)
    .join('\n');
  const m = header.match(/TORCH_VERSION_MAJOR (\d+)[\s\S]*TORCH_VERSION_MINOR (\d+)[\s\S]*TORCH_VERSION_PATCH (\d+)/);
  return m ? `${m[1]}.${m[2]}.${m[3]}` : null;
}

/** Names of libtorch's libraries in the order they must be opened (each after what it needs). */
function libraryNames(platform = process.platform) {
  const base = ['c10', 'c10_cuda', 'torch_cpu', 'torch_cuda', 'torch'];
  if (platform === 'win32') return base.map((n) => `${n}.dll`);
  return base.map((n) => `lib${n}.${platform === 'darwin' ? 'dylib' : 'so'}`);
}

/**
 * What a libtorch folder holds, without loading it: version, variant ("cpu", "cu130", "rocm64",
 * "xpu"), the libraries to open, and `problem` when it is not a usable libtorch. A prebuild only
 * loads against the libtorch version and variant it was built for: libtorch's C++ ABI changes
 * between releases, and a CUDA build needs the CUDA libraries it was linked with.
 */
function inspectLibtorch(found, platform = process.platform) {
  const { root, via } = found;
  const libdir = join(root, 'lib');
  const out = { root, via, libdir, version: null, variant: null, cuda: false, cudaVersion: null, libraries: [], problem: null };
  if (!existsSync(root)) {
    out.problem = `${root} does not exist`;
    return out;
  }
  const main = libraryNames(platform).at(-1);
  if (!existsSync(join(libdir, main))) {
    out.problem = `${root} is not a libtorch folder (no lib/${main})`;
    return out;
  }
  out.libraries = libraryNames(platform).map((n) => join(libdir, n)).filter((p) => existsSync(p));
  out.cuda = out.libraries.some((p) => /torch_cuda\./.test(p));

  // pip's torch/version.py: __version__ = '2.13.0+cpu', cuda: Optional[str] = '13.0', hip = ...;
  // the libtorch zip's build-version: 2.11.0+cu130.
  const py = readIfExists(join(root, 'version.py'));
  const pyField = (name) => py?.match(new RegExp(`^${name}(?::[^=]*)?\\s*=\\s*'([^']*)'`, 'm'))?.[1] ?? null;
  const full = (py && pyField('__version__')) || readIfExists(join(root, 'build-version'))?.trim() || null;
  const [version, suffix] = full ? full.split('+') : [headerVersion(root), undefined];
  out.version = version ?? null;
  const cuda = pyField('cuda') ?? (suffix?.match(/^cu(\d+)(\d)$/) ? suffix.replace(/^cu(\d+)(\d)$/, '$1.$2') : null);
  const hip = pyField('hip');
  if (cuda && out.cuda) {
    out.cudaVersion = cuda;
    const [major, minor] = cuda.split('.');
    out.variant = `cu${major}${minor ?? '0'}`;
  } else if (hip || suffix?.startsWith('rocm')) {
    out.variant = hip ? `rocm${hip.split('.').slice(0, 2).join('')}` : suffix.replace(/\./g, '');
  } else if (out.cuda) {
    out.variant = 'cuda'; // CUDA libraries but no record of which CUDA: no prebuild can match
  } else if (suffix && /^[a-z]+[0-9]*$/.test(suffix)) {
    out.variant = suffix; // cpu, xpu
  } else {
    out.variant = 'cpu';
  }
  return out;
}

/** The libtorch part of a prebuild's name: torch2.13.0.cpu, torch2.11.0.cu130. */
function prebuildTag(info) {
  return `torch${info.version}.${info.variant}`;
}

function describe(found) {
  const { root, via } = found;
  const info = inspectLibtorch(found);
  const libdir = info.libdir;
  const libs = existsSync(libdir) ? readdirSync(libdir) : [];
  const cuda = libs.some((f) => /^libtorch_cuda\.(so|dylib)/.test(f));
  const context = readFileSync(join(root, 'include', 'ATen', 'Context.h'), 'utf8');
  const defines = [
    `QWEN3_TORCH_BUILT_VERSION="${info.version ?? 'unknown'}"`,
    `QWEN3_TORCH_BUILT_ROOT="${root}"`,
    `QWEN3_TORCH_BUILT_SOURCE="${via}"`,
  ];
  if (/setFloat32Precision\(\s*Float32Backend/.test(context)) defines.push('QWEN3_FP32_PRECISION_ENUM=1');
  else if (/setFloat32Precision\(\s*const std::string& backend/.test(context)) defines.push('QWEN3_FP32_PRECISION_STRING=1');
  const include = [join(root, 'include'), join(root, 'include', 'torch', 'csrc', 'api', 'include')];
  if (cuda) {
    defines.push('QWEN3_WITH_CUDA=1');
    if (info.cudaVersion) defines.push(`QWEN3_CUDA_VERSION="${info.cudaVersion}"`);
    const cudaHome = process.env.CUDA_HOME || process.env.CUDA_PATH || '/usr/local/cuda';
    include.push(join(cudaHome, 'include'));
  }
  const libraries = ['-ltorch', '-ltorch_cpu', '-lc10', ...(cuda ? ['-ltorch_cuda', '-lc10_cuda'] : [])];
  // A prebuild (QWEN3_TORCH_PREBUILD=1) gets no run path: that folder exists only on the build machine.
  const rpath = process.env.QWEN3_TORCH_PREBUILD === '1' ? [] : [`-Wl,-rpath,${libdir}`];
  return { root, via, libdir, include, libraries, defines, cuda, rpath, version: info.version, variant: info.variant };
}

if (require.main === module) {
  const found = findLibtorch();
  if (!found || !existsSync(join(found.root, 'include', 'ATen', 'Context.h'))) {
    process.stderr.write(
      `qwen3-torch: libtorch was not found${found ? ` (${found.via}: ${found.root} has no include/ATen/Context.h)` : ''}. ` +
        'Install PyTorch (pip install torch), or unpack the libtorch zip from https://pytorch.org and set ' +
        'LIBTORCH=/path/to/libtorch, or set Torch_DIR.\n',
    );
    process.exit(1);
  }
  const d = describe(found);
  const what = process.argv[2] ?? 'json';
  const out = {
    root: d.root,
    include: d.include.join(' '),
    libdir: d.libdir,
    rpath: d.rpath.join(' '),
    libraries: d.libraries.join(' '),
    // binding.gyp splits this output like a shell would: single quotes keep the inner double quotes.
    defines: d.defines.map((x) => `'${x}'`).join(' '),
    tag: prebuildTag(d),
    json: JSON.stringify(d),
  }[what];
  if (out === undefined) {
    process.stderr.write(`unknown query ${what}\n`);
    process.exit(2);
  }
  process.stdout.write(`${out}\n`);
}

module.exports = { findLibtorch, searchLibtorch, inspectLibtorch, libraryNames, prebuildTag, describe };
