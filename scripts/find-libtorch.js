#!/usr/bin/env node
// Finds libtorch the same way CMakeLists.txt does — LIBTORCH, then Torch_DIR, then the Python
// PyTorch install — and prints what binding.gyp (node-gyp) needs to build against it:
//   node scripts/find-libtorch.js root|include|libdir|libraries|defines|json
'use strict';
const { execFileSync } = require('node:child_process');
const { existsSync, readFileSync, readdirSync } = require('node:fs');
const { join, resolve } = require('node:path');

/** { root, via } of the libtorch to use, or null. `root` holds include/ and lib/. */
function findLibtorch(env = process.env) {
  if (env.LIBTORCH) return { root: resolve(env.LIBTORCH), via: `LIBTORCH=${env.LIBTORCH}` };
  if (env.Torch_DIR) return { root: resolve(env.Torch_DIR, '..', '..', '..'), via: `Torch_DIR=${env.Torch_DIR}` };
  for (const python of ['python3', 'python']) {
    try {
      const root = execFileSync(python, ['-c', 'import torch, os; print(os.path.dirname(torch.__file__), end="")'], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      if (root) return { root, via: `python=${python}` };
    } catch {
      // try the next interpreter
    }
  }
  return null;
}

function torchVersion(root) {
  const header = [join(root, 'include', 'torch', 'headeronly', 'version.h'), join(root, 'include', 'torch', 'csrc', 'api', 'include', 'torch', 'version.h')]
    .filter(existsSync)
    .map((p) => readFileSync(p, 'utf8'))
    .join('\n');
  const m = header.match(/TORCH_VERSION_MAJOR (\d+)[\s\S]*TORCH_VERSION_MINOR (\d+)[\s\S]*TORCH_VERSION_PATCH (\d+)/);
  return m ? `${m[1]}.${m[2]}.${m[3]}` : 'unknown';
}

function describe(found) {
  const { root, via } = found;
  const libdir = join(root, 'lib');
  const libs = existsSync(libdir) ? readdirSync(libdir) : [];
  const cuda = libs.some((f) => /^libtorch_cuda\.(so|dylib)/.test(f));
  const context = readFileSync(join(root, 'include', 'ATen', 'Context.h'), 'utf8');
  const defines = [
    `QWEN3_TORCH_BUILT_VERSION="${torchVersion(root)}"`,
    `QWEN3_TORCH_BUILT_ROOT="${root}"`,
    `QWEN3_TORCH_BUILT_SOURCE="${via}"`,
  ];
  if (/setFloat32Precision\(\s*Float32Backend/.test(context)) defines.push('QWEN3_FP32_PRECISION_ENUM=1');
  else if (/setFloat32Precision\(\s*const std::string& backend/.test(context)) defines.push('QWEN3_FP32_PRECISION_STRING=1');
  const include = [join(root, 'include'), join(root, 'include', 'torch', 'csrc', 'api', 'include')];
  if (cuda) {
    defines.push('QWEN3_WITH_CUDA=1');
    const cudaHome = process.env.CUDA_HOME || process.env.CUDA_PATH || '/usr/local/cuda';
    include.push(join(cudaHome, 'include'));
  }
  const libraries = ['-ltorch', '-ltorch_cpu', '-lc10', ...(cuda ? ['-ltorch_cuda', '-lc10_cuda'] : [])];
  return { root, via, libdir, include, libraries, defines, cuda };
}

if (require.main === module) {
  const found = findLibtorch();
  if (!found || !existsSync(join(found.root, 'include', 'ATen', 'Context.h'))) {
    process.stderr.write(
      'qwen3-torch: libtorch was not found. Install PyTorch (pip install torch), or unpack the libtorch zip from ' +
        'https://pytorch.org and set LIBTORCH=/path/to/libtorch, or set Torch_DIR.\n',
    );
    process.exit(1);
  }
  const d = describe(found);
  const what = process.argv[2] ?? 'json';
  const out = { root: d.root, include: d.include.join(' '), libdir: d.libdir, libraries: d.libraries.join(' '), // binding.gyp splits this output like a shell would: single quotes keep the inner double quotes.
    defines: d.defines.map((x) => `'${x}'`).join(' '), json: JSON.stringify(d) }[what];
  if (out === undefined) {
    process.stderr.write(`unknown query ${what}\n`);
    process.exit(2);
  }
  process.stdout.write(`${out}\n`);
}

module.exports = { findLibtorch, describe };
