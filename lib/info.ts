// What `qwen3 info` reports: the addon, the libtorch it was built against and the devices it sees.
import { availableDevices } from './device.js';
import { native, nativeBindingPath } from './native.js';

export interface RuntimeInfo {
  version: string;
  addon: { path: string | undefined; napiVersion: number };
  libtorch: { version: string; root: string; foundVia: string; cuda: boolean; cudaVersion: string | null };
  devices: string[];
  cudaDevices: string[];
  tensorCores: boolean;
  node: string;
  platform: string;
}

export function runtimeInfo(): RuntimeInfo {
  const b = native().buildInfo();
  const d = native().devices();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pkg = require('../package.json') as { version: string };
  return {
    version: pkg.version,
    addon: { path: nativeBindingPath(), napiVersion: b.napiVersion },
    libtorch: { version: b.torchVersion, root: b.torchRoot, foundVia: b.torchSource, cuda: b.cuda, cudaVersion: b.cudaVersion },
    devices: availableDevices(),
    cudaDevices: d.cudaNames,
    tensorCores: native().tensorCoresEnabled(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}
