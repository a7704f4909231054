// Which native binary to load, and loading it safely. libtorch's C++ ABI changes between
// releases, so a binary only works with the libtorch version and variant (cpu, cu130, ...) it was
// built against. The loader finds libtorch in the build's order (LIBTORCH, Torch_DIR, python3's
// torch), then takes, in this order:
//   1. QWEN3_TORCH_ADDON, when set: that file and nothing else;
//   2. a local build (build/Release, compiled on this machine) made for the libtorch found, or
//      with no libtorch found, since it remembers its own through its run path;
//   3. the prebuild whose tag matches the libtorch found, after opening that libtorch's libraries
//      by path (prebuilds have no run path, so no LD_LIBRARY_PATH is needed);
//   4. a local build made for another libtorch, which then uses its own;
// else it throws an error that lists what it found and the ways to fix it. Every binary is first
// loaded in a child process: one that crashes on load (an ABI mismatch can abort) cannot take the
// caller's process down. A binary that passed is remembered by size, time and path, so the child
// runs once per binary and libtorch, not at every start.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

/** What scripts/find-libtorch.js says about a libtorch folder. */
export interface LibtorchFacts {
  root: string;
  via: string;
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

interface FindLibtorch {
  searchLibtorch(env: NodeJS.ProcessEnv): { found: { root: string; via: string } | null; tried: string[] };
  inspectLibtorch(found: { root: string; via: string }, platform?: string): LibtorchFacts;
  prebuildTag(info: { version: string | null; variant: string | null }): string;
  libraryNames(platform?: string): string[];
}
// Plain JS shared with binding.gyp and the install script; one level up from lib/ and dist/ alike.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const finder = require('../scripts/find-libtorch.js') as FindLibtorch;

/** What the addon's buildInfo() says about the libtorch it was compiled against. */
export interface BuiltAgainst {
  torchVersion: string;
  torchRoot: string;
  torchSource: string;
  cuda: boolean;
  cudaVersion: string | null;
  napiVersion: number;
}

export interface Prebuild {
  path: string;
  file: string;
  version: string;
  variant: string;
  libc: string | null;
}

export type AddonKind = 'build' | 'prebuild' | 'override';

export interface LoadReport {
  addon: { path: string; kind: AddonKind; reason: string };
  /** The libtorch the addon runs on. */
  libtorch: { root: string; via: string; version: string; variant: string; cuda: boolean; cudaVersion: string | null };
  builtAgainst: BuiltAgainst;
}

export interface LoadOptions {
  /** Package root (holds build/ and prebuilds/). */
  root: string;
  env?: NodeJS.ProcessEnv;
  platform?: NodeJS.Platform;
  arch?: string;
}

/** The addon could not be loaded; the message lists what was found and the fixes. */
export class AddonLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AddonLoadError';
  }
}

const PREBUILD_NAME = /^qwen3-torch\.torch(\d+\.\d+\.\d+)\.([a-z][a-z0-9]*)(?:\.(glibc|musl))?\.node$/;

/** qwen3-torch.torch2.13.0.cpu.glibc.node -> { version: 2.13.0, variant: cpu, libc: glibc }. */
export function parsePrebuildName(file: string): Omit<Prebuild, 'path'> | null {
  const m = PREBUILD_NAME.exec(file);
  return m ? { file, version: m[1]!, variant: m[2]!, libc: m[3] ?? null } : null;
}

export function prebuildDir(root: string, platform: string = process.platform, arch: string = process.arch): string {
  return join(root, 'prebuilds', `${platform}-${arch}`);
}

export function listPrebuilds(root: string, platform: string = process.platform, arch: string = process.arch): Prebuild[] {
  const dir = prebuildDir(root, platform, arch);
  let files: string[];
  try {
    files = readdirSync(dir).sort();
  } catch {
    return [];
  }
  return files.flatMap((file) => {
    const p = parsePrebuildName(file);
    return p ? [{ ...p, path: join(dir, file) }] : [];
  });
}

/** glibc or musl on Linux, null elsewhere. */
export function hostLibc(platform: string = process.platform): 'glibc' | 'musl' | null {
  if (platform !== 'linux') return null;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return header?.glibcVersionRuntime ? 'glibc' : 'musl';
}

/** The prebuild made for this libtorch's version and variant (and this C library), if any. */
export function matchPrebuild(prebuilds: Prebuild[], lib: Pick<LibtorchFacts, 'version' | 'variant'>, libc: string | null): Prebuild | undefined {
  return prebuilds.find((p) => p.version === lib.version && p.variant === lib.variant && (p.libc === null || p.libc === libc));
}

function helperName(platform: string): string {
  return `qwen3_torch_preload.${platform === 'win32' ? 'dll' : platform === 'darwin' ? 'dylib' : 'so'}`;
}

/** The preload helper beside `addon`, else the local build's. */
export function preloadHelperFor(addon: string, root: string, platform: string = process.platform): string | null {
  const candidates = [join(addon, '..', helperName(platform)), join(root, 'build', 'Release', helperName(platform))];
  return candidates.find((p) => existsSync(p)) ?? null;
}

export interface LoadStep {
  addon: string;
  /** Preload helper and the libraries it opens first; null to rely on the addon's run path. */
  helper: string | null;
  libraries: string[];
}

// Runs in the child: the same steps as loadStep() below, then prints what the addon was built against.
const PROBE_SOURCE = `
const step = JSON.parse(process.argv[1]);
if (step.helper) {
  const m = { exports: {} };
  process.dlopen(m, step.helper);
  for (const lib of step.libraries) m.exports.open(lib);
}
process.stdout.write(JSON.stringify(require(step.addon).buildInfo()));
`;

function loadStep(step: LoadStep): unknown {
  if (step.helper) {
    const m = { exports: {} as { open(path: string): void } };
    process.dlopen(m, step.helper);
    for (const lib of step.libraries) m.exports.open(lib);
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(step.addon);
}

type ProbeResult = { ok: true; built: BuiltAgainst } | { ok: false; why: string };

function cacheDir(env: NodeJS.ProcessEnv): string {
  return join(env.QWEN3_HOME || join(homedir(), '.cache', 'qwen3-torch'), 'load-checks');
}

function stamp(path: string): [string, number, number, number] {
  const s = statSync(path);
  return [resolve(path), s.size, s.mtimeMs, s.ino];
}

/** Identifies a binary and the libraries it is loaded with: any rebuild or reinstall changes it. */
function fingerprint(step: LoadStep): string | null {
  try {
    const files = [step.addon, ...(step.helper ? [step.helper] : []), ...step.libraries].map(stamp);
    return createHash('sha256').update(JSON.stringify([process.version, files])).digest('hex').slice(0, 32);
  } catch {
    return null;
  }
}

/**
 * The libtorch libraries a binary was found to run on. A local build reaches them through its
 * run path, which the fingerprint cannot see: `pip install -U torch` replaces them in place, and
 * the binary must then be checked again before it is loaded here.
 */
function runtimeStamps(built: BuiltAgainst): string {
  const libdir = join(built.torchRoot, 'lib');
  return JSON.stringify(finder.libraryNames(process.platform).flatMap((n) => (existsSync(join(libdir, n)) ? [stamp(join(libdir, n))] : [])));
}

/** The first line of the child's error, e.g. "…/qwen3_torch.node: undefined symbol: _ZN3c10…". */
function childError(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const line = lines.find((l) => /^\w*Error( \[\w+\])?:/.test(l)) ?? lines.at(-1) ?? 'no output';
  return line.replace(/^\w*Error( \[\w+\])?: /, '');
}

/** Loads `step` in a child process; caches success. */
export function probe(step: LoadStep, env: NodeJS.ProcessEnv = process.env): ProbeResult {
  const key = fingerprint(step);
  const cached = key ? join(cacheDir(env), `${key}.json`) : null;
  if (cached) {
    try {
      const entry = JSON.parse(readFileSync(cached, 'utf8')) as { built: BuiltAgainst; libtorch: string };
      if (entry.libtorch === runtimeStamps(entry.built)) return { ok: true, built: entry.built };
    } catch {
      // not checked yet, or its libtorch changed since
    }
  }
  const childEnv = { ...env };
  delete childEnv.NODE_OPTIONS; // the check is about the binary, not the caller's flags
  const r = spawnSync(process.execPath, ['-e', PROBE_SOURCE, JSON.stringify(step)], { encoding: 'utf8', env: childEnv, timeout: 120_000 });
  if (r.error) return { ok: false, why: `could not run the load check: ${r.error.message}` };
  if (r.signal) return { ok: false, why: `crashed with ${r.signal} while loading${r.stderr.trim() ? ` (${childError(r.stderr)})` : ''}` };
  if (r.status !== 0) return { ok: false, why: childError(r.stderr) };
  let built: BuiltAgainst;
  try {
    built = JSON.parse(r.stdout) as BuiltAgainst;
  } catch {
    return { ok: false, why: `loaded but printed ${JSON.stringify(r.stdout.slice(0, 200))} instead of its build info` };
  }
  if (cached) {
    try {
      mkdirSync(join(cached, '..'), { recursive: true });
      const tmp = `${cached}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify({ built, libtorch: runtimeStamps(built) }));
      renameSync(tmp, cached);
    } catch {
      // an unwritable cache only costs the next start another check
    }
  }
  return { ok: true, built };
}

function variantOf(built: BuiltAgainst): string {
  if (!built.cuda) return 'cpu';
  const m = built.cudaVersion?.match(/^(\d+)\.(\d+)/);
  return m ? `cu${m[1]}${m[2]}` : 'cuda';
}

function sameLibtorch(built: BuiltAgainst, lib: LibtorchFacts): boolean {
  return built.torchVersion === lib.version && built.cuda === lib.cuda;
}

function describeLib(lib: Pick<LibtorchFacts, 'version' | 'variant'>): string {
  return `libtorch ${lib.version ?? '(unknown version)'} ${lib.variant ?? ''}`.trim();
}

export interface AddonChoice {
  step: LoadStep;
  kind: AddonKind;
  reason: string;
  built: BuiltAgainst;
  libtorch: LoadReport['libtorch'];
}

function ownLibtorch(built: BuiltAgainst): LoadReport['libtorch'] {
  return {
    root: built.torchRoot,
    via: 'the run path of the local build',
    version: built.torchVersion,
    variant: variantOf(built),
    cuda: built.cuda,
    cudaVersion: built.cudaVersion,
  };
}

function foundLibtorch(lib: LibtorchFacts): LoadReport['libtorch'] {
  return { root: lib.root, via: lib.via, version: lib.version ?? 'unknown', variant: lib.variant ?? 'unknown', cuda: lib.cuda, cudaVersion: lib.cudaVersion };
}

/** Decides which binary to load (checking each in a child process) without loading it here. */
export function chooseAddon(options: LoadOptions): AddonChoice {
  const env = options.env ?? process.env;
  const platform = options.platform ?? process.platform;
  const arch = options.arch ?? process.arch;
  const root = options.root;
  const search = finder.searchLibtorch(env);
  const lib = search.found ? finder.inspectLibtorch(search.found, platform) : null;
  const usable = lib && !lib.problem ? lib : null;
  // Windows has no run path: a DLL's own dependencies are looked up on PATH, which is read at
  // every load, so libtorch's lib folder goes first on it for the checks and for the real load.
  const dllDir = platform === 'win32' && usable ? usable.libdir : null;
  const probeEnv = dllDir ? { ...env, PATH: `${dllDir};${env.PATH ?? ''}` } : env;
  const prebuilds = listPrebuilds(root, platform, arch);
  const findings: string[] = [];
  const fail = (): never => {
    throw new AddonLoadError(loadErrorMessage({ root, platform, arch, lib, tried: search.tried, prebuilds, findings }));
  };

  // An explicit LIBTORCH or Torch_DIR that is wrong is an error, never silently replaced.
  if (lib?.problem && !lib.via.startsWith('python')) return fail();

  const override = env.QWEN3_TORCH_ADDON;
  if (override) {
    const path = resolve(override);
    const helper = usable ? preloadHelperFor(path, root, platform) : null;
    const step = { addon: path, helper, libraries: helper && usable ? usable.libraries : [] };
    const r = existsSync(path) ? probe(step, probeEnv) : { ok: false as const, why: 'no such file' };
    if (!r.ok) {
      findings.push(`QWEN3_TORCH_ADDON=${override}: ${r.why}`);
      return fail();
    }
    return { step, kind: 'override', reason: 'QWEN3_TORCH_ADDON names it', built: r.built, libtorch: helper && usable ? foundLibtorch(usable) : ownLibtorch(r.built) };
  }

  const localPath = join(root, 'build', 'Release', 'qwen3_torch.node');
  let local: AddonChoice | null = null;
  if (existsSync(localPath)) {
    const step = { addon: localPath, helper: null, libraries: [] };
    const r = probe(step, probeEnv);
    if (r.ok) {
      const b = r.built;
      const reason = `compiled on this machine against libtorch ${b.torchVersion} at ${b.torchRoot}`;
      local = { step, kind: 'build', reason, built: b, libtorch: ownLibtorch(b) };
      if (!usable) return { ...local, reason: `${reason}; no other libtorch found, so it uses that one` };
      if (sameLibtorch(b, usable)) {
        return { ...local, reason: `${reason}, the libtorch found (${usable.via})`, libtorch: { ...local.libtorch, via: usable.via, variant: usable.variant ?? local.libtorch.variant } };
      }
      findings.push(`local build: made for libtorch ${b.torchVersion} ${variantOf(b)}, not the ${describeLib(usable)} found`);
    } else {
      findings.push(`local build ${localPath}: ${r.why}`);
    }
  }

  if (usable) {
    const match = matchPrebuild(prebuilds, usable, hostLibc(platform));
    if (match) {
      const helper = preloadHelperFor(match.path, root, platform);
      if (!helper) {
        findings.push(`prebuild ${match.file}: its preload helper ${helperName(platform)} is missing`);
      } else {
        const step = { addon: match.path, helper, libraries: usable.libraries };
        const r = probe(step, probeEnv);
        if (r.ok) {
          return { step, kind: 'prebuild', reason: `prebuilt for ${describeLib(match)}, which matches the libtorch found (${usable.via})`, built: r.built, libtorch: foundLibtorch(usable) };
        }
        findings.push(`prebuild ${match.file}: ${r.why}`);
      }
    } else {
      findings.push(`no prebuild for ${describeLib(usable)}`);
    }
  }

  if (local) {
    return { ...local, reason: `${local.reason}; no binary loads with the ${describeLib(usable!)} found (${usable!.via}), so it uses the libtorch it was built against` };
  }
  return fail();
}

/** Loads the addon chosen by chooseAddon() into this process. */
export function loadAddon<T>(options: LoadOptions): { binding: T; report: LoadReport } {
  const choice = chooseAddon(options);
  if ((options.platform ?? process.platform) === 'win32') {
    process.env.PATH = `${join(choice.libtorch.root, 'lib')};${process.env.PATH ?? ''}`;
  }
  let binding: T;
  try {
    binding = loadStep(choice.step) as T;
  } catch (err) {
    // It loaded in a fresh process; here something else already holds a different libtorch.
    throw new AddonLoadError(
      `could not load the qwen3-torch native addon ${choice.step.addon} in this process although it loads in a fresh one: ` +
        `${err instanceof Error ? err.message : String(err)}. Is another libtorch already loaded here (another addon, or a different LIBTORCH)?`,
    );
  }
  return {
    binding,
    report: { addon: { path: choice.step.addon, kind: choice.kind, reason: choice.reason }, libtorch: choice.libtorch, builtAgainst: choice.built },
  };
}

/** The pip command for a prebuild's libtorch. */
function pipCommand(p: Prebuild): string {
  return `pip install torch==${p.version} --index-url https://download.pytorch.org/whl/${p.variant}`;
}

function loadErrorMessage(o: {
  root: string;
  platform: string;
  arch: string;
  lib: LibtorchFacts | null;
  tried: string[];
  prebuilds: Prebuild[];
  findings: string[];
}): string {
  const { lib, prebuilds } = o;
  const devCheckout = existsSync(join(o.root, 'lib', 'native.ts'));
  const libtorchLine = !lib
    ? `not found (${o.tried.join('; ')})`
    : lib.problem
      ? `${lib.via}: ${lib.problem}`
      : `${describeLib(lib)} at ${lib.root} (${lib.via})`;
  const prebuildLine = prebuilds.length
    ? prebuilds.map((p) => `${describeLib(p)}${p.libc ? ` (${p.libc})` : ''}`).join(', ')
    : `none for ${o.platform}-${o.arch}`;
  const pips = [...new Set(prebuilds.map(pipCommand))];
  const lines = [
    'could not load the qwen3-torch native addon.',
    `  libtorch:  ${libtorchLine}`,
    `  prebuilds: ${prebuildLine}`,
    ...o.findings.map((f) => `  ${f}`),
    'Fix it one of these ways:',
    `  1. install PyTorch, whose torch/ folder is libtorch: ${pips.length ? pips.join('   or   ') : 'pip install torch'}`,
    '  2. download LibTorch (C++) from https://pytorch.org/get-started/locally/, unpack it and set LIBTORCH=/path/to/libtorch' +
      (prebuilds.length ? ` (version ${[...new Set(prebuilds.map((p) => `${p.version} ${p.variant}`))].join(' or ')} uses a prebuild)` : ''),
    devCheckout
      ? '  3. compile the addon against the libtorch you have: npm run build (needs cmake and a C++20 compiler)'
      : '  3. compile the addon against the libtorch you have: npm rebuild qwen3-torch (needs cmake and a C++20 compiler)',
  ];
  return lines.join('\n');
}

/** What `npm install` should do here: use a prebuild, compile, or nothing yet. */
export interface InstallPlan {
  action: 'prebuild' | 'build' | 'none' | 'fail';
  message: string;
  prebuild?: Prebuild;
  libtorch?: LibtorchFacts;
}

export function planInstall(options: LoadOptions): InstallPlan {
  const env = options.env ?? process.env;
  const platform = options.platform ?? process.platform;
  const arch = options.arch ?? process.arch;
  const search = finder.searchLibtorch(env);
  const lib = search.found ? finder.inspectLibtorch(search.found, platform) : null;
  const prebuilds = listPrebuilds(options.root, platform, arch);
  const forced = env.QWEN3_TORCH_BUILD_FROM_SOURCE === '1' ? 'QWEN3_TORCH_BUILD_FROM_SOURCE=1' : env.npm_command === 'rebuild' ? 'npm rebuild' : null;
  const missing = () =>
    loadErrorMessage({ root: options.root, platform, arch, lib, tried: search.tried, prebuilds, findings: [] }).replace(
      'could not load the qwen3-torch native addon.',
      'libtorch, which qwen3-torch runs on, is not here yet.',
    );
  if (!lib || lib.problem) {
    if (forced) return { action: 'fail', message: `cannot build from source (${forced}): ${missing()}` };
    return { action: 'none', message: `${missing()}\nNothing is compiled now; the addon is chosen when it is first used.` };
  }
  if (forced) return { action: 'build', libtorch: lib, message: `building from source with cmake-js (${forced}) against ${describeLib(lib)} at ${lib.root} (${lib.via})` };
  const match = matchPrebuild(prebuilds, lib, hostLibc(platform));
  if (match) return { action: 'prebuild', prebuild: match, libtorch: lib, message: `using the prebuilt addon ${match.file} for the ${describeLib(lib)} at ${lib.root} (${lib.via}); nothing to compile` };
  const shipped = prebuilds.length ? prebuilds.map((p) => describeLib(p)).join(', ') : `none for ${platform}-${arch}`;
  return {
    action: 'build',
    libtorch: lib,
    message: `no prebuilt addon for the ${describeLib(lib)} at ${lib.root} (${lib.via}; prebuilds: ${shipped}); building from source with cmake-js`,
  };
}

/** What the install script did, kept in build/install.json for `qwen3 info` (npm hides install output). */
export interface InstallRecord {
  action: InstallPlan['action'];
  message: string;
  seconds: number;
  date: string;
}

export function installRecordPath(root: string): string {
  return join(root, 'build', 'install.json');
}

export function readInstallRecord(root: string): InstallRecord | null {
  try {
    return JSON.parse(readFileSync(installRecordPath(root), 'utf8')) as InstallRecord;
  } catch {
    return null;
  }
}
