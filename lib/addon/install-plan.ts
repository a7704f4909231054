// What `npm install` of the package does (scripts/install/install.js carries it out): use a
// prebuild made for the libtorch found, compile from source, or wait for first use when there is
// no libtorch yet. What it did is kept in build/install.json for `qwen3 info`, because npm hides
// install output.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type LoadOptions, loadErrorMessage } from './choose.js';
import { type LibtorchFacts, describeLibtorch, inspectLibtorch, searchLibtorch } from './libtorch.js';
import { type Prebuild, hostLibc, listPrebuilds, matchPrebuild } from './prebuilds.js';

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
  const search = searchLibtorch(env, options.root);
  const lib = search.found ? inspectLibtorch(search.found, platform) : null;
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
  if (forced) return { action: 'build', libtorch: lib, message: `building from source with cmake-js (${forced}) against ${describeLibtorch(lib)} at ${lib.root} (${lib.via})` };
  const match = matchPrebuild(prebuilds, lib, hostLibc(platform));
  if (match) return { action: 'prebuild', prebuild: match, libtorch: lib, message: `using the prebuilt addon ${match.file} for the ${describeLibtorch(lib)} at ${lib.root} (${lib.via}); nothing to compile` };
  const shipped = prebuilds.length ? prebuilds.map((p) => describeLibtorch(p)).join(', ') : `none for ${platform}-${arch}`;
  return {
    action: 'build',
    libtorch: lib,
    message: `no prebuilt addon for the ${describeLibtorch(lib)} at ${lib.root} (${lib.via}; prebuilds: ${shipped}); building from source with cmake-js`,
  };
}

/** What the install script did, as `qwen3 info` shows it. */
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
