// Device choice (the book's get_device), TF32 control and device memory statistics.
import { z } from 'zod';
import { native } from './native.js';
import { InvalidOptionError, boolean, parseOptions } from './validate.js';

export type DeviceName = 'cpu' | 'cuda' | 'mps' | 'xpu' | `cuda:${number}` | `xpu:${number}`;

const DEVICE_PATTERN = /^(auto|cpu|mps|cuda(:\d+)?|xpu(:\d+)?)$/;

/** Devices this libtorch build can use on this machine, best first. */
export function availableDevices(): DeviceName[] {
  const d = native().devices();
  const out: DeviceName[] = [];
  for (let i = 0; i < d.cudaCount; i++) out.push(i === 0 ? 'cuda' : `cuda:${i}`);
  if (d.mps) out.push('mps');
  for (let i = 0; i < d.xpuCount; i++) out.push(i === 0 ? 'xpu' : `xpu:${i}`);
  out.push('cpu');
  return out;
}

/**
 * Resolves "auto" (cuda > mps > xpu > cpu) and checks a named device exists, with an error that
 * says what is available instead.
 */
export function resolveDevice(device: unknown = 'auto', option = 'device'): DeviceName {
  if (typeof device !== 'string' || !DEVICE_PATTERN.test(device)) {
    throw new InvalidOptionError(
      `Expected one of "auto", "cpu", "cuda", "cuda:N", "mps", "xpu" for ${option} but received ${JSON.stringify(device)}`,
      option,
    );
  }
  const available = availableDevices();
  if (device === 'auto') return available[0]!;
  const canonical = device.replace(/:0$/, '') as DeviceName;
  if (!available.includes(canonical)) {
    const info = native().buildInfo();
    const why = device.startsWith('cuda') && !info.cuda ? ` (this addon was built against a CPU-only libtorch ${info.torchVersion})` : '';
    throw new InvalidOptionError(
      `Device "${device}" is not available${why}; available: ${available.join(', ')}`,
      option,
    );
  }
  return canonical;
}

const getDeviceSchema = z.object({ enableTensorCores: boolean().optional() }).strict();

/**
 * The book's get_device(): the best available device, with TF32 tensor cores for float32
 * matrix products on CUDA switched on when `enableTensorCores` is true (off when false).
 */
export function getDevice(options: { enableTensorCores?: boolean } = {}): DeviceName {
  const { enableTensorCores } = parseOptions(getDeviceSchema, options);
  const device = resolveDevice('auto');
  if (enableTensorCores !== undefined) native().setTensorCores(enableTensorCores);
  return device;
}

export function setTensorCores(enabled: boolean): void {
  parseOptions(boolean(), enabled, 'enabled');
  native().setTensorCores(enabled);
}

export interface MemoryStats {
  currentBytes: number;
  peakBytes: number | null;
}

/** A concrete device name ("auto" is resolved first); libtorch's own parser never sees a bad one. */
function checkDeviceName(device: unknown): DeviceName {
  if (typeof device !== 'string' || device === 'auto' || !DEVICE_PATTERN.test(device)) {
    throw new InvalidOptionError(`Expected one of "cpu", "cuda", "cuda:N", "mps", "xpu", "xpu:N" for device but received ${JSON.stringify(device)}`, 'device');
  }
  return device as DeviceName;
}

/** Device memory held by tensors now and at the peak since the last reset; null on CPU. */
export function memoryStats(device: DeviceName): MemoryStats | null {
  return native().memoryStats(checkDeviceName(device));
}

export function resetPeakMemory(device: DeviceName): void {
  native().resetPeakMemory(checkDeviceName(device));
}
