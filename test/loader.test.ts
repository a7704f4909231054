// The addon loader (lib/addon/) and libtorch discovery (lib/addon/libtorch.ts): which binary is
// chosen for which libtorch, that a binary which crashes on load is caught in a child process,
// the error a user sees, and what `npm install` decides to do.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, isAbsolute, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AddonLoadError, chooseAddon, findLibtorch, inspectLibtorch, listPrebuilds, matchPrebuild, parsePrebuildName, planInstall } from '../lib/addon/index.js';

const repo = join(__dirname, '..');
const localBuild = join(repo, 'build', 'Release', 'qwen3_torch.node');
const helper = join(repo, 'build', 'Release', 'qwen3_torch_preload.so');
// The libtorch found here (python3's torch, or the project .venv's where python3 has none), and
// what the Python it belongs to says about it: CPU in CI, CUDA on the CUDA host.
const found = findLibtorch(process.env, repo)!;
const [torchVersion, torchCuda] = execFileSync(found.python!, ['-c', 'import torch; print(torch.__version__.split("+")[0], torch.version.cuda or "", end="")'], { encoding: 'utf8' }).split(' ') as [string, string];
const variant = torchCuda ? `cu${torchCuda.replace('.', '')}` : 'cpu';
const torchRoot = found.root;
const tag = `torch${torchVersion}.${variant}`;
// The fake package roots below have no .venv: they find that libtorch as an installed package
// does, through python3 on PATH, which for the .venv's torch is the .venv's own (bin/ first).
const userPath = [...(isAbsolute(found.python!) ? [dirname(found.python!)] : []), ...(process.env.PATH ?? '').split(delimiter)].join(delimiter);
const via = 'python: python3';

let work: string;
let n = 0;
/** An empty package root, with files copied in: { 'prebuilds/linux-x64/x.node': source }. */
function fakeRoot(files: Record<string, string>): string {
  const root = join(work, `root${n++}`);
  mkdirSync(root, { recursive: true });
  for (const [dest, src] of Object.entries(files)) {
    mkdirSync(join(root, dest, '..'), { recursive: true });
    copyFileSync(src, join(root, dest));
  }
  return root;
}
// Each test checks binaries in a fresh cache, so no earlier success is remembered.
const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({ ...process.env, PATH: userPath, QWEN3_HOME: join(work, `home${n++}`), ...extra });

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

let crasher: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'qwen3-loader-'));
  // A "binary" that aborts while it loads, as an ABI clash inside libtorch's static initialisers can.
  writeFileSync(join(work, 'crash.c'), '#include <stdlib.h>\n__attribute__((constructor)) static void boom(void) { abort(); }\n');
  crasher = join(work, 'crash.node');
  execFileSync('cc', ['-shared', '-fPIC', '-o', crasher, join(work, 'crash.c')]);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('prebuild names', () => {
  it('parse into libtorch version, variant and C library', () => {
    expect(parsePrebuildName('qwen3-torch.torch2.11.0.cu130.glibc.node')).toEqual({ file: 'qwen3-torch.torch2.11.0.cu130.glibc.node', version: '2.11.0', variant: 'cu130', libc: 'glibc' });
    expect(parsePrebuildName('qwen3-torch.torch2.13.0.cpu.node')).toMatchObject({ version: '2.13.0', variant: 'cpu', libc: null });
    expect(parsePrebuildName('qwen3_torch_preload.so')).toBeNull();
    expect(parsePrebuildName('qwen3-torch.node')).toBeNull();
  });

  it('match only the same version, variant and C library', () => {
    const root = fakeRoot({
      'prebuilds/linux-x64/qwen3-torch.torch2.11.0.cu130.glibc.node': crasher,
      'prebuilds/linux-x64/qwen3-torch.torch2.13.0.cpu.musl.node': crasher,
      'prebuilds/linux-x64/qwen3-torch.torch2.13.0.cpu.glibc.node': crasher,
      'prebuilds/linux-x64/notes.txt': crasher,
    });
    const all = listPrebuilds(root, 'linux', 'x64');
    expect(all.map((p) => p.file)).toHaveLength(3);
    expect(matchPrebuild(all, { version: '2.13.0', variant: 'cpu' }, 'glibc')?.file).toBe('qwen3-torch.torch2.13.0.cpu.glibc.node');
    expect(matchPrebuild(all, { version: '2.13.0', variant: 'cpu' }, 'musl')?.file).toBe('qwen3-torch.torch2.13.0.cpu.musl.node');
    expect(matchPrebuild(all, { version: '2.11.0', variant: 'cu130' }, 'glibc')?.file).toBe('qwen3-torch.torch2.11.0.cu130.glibc.node');
    expect(matchPrebuild(all, { version: '2.11.0', variant: 'cu128' }, 'glibc')).toBeUndefined();
    expect(matchPrebuild(all, { version: '2.12.0', variant: 'cpu' }, 'glibc')).toBeUndefined();
    expect(listPrebuilds(root, 'darwin', 'arm64')).toEqual([]);
  });
});

describe('libtorch discovery', () => {
  it("reads the torch found here (python3's or the .venv's): version, variant and its libraries in load order", () => {
    const lib = inspectLibtorch(found);
    expect(lib.problem).toBeNull();
    expect(lib.via).toMatch(/^(python: python3|project \.venv: .*\.venv)$/);
    expect(lib.version).toBe(torchVersion);
    expect(lib.variant).toBe(variant);
    const names = torchCuda ? ['libc10.so', 'libc10_cuda.so', 'libtorch_cpu.so', 'libtorch_cuda.so', 'libtorch.so'] : ['libc10.so', 'libtorch_cpu.so', 'libtorch.so'];
    expect(lib.libraries.map((p) => p.slice(lib.libdir.length + 1))).toEqual(names);
  });

  it('tells a CUDA libtorch zip by its build-version file, and opens the CUDA libraries after what they need', () => {
    const zip = join(work, 'libtorch-cu130');
    mkdirSync(join(zip, 'lib'), { recursive: true });
    for (const f of ['libc10.so', 'libc10_cuda.so', 'libtorch_cpu.so', 'libtorch_cuda.so', 'libtorch.so']) writeFileSync(join(zip, 'lib', f), '');
    writeFileSync(join(zip, 'build-version'), '2.11.0+cu130\n');
    const lib = inspectLibtorch({ root: zip, via: 'LIBTORCH' });
    expect(lib).toMatchObject({ version: '2.11.0', variant: 'cu130', cuda: true, cudaVersion: '13.0', problem: null });
    expect(lib.libraries.map((p) => p.slice(lib.libdir.length + 1))).toEqual(['libc10.so', 'libc10_cuda.so', 'libtorch_cpu.so', 'libtorch_cuda.so', 'libtorch.so']);
  });

  it('says what is wrong with a folder that is not libtorch', () => {
    expect(inspectLibtorch({ root: '/nowhere', via: 'LIBTORCH' }).problem).toBe('/nowhere does not exist');
    expect(inspectLibtorch({ root: work, via: 'LIBTORCH' }).problem).toMatch(/is not a libtorch folder \(no lib\/libtorch\.so\)/);
  });

  it('follows the build order: LIBTORCH, then Torch_DIR, then python3, then the project .venv', () => {
    const root = fakeRoot({});
    const torch = join(root, '.venv', 'lib', 'python3.11', 'site-packages', 'torch');
    mkdirSync(join(torch, 'lib'), { recursive: true });
    writeFileSync(join(torch, 'lib', 'libtorch.so'), '');
    expect(findLibtorch({ ...process.env, LIBTORCH: '/opt/a', Torch_DIR: '/opt/b/share/cmake/Torch' }, root)).toMatchObject({ root: '/opt/a', explicit: true });
    expect(findLibtorch({ ...process.env, Torch_DIR: '/opt/b/share/cmake/Torch' }, root)).toMatchObject({ root: '/opt/b', explicit: true });
    // python3's torch comes before the .venv's; with none on PATH, the .venv is found on disk.
    const python3HasTorch = spawnSync('python3', ['-c', 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)']).status === 0;
    expect(findLibtorch({ PATH: process.env.PATH }, root)?.via).toBe(python3HasTorch ? 'python: python3' : `project .venv: ${join(root, '.venv')}`);
    expect(findLibtorch({ PATH: '/nonexistent' }, root)).toEqual({ root: torch, via: `project .venv: ${join(root, '.venv')}`, explicit: false, python: join(root, '.venv', 'bin', 'python') });
    expect(findLibtorch({ PATH: '/nonexistent' }, fakeRoot({}))).toBeNull();
  });
});

describe('choosing the binary', () => {
  it('takes the prebuild whose tag matches the libtorch found, with the preload helper beside it', () => {
    const root = fakeRoot({ [`prebuilds/linux-x64/qwen3-torch.${tag}.glibc.node`]: localBuild, 'prebuilds/linux-x64/qwen3_torch_preload.so': helper });
    const choice = chooseAddon({ root, env: env() });
    expect(choice.kind).toBe('prebuild');
    expect(choice.step.addon).toBe(join(root, 'prebuilds', 'linux-x64', `qwen3-torch.${tag}.glibc.node`));
    expect(choice.step.helper).toBe(join(root, 'prebuilds', 'linux-x64', 'qwen3_torch_preload.so'));
    expect(choice.step.libraries.at(-1)).toBe(join(torchRoot, 'lib', 'libtorch.so'));
    expect(choice.reason).toBe(`prebuilt for libtorch ${torchVersion} ${variant}, which matches the libtorch found (${via})`);
    expect(choice.libtorch.root).toBe(torchRoot);
  });

  it('prefers a local build made for the libtorch found over a prebuild, without touching the prebuild', () => {
    const root = fakeRoot({ 'build/Release/qwen3_torch.node': localBuild, [`prebuilds/linux-x64/qwen3-torch.${tag}.glibc.node`]: crasher });
    const choice = chooseAddon({ root, env: env() });
    expect(choice.kind).toBe('build');
    expect(choice.reason.startsWith(`compiled on this machine against libtorch ${torchVersion} at `)).toBe(true);
    expect(choice.reason.endsWith(`, the libtorch found (${via})`)).toBe(true);
    expect(choice.step.helper).toBeNull();
  });

  it('checks a binary in a child process: one that aborts on load is reported, not loaded', () => {
    const home = env();
    const root = fakeRoot({ [`prebuilds/linux-x64/qwen3-torch.${tag}.glibc.node`]: crasher, 'prebuilds/linux-x64/qwen3_torch_preload.so': helper });
    const error = errorOf(() => chooseAddon({ root, env: home }));
    expect(error).toBeInstanceOf(AddonLoadError);
    const message = error.message;
    expect(message).toContain(`prebuild qwen3-torch.${tag}.glibc.node: crashed with SIGABRT while loading`);
    expect(message).toContain('npm rebuild qwen3-torch');
    // nothing about the crashed binary was remembered as good
    expect(existsSync(join(home.QWEN3_HOME!, 'load-checks')) ? readdirSync(join(home.QWEN3_HOME!, 'load-checks')) : []).toEqual([]);
  });

  it('remembers a binary that loaded, so later starts skip the child process, until its libtorch changes', () => {
    const home = env();
    const root = fakeRoot({ 'build/Release/qwen3_torch.node': localBuild });
    chooseAddon({ root, env: home });
    const checks = readdirSync(join(home.QWEN3_HOME!, 'load-checks'));
    expect(checks).toHaveLength(1);
    const entryPath = join(home.QWEN3_HOME!, 'load-checks', checks[0]!);
    const entry = JSON.parse(readFileSync(entryPath, 'utf8'));
    expect(entry.built.torchVersion).toBe(torchVersion);
    // The next start believes the record (no child process would say 0.0.0)...
    writeFileSync(entryPath, JSON.stringify({ ...entry, built: { ...entry.built, torchVersion: '0.0.0' } }));
    expect(chooseAddon({ root, env: home }).built.torchVersion).toBe('0.0.0');
    // ...until the libtorch it ran on is no longer the one recorded (pip install -U torch): checked again.
    writeFileSync(entryPath, JSON.stringify({ ...entry, built: { ...entry.built, torchVersion: '0.0.0' }, libtorch: '[]' }));
    expect(chooseAddon({ root, env: home }).built.torchVersion).toBe(torchVersion);
    expect(JSON.parse(readFileSync(entryPath, 'utf8')).libtorch).toBe(entry.libtorch);
  });

  it('with no prebuild for this libtorch, names the versions that have one and the three fixes', () => {
    const root = fakeRoot({ 'prebuilds/linux-x64/qwen3-torch.torch9.9.0.cu130.glibc.node': crasher, 'prebuilds/linux-x64/qwen3_torch_preload.so': helper });
    const error = errorOf(() => chooseAddon({ root, env: env() }));
    expect(error).toBeInstanceOf(AddonLoadError);
    const message = error.message;
    expect(message).toContain(`libtorch:  libtorch ${torchVersion} ${variant} at ${torchRoot} (${via})`);
    expect(message).toContain('prebuilds: libtorch 9.9.0 cu130 (glibc)');
    expect(message).toContain(`no prebuild for libtorch ${torchVersion} ${variant}`);
    expect(message).toContain('pip install torch==9.9.0 --index-url https://download.pytorch.org/whl/cu130');
    expect(message).toContain('set LIBTORCH=/path/to/libtorch');
    expect(message).toContain('npm rebuild qwen3-torch');
  });

  it('refuses a LIBTORCH that points nowhere instead of falling back to another libtorch', () => {
    const root = fakeRoot({ 'build/Release/qwen3_torch.node': localBuild });
    expect(() => chooseAddon({ root, env: env({ LIBTORCH: '/nowhere' }) })).toThrow(/libtorch: {2}LIBTORCH=\/nowhere: \/nowhere does not exist/);
  });

  it('with no libtorch to be found, still uses a local build through its run path', () => {
    const root = fakeRoot({ 'build/Release/qwen3_torch.node': localBuild });
    const choice = chooseAddon({ root, env: env({ PATH: '/nonexistent' }) });
    expect(choice.kind).toBe('build');
    expect(choice.libtorch).toMatchObject({ root: torchRoot, via: 'the run path of the local build', version: torchVersion });
  });

  it('QWEN3_TORCH_ADDON forces one file, and a missing one is an error', () => {
    const root = fakeRoot({});
    expect(chooseAddon({ root, env: env({ QWEN3_TORCH_ADDON: localBuild }) })).toMatchObject({ kind: 'override', step: { addon: localBuild } });
    expect(() => chooseAddon({ root, env: env({ QWEN3_TORCH_ADDON: join(work, 'missing.node') }) })).toThrow(/QWEN3_TORCH_ADDON=.*missing\.node: no such file/);
  });
});

describe('what npm install does', () => {
  const withPrebuild = () => fakeRoot({ [`prebuilds/linux-x64/qwen3-torch.${tag}.glibc.node`]: crasher });

  it('uses a matching prebuild and compiles nothing', () => {
    const plan = planInstall({ root: withPrebuild(), env: env() });
    expect(plan.action).toBe('prebuild');
    expect(plan.message).toContain('nothing to compile');
  });

  it('builds from source with cmake-js when no prebuild matches, and says so', () => {
    const plan = planInstall({ root: fakeRoot({ 'prebuilds/linux-x64/qwen3-torch.torch9.9.0.cu130.glibc.node': crasher }), env: env() });
    expect(plan.action).toBe('build');
    expect(plan.message).toBe(`no prebuilt addon for the libtorch ${torchVersion} ${variant} at ${torchRoot} (${via}; prebuilds: libtorch 9.9.0 cu130); building from source with cmake-js`);
  });

  it('builds when QWEN3_TORCH_BUILD_FROM_SOURCE=1 or npm rebuild asks, even with a matching prebuild', () => {
    expect(planInstall({ root: withPrebuild(), env: env({ QWEN3_TORCH_BUILD_FROM_SOURCE: '1' }) })).toMatchObject({ action: 'build', message: expect.stringContaining('building from source with cmake-js (QWEN3_TORCH_BUILD_FROM_SOURCE=1)') });
    expect(planInstall({ root: withPrebuild(), env: env({ npm_command: 'rebuild' }) })).toMatchObject({ action: 'build', message: expect.stringContaining('(npm rebuild)') });
  });

  it('without libtorch, succeeds with the fixes, unless a source build was asked for', () => {
    const none = planInstall({ root: withPrebuild(), env: { PATH: '/nonexistent' } });
    expect(none.action).toBe('none');
    expect(none.message).toContain(`pip install torch==${torchVersion} --index-url https://download.pytorch.org/whl/${variant}`);
    const forced = planInstall({ root: withPrebuild(), env: { PATH: '/nonexistent', QWEN3_TORCH_BUILD_FROM_SOURCE: '1' } });
    expect(forced.action).toBe('fail');
    expect(forced.message).toMatch(/^cannot build from source \(QWEN3_TORCH_BUILD_FROM_SOURCE=1\)/);
  });
});
