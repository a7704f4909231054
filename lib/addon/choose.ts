// Which native binary to load. libtorch's C++ ABI changes between releases, so a binary only
// works with the libtorch version and variant (cpu, cu130, ...) it was built against. The
// loader finds libtorch (libtorch.ts), then takes, in this order:
//   1. QWEN3_TORCH_ADDON, when set: that file and nothing else;
//   2. a local build (build/Release, compiled on this machine) made for the libtorch found, or
//      with no libtorch found, since it remembers its own through its run path;
//   3. the prebuild whose tag matches the libtorch found, after opening that libtorch's libraries
//      by path (prebuilds have no run path, so no LD_LIBRARY_PATH is needed);
//   4. a local build made for another libtorch, which then uses its own;
// else it throws an error that lists what it found and the ways to fix it. Each candidate is
// checked in a child process first (probe.ts).
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type LibtorchFacts, describeLibtorch, inspectLibtorch, searchLibtorch } from './libtorch.js';
import { type Prebuild, helperName, hostLibc, listPrebuilds, matchPrebuild, pipCommand, preloadHelperFor } from './prebuilds.js';
import { type BuiltAgainst, type LoadStep, loadStep, probe } from './probe.js';

export type AddonKind = 'build' | 'prebuild' | 'override';

export interface LoadReport {
  addon: { path: string; kind: AddonKind; reason: string };
  /** The libtorch the addon runs on. */
  libtorch: { root: string; via: string; version: string; variant: string; cuda: boolean; cudaVersion: string | null };
  builtAgainst: BuiltAgainst;
}

export interface LoadOptions {
  /** Package root (holds build/, prebuilds/ and, in a checkout, the project's .venv). */
  root: string;
  env?: NodeJS.ProcessEnv;
  platform?: NodeJS.Platform;
  arch?: string;
}

export interface AddonChoice {
  step: LoadStep;
  kind: AddonKind;
  reason: string;
  built: BuiltAgainst;
  libtorch: LoadReport['libtorch'];
}

/** The addon could not be loaded; the message lists what was found and the fixes. */
export class AddonLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AddonLoadError';
  }
}

/** What a choice starts from, and what each rejected candidate said (for the error message). */
interface Survey {
  root: string;
  platform: string;
  arch: string;
  env: NodeJS.ProcessEnv;
  /** The environment for the load checks: on Windows, libtorch's lib folder first on PATH. */
  probeEnv: NodeJS.ProcessEnv;
  lib: LibtorchFacts | null;
  /** `lib` when it is a usable libtorch. */
  usable: LibtorchFacts | null;
  tried: string[];
  prebuilds: Prebuild[];
  findings: string[];
}

function survey(options: LoadOptions): Survey {
  const env = options.env ?? process.env;
  const platform = options.platform ?? process.platform;
  const arch = options.arch ?? process.arch;
  const search = searchLibtorch(env, options.root);
  const lib = search.found ? inspectLibtorch(search.found, platform) : null;
  const usable = lib && !lib.problem ? lib : null;
  // Windows has no run path: a DLL's own dependencies are looked up on PATH, which is read at
  // every load, so libtorch's lib folder goes first on it for the checks and for the real load.
  const probeEnv = platform === 'win32' && usable ? { ...env, PATH: `${usable.libdir};${env.PATH ?? ''}` } : env;
  return { root: options.root, platform, arch, env, probeEnv, lib, usable, tried: search.tried, prebuilds: listPrebuilds(options.root, platform, arch), findings: [] };
}

function variantOf(built: BuiltAgainst): string {
  if (!built.cuda) return 'cpu';
  const m = built.cudaVersion?.match(/^(\d+)\.(\d+)/);
  return m ? `cu${m[1]}${m[2]}` : 'cuda';
}

function sameLibtorch(built: BuiltAgainst, lib: LibtorchFacts): boolean {
  return built.torchVersion === lib.version && built.cuda === lib.cuda;
}

function ownLibtorch(built: BuiltAgainst): LoadReport['libtorch'] {
  return { root: built.torchRoot, via: 'the run path of the local build', version: built.torchVersion, variant: variantOf(built), cuda: built.cuda, cudaVersion: built.cudaVersion };
}

function foundLibtorch(lib: LibtorchFacts): LoadReport['libtorch'] {
  return { root: lib.root, via: lib.via, version: lib.version ?? 'unknown', variant: lib.variant ?? 'unknown', cuda: lib.cuda, cudaVersion: lib.cudaVersion };
}

/** Step 1: QWEN3_TORCH_ADDON names the one file to use; if it does not load, nothing else is tried. */
function overrideChoice(s: Survey, override: string): AddonChoice {
  const path = resolve(override);
  const helper = s.usable ? preloadHelperFor(path, s.root, s.platform) : null;
  const step = { addon: path, helper, libraries: helper && s.usable ? s.usable.libraries : [] };
  const r = existsSync(path) ? probe(step, s.probeEnv) : { ok: false as const, why: 'no such file' };
  if (!r.ok) {
    s.findings.push(`QWEN3_TORCH_ADDON=${override}: ${r.why}`);
    throw loadError(s);
  }
  const libtorch = helper && s.usable ? foundLibtorch(s.usable) : ownLibtorch(r.built);
  return { step, kind: 'override', reason: 'QWEN3_TORCH_ADDON names it', built: r.built, libtorch };
}

/** The local build (build/Release), if there is one that loads. */
function checkLocalBuild(s: Survey): AddonChoice | null {
  const path = join(s.root, 'build', 'Release', 'qwen3_torch.node');
  if (!existsSync(path)) return null;
  const step = { addon: path, helper: null, libraries: [] };
  const r = probe(step, s.probeEnv);
  if (!r.ok) {
    s.findings.push(`local build ${path}: ${r.why}`);
    return null;
  }
  const b = r.built;
  return { step, kind: 'build', reason: `compiled on this machine against libtorch ${b.torchVersion} at ${b.torchRoot}`, built: b, libtorch: ownLibtorch(b) };
}

/** Step 2: the local build, when it was made for the libtorch found or none was found. */
function localBuildForFound(s: Survey, local: AddonChoice): AddonChoice | null {
  if (!s.usable) return { ...local, reason: `${local.reason}; no other libtorch found, so it uses that one` };
  if (sameLibtorch(local.built, s.usable)) {
    const libtorch = { ...local.libtorch, via: s.usable.via, variant: s.usable.variant ?? local.libtorch.variant };
    return { ...local, reason: `${local.reason}, the libtorch found (${s.usable.via})`, libtorch };
  }
  s.findings.push(`local build: made for libtorch ${local.built.torchVersion} ${variantOf(local.built)}, not the ${describeLibtorch(s.usable)} found`);
  return null;
}

/** Step 3: the prebuild whose tag matches the libtorch found, with its preload helper. */
function matchingPrebuild(s: Survey): AddonChoice | null {
  if (!s.usable) return null;
  const match = matchPrebuild(s.prebuilds, s.usable, hostLibc(s.platform));
  if (!match) {
    s.findings.push(`no prebuild for ${describeLibtorch(s.usable)}`);
    return null;
  }
  const helper = preloadHelperFor(match.path, s.root, s.platform);
  if (!helper) {
    s.findings.push(`prebuild ${match.file}: its preload helper ${helperName(s.platform)} is missing`);
    return null;
  }
  const step = { addon: match.path, helper, libraries: s.usable.libraries };
  const r = probe(step, s.probeEnv);
  if (!r.ok) {
    s.findings.push(`prebuild ${match.file}: ${r.why}`);
    return null;
  }
  return { step, kind: 'prebuild', reason: `prebuilt for ${describeLibtorch(match)}, which matches the libtorch found (${s.usable.via})`, built: r.built, libtorch: foundLibtorch(s.usable) };
}

/** Step 4: a local build made for another libtorch, which it reaches through its run path. */
function localBuildOnItsOwn(s: Survey, local: AddonChoice): AddonChoice {
  return { ...local, reason: `${local.reason}; no binary loads with the ${describeLibtorch(s.usable!)} found (${s.usable!.via}), so it uses the libtorch it was built against` };
}

/** Decides which binary to load (checking each in a child process) without loading it here. */
export function chooseAddon(options: LoadOptions): AddonChoice {
  const s = survey(options);
  // An explicit LIBTORCH or Torch_DIR that is wrong is an error, never silently replaced.
  if (s.lib?.problem && s.lib.explicit) throw loadError(s);
  const override = s.env.QWEN3_TORCH_ADDON;
  if (override) return overrideChoice(s, override);
  const local = checkLocalBuild(s);
  const choice = (local && localBuildForFound(s, local)) ?? matchingPrebuild(s) ?? (local && localBuildOnItsOwn(s, local));
  if (!choice) throw loadError(s);
  return choice;
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

function loadError(s: Survey): AddonLoadError {
  return new AddonLoadError(loadErrorMessage(s));
}

/** What was found (libtorch, prebuilds, each rejected candidate) and the three ways to fix it. */
export function loadErrorMessage(o: Pick<Survey, 'root' | 'platform' | 'arch' | 'lib' | 'tried' | 'prebuilds' | 'findings'>): string {
  const { lib, prebuilds } = o;
  const devCheckout = existsSync(join(o.root, 'lib', 'native.ts'));
  const libtorchLine = !lib ? `not found (${o.tried.join('; ')})` : lib.problem ? `${lib.via}: ${lib.problem}` : `${describeLibtorch(lib)} at ${lib.root} (${lib.via})`;
  const prebuildLine = prebuilds.length ? prebuilds.map((p) => `${describeLibtorch(p)}${p.libc ? ` (${p.libc})` : ''}`).join(', ') : `none for ${o.platform}-${o.arch}`;
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
      ? '  3. compile the addon against the libtorch you have: npm run build (needs cmake and a C++20 compiler; with no libtorch, it installs one into .venv)'
      : '  3. compile the addon against the libtorch you have: npm rebuild qwen3-torch (needs cmake and a C++20 compiler)',
  ];
  return lines.join('\n');
}
