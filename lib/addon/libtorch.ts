// Finds libtorch and says what it is, without loading it. One finder serves the runtime loader
// (choose.ts), the install script, the development set-up (scripts/dev/setup.js, which hands the
// libtorch it finds to CMake as LIBTORCH) and node-gyp's binding.gyp, through the command line:
//   node dist/addon/libtorch.js root|include|libdir|rpath|libraries|defines|tag|json
// It needs nothing but Node itself: the set-up runs it before anything else is checked.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { packageRoot, venvDir, venvPython } from './python.js';

/** A libtorch folder and how it was found. */
export interface FoundLibtorch {
  root: string;
  via: string;
  /** Named by LIBTORCH or Torch_DIR: when it is wrong that is an error, never silently replaced. */
  explicit: boolean;
  /** The Python whose torch package this is, when it was found through one. */
  python: string | null;
}

/** What a libtorch folder holds. */
export interface LibtorchFacts extends FoundLibtorch {
  libdir: string;
  version: string | null;
  /** cpu, cu130, rocm64, xpu; "cuda" when the CUDA version is unknown. */
  variant: string | null;
  cuda: boolean;
  cudaVersion: string | null;
  /** libtorch's libraries, in the order they must be opened. */
  libraries: string[];
  /** Why the folder is not a usable libtorch, else null. */
  problem: string | null;
}

// Where the torch package lives, without importing it: `import torch` takes a second or more, and
// the loader runs this at every process start.
const PY_FIND_TORCH =
  'import importlib.util as u\ns = u.find_spec("torch")\nprint(s.submodule_search_locations[0] if s and s.submodule_search_locations else "", end="")';

/** The torch package inside the project's .venv, found on disk (no interpreter started). */
function venvTorch(root: string): string | null {
  const lib = join(venvDir(root), 'lib');
  let versions: string[];
  try {
    versions = readdirSync(lib).filter((n) => /^python3\.\d+$/.test(n));
  } catch {
    return null;
  }
  for (const v of versions) {
    const torch = join(lib, v, 'site-packages', 'torch');
    if (existsSync(torch)) return torch;
  }
  return null;
}

/**
 * Looks for libtorch: LIBTORCH, then Torch_DIR (the user's own choices, as in CMakeLists.txt),
 * then the torch package of python3 or python on PATH, then the project's .venv under `root`.
 * `tried` lists what each step saw, for error messages.
 */
export function searchLibtorch(env: NodeJS.ProcessEnv = process.env, root: string = packageRoot): { found: FoundLibtorch | null; tried: string[] } {
  const tried: string[] = [];
  if (env.LIBTORCH) return { found: { root: resolve(env.LIBTORCH), via: `LIBTORCH=${env.LIBTORCH}`, explicit: true, python: null }, tried };
  tried.push('LIBTORCH is not set');
  if (env.Torch_DIR) return { found: { root: resolve(env.Torch_DIR, '..', '..', '..'), via: `Torch_DIR=${env.Torch_DIR}`, explicit: true, python: null }, tried };
  tried.push('Torch_DIR is not set');
  for (const python of ['python3', 'python']) {
    let torch: string;
    try {
      torch = execFileSync(python, ['-c', PY_FIND_TORCH], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], env, timeout: 30_000 });
    } catch (err) {
      tried.push(`${python}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'not on PATH' : 'failed to run'}`);
      continue;
    }
    if (torch) return { found: { root: torch, via: `python: ${python}`, explicit: false, python }, tried };
    tried.push(`${python}: no torch package (pip install torch)`);
  }
  const venvTorchRoot = venvTorch(root);
  if (venvTorchRoot) return { found: { root: venvTorchRoot, via: `project .venv: ${venvDir(root)}`, explicit: false, python: venvPython(root) }, tried };
  if (existsSync(venvDir(root))) tried.push(`${venvDir(root)}: no torch package`);
  return { found: null, tried };
}

/** The libtorch to use, or null. */
export function findLibtorch(env: NodeJS.ProcessEnv = process.env, root: string = packageRoot): FoundLibtorch | null {
  return searchLibtorch(env, root).found;
}

function readIfExists(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function headerVersion(root: string): string | null {
  const header = [join(root, 'include', 'torch', 'headeronly', 'version.h'), join(root, 'include', 'torch', 'csrc', 'api', 'include', 'torch', 'version.h')]
    .map(readIfExists)
    .filter(Boolean)
    .join('\n');
  const m = header.match(/TORCH_VERSION_MAJOR (\d+)[\s\S]*TORCH_VERSION_MINOR (\d+)[\s\S]*TORCH_VERSION_PATCH (\d+)/);
  return m ? `${m[1]}.${m[2]}.${m[3]}` : null;
}

/** Names of libtorch's libraries in the order they must be opened (each after what it needs). */
export function libraryNames(platform: string = process.platform): string[] {
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
export function inspectLibtorch(found: Pick<FoundLibtorch, 'root' | 'via'> & Partial<FoundLibtorch>, platform: string = process.platform): LibtorchFacts {
  const { root } = found;
  const libdir = join(root, 'lib');
  const out: LibtorchFacts = {
    explicit: false,
    python: null,
    ...found,
    libdir,
    version: null,
    variant: null,
    cuda: false,
    cudaVersion: null,
    libraries: [],
    problem: null,
  };
  if (!existsSync(root)) {
    out.problem = `${root} does not exist`;
    return out;
  }
  const main = libraryNames(platform).at(-1)!;
  if (!existsSync(join(libdir, main))) {
    out.problem = `${root} is not a libtorch folder (no lib/${main})`;
    return out;
  }
  out.libraries = libraryNames(platform).map((n) => join(libdir, n)).filter((p) => existsSync(p));
  out.cuda = out.libraries.some((p) => /torch_cuda\./.test(p));

  // pip's torch/version.py: __version__ = '2.13.0+cpu', cuda: Optional[str] = '13.0', hip = ...;
  // the libtorch zip's build-version: 2.11.0+cu130.
  const py = readIfExists(join(root, 'version.py'));
  const pyField = (name: string) => py?.match(new RegExp(`^${name}(?::[^=]*)?\\s*=\\s*'([^']*)'`, 'm'))?.[1] ?? null;
  const full = (py && pyField('__version__')) || readIfExists(join(root, 'build-version'))?.trim() || null;
  const [version, suffix] = full ? full.split('+') : [headerVersion(root), undefined];
  out.version = version ?? null;
  const cudaSuffix = suffix?.match(/^cu(\d+)(\d)$/);
  const cuda = pyField('cuda') ?? (cudaSuffix ? `${cudaSuffix[1]}.${cudaSuffix[2]}` : null);
  const hip = pyField('hip');
  if (cuda && out.cuda) {
    out.cudaVersion = cuda;
    const [major, minor] = cuda.split('.');
    out.variant = `cu${major}${minor ?? '0'}`;
  } else if (hip || suffix?.startsWith('rocm')) {
    out.variant = hip ? `rocm${hip.split('.').slice(0, 2).join('')}` : suffix!.replace(/\./g, '');
  } else if (out.cuda) {
    out.variant = 'cuda'; // CUDA libraries but no record of which CUDA: no prebuild can match
  } else if (suffix && /^[a-z]+[0-9]*$/.test(suffix)) {
    out.variant = suffix; // cpu, xpu
  } else {
    out.variant = 'cpu';
  }
  return out;
}

/** "libtorch 2.13.0 cpu", for messages. */
export function describeLibtorch(lib: { version: string | null; variant: string | null }): string {
  return `libtorch ${lib.version ?? '(unknown version)'} ${lib.variant ?? ''}`.trim();
}

/** The libtorch part of a prebuild's name: torch2.13.0.cpu, torch2.11.0.cu130. */
export function prebuildTag(info: { version: string | null; variant: string | null }): string {
  return `torch${info.version}.${info.variant}`;
}

/** Compiler and linker settings for building against `found` (binding.gyp reads them). */
export function buildSettings(found: FoundLibtorch) {
  const info = inspectLibtorch(found);
  const { root, via, libdir } = info;
  const context = readFileSync(join(root, 'include', 'ATen', 'Context.h'), 'utf8');
  const defines = [`QWEN3_TORCH_BUILT_VERSION="${info.version ?? 'unknown'}"`, `QWEN3_TORCH_BUILT_ROOT="${root}"`, `QWEN3_TORCH_BUILT_SOURCE="${via}"`];
  if (/setFloat32Precision\(\s*Float32Backend/.test(context)) defines.push('QWEN3_FP32_PRECISION_ENUM=1');
  else if (/setFloat32Precision\(\s*const std::string& backend/.test(context)) defines.push('QWEN3_FP32_PRECISION_STRING=1');
  const include = [join(root, 'include'), join(root, 'include', 'torch', 'csrc', 'api', 'include')];
  if (info.cuda) {
    defines.push('QWEN3_WITH_CUDA=1');
    if (info.cudaVersion) defines.push(`QWEN3_CUDA_VERSION="${info.cudaVersion}"`);
    include.push(join(process.env.CUDA_HOME || process.env.CUDA_PATH || '/usr/local/cuda', 'include'));
  }
  const libraries = ['-ltorch', '-ltorch_cpu', '-lc10', ...(info.cuda ? ['-ltorch_cuda', '-lc10_cuda'] : [])];
  // A prebuild (QWEN3_TORCH_PREBUILD=1) gets no run path: that folder exists only on the build machine.
  const rpath = process.env.QWEN3_TORCH_PREBUILD === '1' ? [] : [`-Wl,-rpath,${libdir}`];
  return { root, via, libdir, include, libraries, defines, cuda: info.cuda, rpath, version: info.version, variant: info.variant };
}

/** The command line: prints one setting of the libtorch found here, for build files and scripts. */
export function main(argv: string[]): number {
  const what = argv[0] ?? 'json';
  const found = findLibtorch();
  if (!found || !existsSync(join(found.root, 'include', 'ATen', 'Context.h'))) {
    process.stderr.write(
      `qwen3-torch: libtorch was not found${found ? ` (${found.via}: ${found.root} has no include/ATen/Context.h)` : ''}. ` +
        'Install PyTorch (pip install torch), or unpack the libtorch zip from https://pytorch.org and set ' +
        'LIBTORCH=/path/to/libtorch, or set Torch_DIR; in a checkout, npm run build sets one up in .venv.\n',
    );
    return 1;
  }
  const d = buildSettings(found);
  const out: Record<string, string> = {
    root: d.root,
    include: d.include.join(' '),
    libdir: d.libdir,
    rpath: d.rpath.join(' '),
    libraries: d.libraries.join(' '),
    // binding.gyp splits this output like a shell would: single quotes keep the inner double quotes.
    defines: d.defines.map((x) => `'${x}'`).join(' '),
    tag: prebuildTag(d),
    json: JSON.stringify(d),
  };
  if (!(what in out)) {
    process.stderr.write(`unknown query ${what} (one of ${Object.keys(out).join(', ')})\n`);
    return 2;
  }
  process.stdout.write(`${out[what]}\n`);
  return 0;
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
