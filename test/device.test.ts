// Device choice, TF32 control and memory statistics.
import { describe, expect, it } from 'vitest';
import { availableDevices, getDevice, memoryStats, resolveDevice, runtimeInfo, setTensorCores } from '../lib/index.js';

describe('devices', () => {
  it('auto picks the best available device and cpu is always there', () => {
    const devices = availableDevices();
    expect(devices.at(-1)).toBe('cpu');
    expect(getDevice()).toBe(devices[0]);
    expect(resolveDevice('auto')).toBe(devices[0]);
    expect(resolveDevice('cpu')).toBe('cpu');
  });

  it('enableTensorCores switches TF32 for CUDA float32 matmuls on and off', () => {
    getDevice({ enableTensorCores: true });
    expect(runtimeInfo().tensorCores).toBe(true);
    getDevice({ enableTensorCores: false });
    expect(runtimeInfo().tensorCores).toBe(false);
    setTensorCores(true);
    expect(runtimeInfo().tensorCores).toBe(true);
    setTensorCores(false);
    expect(() => getDevice({ enableTensorCores: 'yes' as never })).toThrow('Expected boolean for enableTensorCores but received "yes"');
    expect(() => getDevice({ tensorCores: true } as never)).toThrow('Unknown option tensorCores');
  });

  it('memory statistics are null on the CPU and numbers on CUDA', () => {
    expect(memoryStats('cpu')).toBeNull();
    if (availableDevices()[0]!.startsWith('cuda')) {
      const stats = memoryStats('cuda')!;
      expect(stats.currentBytes).toBeGreaterThanOrEqual(0);
      expect(stats.peakBytes).toBeGreaterThanOrEqual(stats.currentBytes);
    }
  });
});
