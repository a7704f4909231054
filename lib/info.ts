// What `qwen3 info` reports: which addon binary was loaded and why, the libtorch it runs on, how
// the package was installed, and the devices it sees.
import { type AddonKind, type InstallRecord, readInstallRecord } from './addon/index.js';
import { availableDevices } from './device.js';
import { native, nativeLoadReport, packageRoot } from './native.js';

export interface RuntimeInfo {
  version: string;
  addon: {
    path: string | undefined;
    napiVersion: number;
    /** "prebuild" (shipped in the package), "build" (compiled on this machine) or "override" (QWEN3_TORCH_ADDON). */
    kind: AddonKind | undefined;
    /** Why this binary was chosen. */
    reason: string | undefined;
    builtAgainst: { version: string; root: string; cuda: boolean; cudaVersion: string | null };
  };
  /** The libtorch the addon runs on and how it was found. */
  libtorch: { version: string; root: string; foundVia: string; variant: string; cuda: boolean; cudaVersion: string | null };
  /** What `npm install` did (build/install.json), null in a development checkout. */
  install: InstallRecord | null;
  devices: string[];
  cudaDevices: string[];
  tensorCores: boolean;
  node: string;
  platform: string;
}

export function runtimeInfo(): RuntimeInfo {
  const b = native().buildInfo();
  const d = native().devices();
  const r = nativeLoadReport();
  const pkg = require('../package.json') as { version: string };
  return {
    version: pkg.version,
    addon: {
      path: r?.addon.path,
      napiVersion: b.napiVersion,
      kind: r?.addon.kind,
      reason: r?.addon.reason,
      builtAgainst: { version: b.torchVersion, root: b.torchRoot, cuda: b.cuda, cudaVersion: b.cudaVersion },
    },
    libtorch: {
      version: r?.libtorch.version ?? b.torchVersion,
      root: r?.libtorch.root ?? b.torchRoot,
      foundVia: r?.libtorch.via ?? b.torchSource,
      variant: r?.libtorch.variant ?? (b.cuda ? 'cuda' : 'cpu'),
      cuda: r?.libtorch.cuda ?? b.cuda,
      cudaVersion: r?.libtorch.cudaVersion ?? b.cudaVersion,
    },
    install: readInstallRecord(packageRoot),
    devices: availableDevices(),
    cudaDevices: d.cudaNames,
    tensorCores: native().tensorCoresEnabled(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}

/** The human-readable form of runtimeInfo(), as `qwen3 info` prints it. */
export function formatRuntimeInfo(info: RuntimeInfo): string {
  const lib = info.libtorch;
  const lines = [
    `qwen3-torch ${info.version} on ${info.platform}, Node ${info.node}`,
    `addon:    ${info.addon.path} (${info.addon.kind ?? 'addon'}, Node-API ${info.addon.napiVersion})`,
    ...(info.addon.reason ? [`          ${info.addon.reason}`] : []),
    `libtorch: ${lib.version}${lib.cuda ? ` with CUDA ${lib.cudaVersion ?? ''}` : ' (CPU only)'}`,
    `          ${lib.root} (found via ${lib.foundVia})`,
    ...(info.install ? [`install:  ${info.install.message} (${info.install.seconds.toFixed(1)} s)`] : []),
    `devices:  ${info.devices.join(', ')}${info.cudaDevices.length ? ` (${info.cudaDevices.join(', ')})` : ''}`,
  ];
  return lines.join('\n');
}
