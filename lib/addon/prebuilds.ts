// The prebuilt binaries shipped in prebuilds/<platform>-<arch>/, named after the libtorch they
// were built for (qwen3-torch.torch2.13.0.cpu.glibc.node), and the preload helper beside them
// that opens that libtorch's libraries by path before a prebuild loads.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { LibtorchFacts } from './libtorch.js';

export interface Prebuild {
  path: string;
  file: string;
  version: string;
  variant: string;
  libc: string | null;
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

export function helperName(platform: string): string {
  return `qwen3_torch_preload.${platform === 'win32' ? 'dll' : platform === 'darwin' ? 'dylib' : 'so'}`;
}

/** The preload helper beside `addon`, else the local build's. */
export function preloadHelperFor(addon: string, root: string, platform: string = process.platform): string | null {
  const candidates = [join(addon, '..', helperName(platform)), join(root, 'build', 'Release', helperName(platform))];
  return candidates.find((p) => existsSync(p)) ?? null;
}

/** The pip command that installs the libtorch a prebuild was made for. */
export function pipCommand(p: Pick<Prebuild, 'version' | 'variant'>): string {
  return `pip install torch==${p.version} --index-url https://download.pytorch.org/whl/${p.variant}`;
}
