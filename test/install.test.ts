// The package as a user meets it: `npm pack` (whose prepack compiles the TypeScript and, through
// prebuildify and node-gyp, the prebuild for this libtorch), then `npm install <tarball>` into
// empty projects. With the prebuild, install must run no compiler and the CLI, ESM and CommonJS
// entries must generate; with LIBTORCH pointing nowhere the error must name the fixes; with
// QWEN3_TORCH_BUILD_FROM_SOURCE=1 install must compile the addon with cmake-js from the tarball.
import { type SpawnSyncReturns, execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, isAbsolute, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findLibtorch } from '../lib/addon/index.js';
import { loadFixture } from './support/fixtures.js';

const repo = join(__dirname, '..');
// The libtorch of this checkout: python3's torch, or the project .venv's. A user has it as the
// torch of the python3 on their PATH; for the .venv's, that is the .venv's bin/ put first on PATH.
const found = findLibtorch(process.env, repo)!;
const userPath = [...(isAbsolute(found.python!) ? [dirname(found.python!)] : []), ...(process.env.PATH ?? '').split(delimiter)];
const [torchVersion, torchCuda] = execFileSync(found.python!, ['-c', 'import torch; print(torch.__version__.split("+")[0], torch.version.cuda or "", end="")'], { encoding: 'utf8' }).split(' ') as [string, string];
const variant = torchCuda ? `cu${torchCuda.replace('.', '')}` : 'cpu';
const prebuildFile = `qwen3-torch.torch${torchVersion}.${variant}.glibc.node`;
// The CUDA host has no registry and no Node headers (scripts/cuda-host/cuda-host-check.sh checks its
// prebuild there by other means); everywhere else this runs.
const offline = process.env.npm_config_offline === 'true';
const fx = loadFixture('tiny-gqa4');
const greedy = fx.runs.float32.hf_greedy.slice(0, 12);

let work: string;
let tarball: string;
const timings: Record<string, number> = {};

/**
 * The environment of a user's shell: none of the outer `npm test`'s npm_* variables, no
 * LD_LIBRARY_PATH, no node_modules/.bin of this repository on PATH, and a python3 with torch.
 */
function userEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) && k !== 'INIT_CWD' && k !== 'LD_LIBRARY_PATH') env[k] = v;
  env.PATH = userPath.filter((p) => !p.includes('node_modules')).join(delimiter);
  return { ...env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false', ...extra };
}

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 600_000 });
}

/** An empty project with `npm install <tarball>` done in it. */
function installInto(name: string, env: NodeJS.ProcessEnv): { dir: string; result: SpawnSyncReturns<string> } {
  const dir = join(work, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }));
  const t0 = Date.now();
  // --foreground-scripts: npm otherwise swallows what the install script says.
  const result = run('npm', ['install', tarball, '--prefer-offline', '--foreground-scripts'], dir, env);
  timings[name] = (Date.now() - t0) / 1000;
  if (result.status !== 0) throw new Error(`npm install in ${dir} failed:\n${result.stdout}\n${result.stderr}`);
  return { dir, result };
}

describe.skipIf(offline)('installed from the packed tarball', () => {
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'qwen3-install-'));
    const t0 = Date.now();
    const pack = run('npm', ['pack', '--pack-destination', work], repo, userEnv({ PATH: process.env.PATH }));
    timings.pack = (Date.now() - t0) / 1000;
    if (pack.status !== 0) throw new Error(`npm pack failed:\n${pack.stdout}\n${pack.stderr}`);
    tarball = join(work, pack.stdout.trim().split('\n').at(-1)!);
  });

  afterAll(() => {
    console.log(`install test timings (s): ${JSON.stringify(timings)}`);
    rmSync(work, { recursive: true, force: true });
  });

  describe('npm pack', () => {
    it('ships the lib output, native sources, both build files and the prebuild, and nothing else', () => {
      const files = execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' }).trim().split('\n').map((f) => f.replace(/^package\//, ''));
      for (const f of ['dist/index.js', 'dist/index.mjs', 'dist/index.d.ts', 'dist/index.d.mts', 'dist/cli.js', 'dist/addon/index.js', 'dist/addon/libtorch.js', 'native/sources.json', 'native/platform/preload.cc', 'CMakeLists.txt', 'binding.gyp', `prebuilds/linux-x64/${prebuildFile}`, 'prebuilds/linux-x64/qwen3_torch_preload.so', 'scripts/install/install.js', 'scripts/install/build-jobs.js', 'scripts/python/make_fixtures.py', 'package.json', 'README.md']) {
        expect(files).toContain(f);
      }
      const allowed = /^(dist\/([\w-]+\/)?[\w-]+\.(js|mjs|d\.ts|d\.mts)|native\/([\w-]+\/)?[\w-]+\.(cc|h|cu|cuh|json)|prebuilds\/[\w-]+\/[\w.-]+\.(node|so|dylib|dll)|CMakeLists\.txt|binding\.gyp|scripts\/install\/(install|build-jobs)\.js|scripts\/python\/(make_fixtures|qwen3_reference|bench_transformers|bench_transformers_serve)\.py|package\.json|README\.md|LICENSE)$/;
      // Only what is in lib/ today: no output of a moved or deleted source.
      const sources = new Set(execFileSync('git', ['ls-files', 'lib'], { cwd: repo, encoding: 'utf8' }).trim().split('\n').map((f) => f.replace(/^lib\//, '').replace(/\.(m?)ts$/, '')));
      expect(files.filter((f) => f.startsWith('dist/') && !sources.has(f.replace(/^dist\//, '').replace(/\.(d\.)?(m?)(js|ts)$/, '')))).toEqual([]);
      expect(files.filter((f) => !allowed.test(f))).toEqual([]);
    });

    it('made the prebuild without a run path, so it depends on the loader finding libtorch', () => {
      const dir = join(work, 'unpacked');
      mkdirSync(dir);
      execFileSync('tar', ['xzf', tarball, '-C', dir]);
      const dynamic = execFileSync('readelf', ['-d', join(dir, 'package', 'prebuilds', 'linux-x64', prebuildFile)], { encoding: 'utf8' });
      expect(dynamic).toContain('(NEEDED)             Shared library: [libtorch_cpu.so]');
      expect(dynamic).not.toMatch(/RPATH|RUNPATH/);
    });
  });

  describe('npm install <tarball> with the matching prebuild', () => {
    let app: string;
    let compilerLog: string;
    let installOutput: string;

    beforeAll(() => {
      // Every compiler and build tool on PATH fails and leaves a trace: the install must call none.
      const shims = join(work, 'no-compilers');
      mkdirSync(shims);
      compilerLog = join(work, 'compilers-called.log');
      for (const tool of ['cmake', 'make', 'ninja', 'cc', 'gcc', 'g++', 'c++', 'clang', 'clang++']) {
        writeFileSync(join(shims, tool), `#!/bin/sh\necho "${tool} $*" >> "${compilerLog}"\nexit 127\n`);
        chmodSync(join(shims, tool), 0o755);
      }
      const env = userEnv();
      const { dir, result } = installInto('app-prebuilt', { ...env, PATH: `${shims}${delimiter}${env.PATH}` });
      app = dir;
      installOutput = result.stdout + result.stderr;
    });

    it('runs no compiler and says it uses the prebuild', () => {
      expect(existsSync(compilerLog) ? readFileSync(compilerLog, 'utf8') : '').toBe('');
      expect(installOutput).toContain(`qwen3-torch: using the prebuilt addon ${prebuildFile} for the libtorch ${torchVersion} ${variant}`);
      expect(existsSync(join(app, 'node_modules', 'qwen3-torch', 'build', 'Release'))).toBe(false);
    });

    it('npx qwen3 info --json reports the prebuild, the libtorch it found and why, without LD_LIBRARY_PATH', () => {
      const r = run('npx', ['--no-install', 'qwen3', 'info', '--json'], app, userEnv());
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const info = JSON.parse(r.stdout);
      expect(info.addon.kind).toBe('prebuild');
      expect(info.addon.path).toBe(join(app, 'node_modules', 'qwen3-torch', 'prebuilds', 'linux-x64', prebuildFile));
      expect(info.addon.reason).toBe(`prebuilt for libtorch ${torchVersion} ${variant}, which matches the libtorch found (python: python3)`);
      expect(info.libtorch).toMatchObject({ version: torchVersion, variant, foundVia: 'python: python3' });
      expect(info.install.action).toBe('prebuild');
      expect(info.devices).toContain('cpu');
    });

    it('npx qwen3 generate gives the greedy tokens of Hugging Face', () => {
      const r = run('npx', ['--no-install', 'qwen3', 'generate', '--model', fx.modelPath, '--config', fx.configPath, '--device', 'cpu', '--dtype', 'float32', '--prompt-ids', fx.prompt.join(','), '--max-new-tokens', String(greedy.length), '--json'], app, userEnv());
      expect(r.stderr).toBe('');
      expect(JSON.parse(r.stdout).ids).toEqual(greedy);
    });

    const script = (importLine: string) => `${importLine}
  const model = await Qwen3Model.load(${JSON.stringify(fx.modelPath)}, { config: ${JSON.stringify(fx.configPath)}, device: 'cpu', dtype: 'float32' });
  const ids = await generateTextBasicCache(model, ${JSON.stringify(fx.prompt)}, { maxNewTokens: ${greedy.length} });
  model.dispose();
  console.log(JSON.stringify({ ids, exports: Object.keys(q).filter((k) => k !== 'default' && k !== '__esModule').sort() }));`;

    it('generates from ESM and from CommonJS, with the same exports', () => {
      writeFileSync(join(app, 'esm.mjs'), script("import * as q from 'qwen3-torch';\nconst { Qwen3Model, generateTextBasicCache } = q;"));
      writeFileSync(join(app, 'cjs.cjs'), `(async () => {\n${script("const q = require('qwen3-torch');\nconst { Qwen3Model, generateTextBasicCache } = q;")}\n})();`);
      const esm = run(process.execPath, ['esm.mjs'], app, userEnv());
      const cjs = run(process.execPath, ['cjs.cjs'], app, userEnv());
      expect(esm.stderr).toBe('');
      expect(cjs.stderr).toBe('');
      const e = JSON.parse(esm.stdout);
      const c = JSON.parse(cjs.stdout);
      expect(e.ids).toEqual(greedy);
      expect(c.ids).toEqual(greedy);
      expect(e.exports).toEqual(c.exports);
      expect(e.exports).toEqual(expect.arrayContaining(['Qwen3Model', 'Qwen3Tokenizer', 'generateTextBasicCache', 'runtimeInfo', 'QWEN_CONFIG_06_B']));
    });

    it('has types for import and for require', () => {
      const use = "const m: Promise<Qwen3Model> = Qwen3Model.load('x.pth', { config: '0.6B', device: 'cpu' });\nconst n: number = QWEN_CONFIG_06_B.n_layers;\nexport { m, n };\n";
      writeFileSync(join(app, 'types-esm.mts'), `import { Qwen3Model, QWEN_CONFIG_06_B } from 'qwen3-torch';\n${use}`);
      writeFileSync(join(app, 'types-cjs.cts'), `import { Qwen3Model, QWEN_CONFIG_06_B } from 'qwen3-torch';\n${use}`);
      const tsc = join(repo, 'node_modules', 'typescript', 'bin', 'tsc');
      const args = ['--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--skipLibCheck', '--typeRoots', join(repo, 'node_modules', '@types'), '--types', 'node', 'types-esm.mts', 'types-cjs.cts'];
      const ok = run(process.execPath, [tsc, ...args], app, userEnv());
      expect(ok.stdout + ok.stderr).toBe('');
      // and the types are real: a wrong option is a type error
      writeFileSync(join(app, 'types-bad.mts'), "import { Qwen3Model } from 'qwen3-torch';\nQwen3Model.load('x.pth', { device: 42 });\n");
      const bad = run(process.execPath, [tsc, ...args.slice(0, -2), 'types-bad.mts'], app, userEnv());
      expect(bad.stdout).toMatch(/types-bad\.mts.*error TS2322/);
    });

    it('with LIBTORCH pointing nowhere, fails with the fixes and a non-zero exit code', () => {
      const r = run('npx', ['--no-install', 'qwen3', 'info'], app, userEnv({ LIBTORCH: join(work, 'nowhere') }));
      expect(r.status).not.toBe(0);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain(`qwen3: could not load the qwen3-torch native addon.\n  libtorch:  LIBTORCH=${join(work, 'nowhere')}: ${join(work, 'nowhere')} does not exist`);
      expect(r.stderr).toContain(`pip install torch==${torchVersion} --index-url https://download.pytorch.org/whl/${variant}`);
      expect(r.stderr).toContain('set LIBTORCH=/path/to/libtorch');
      expect(r.stderr).toContain('npm rebuild qwen3-torch');
    });
  });

  describe('npm install --ignore-scripts <tarball>', () => {
    it('still loads the prebuild at first use: the install script only checks it', () => {
      const dir = join(work, 'app-no-scripts');
      mkdirSync(dir);
      writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'app-no-scripts', version: '1.0.0', private: true }));
      const install = run('npm', ['install', tarball, '--prefer-offline', '--ignore-scripts'], dir, userEnv());
      expect(install.status).toBe(0);
      const r = run('npx', ['--no-install', 'qwen3', 'info', '--json'], dir, userEnv());
      expect(r.status).toBe(0);
      const info = JSON.parse(r.stdout);
      expect(info.addon.kind).toBe('prebuild');
      expect(info.install).toBeNull();
    });
  });

  describe('npm install <tarball> with QWEN3_TORCH_BUILD_FROM_SOURCE=1', () => {
    it('compiles with cmake-js, says so, and loads the local build', () => {
      const { dir, result } = installInto('app-source', userEnv({ QWEN3_TORCH_BUILD_FROM_SOURCE: '1' }));
      expect(result.stdout).toContain(`qwen3-torch: building from source with cmake-js (QWEN3_TORCH_BUILD_FROM_SOURCE=1) against libtorch ${torchVersion} ${variant}`);
      expect(existsSync(join(dir, 'node_modules', 'qwen3-torch', 'build', 'Release', 'qwen3_torch.node'))).toBe(true);
      const r = run('npx', ['--no-install', 'qwen3', 'info', '--json'], dir, userEnv());
      expect(r.status).toBe(0);
      const info = JSON.parse(r.stdout);
      expect(info.addon.kind).toBe('build');
      expect(info.addon.path).toBe(join(dir, 'node_modules', 'qwen3-torch', 'build', 'Release', 'qwen3_torch.node'));
      expect(info.install.action).toBe('build');
      const gen = run('npx', ['--no-install', 'qwen3', 'generate', '--model', fx.modelPath, '--config', fx.configPath, '--device', 'cpu', '--dtype', 'float32', '--prompt-ids', fx.prompt.join(','), '--max-new-tokens', '4', '--json'], dir, userEnv());
      expect(JSON.parse(gen.stdout).ids).toEqual(greedy.slice(0, 4));
    }, 600_000);
  });
});
