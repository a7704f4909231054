// The qwen3 command line, end to end, as a user runs it (compiled dist/cli.js).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadFixture } from './support/fixtures.js';

const CLI = join(__dirname, '..', 'dist', 'cli.js');
const qwen3 = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

describe('qwen3 info', () => {
  it('--json reports the libtorch the addon was built against and the devices', () => {
    const r = qwen3('info', '--json');
    expect(r.status).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.libtorch.version).toMatch(/^2\.\d+\.\d+/);
    expect(info.libtorch.root).toBeTruthy();
    expect(info.devices).toContain('cpu');
    expect(info.addon.path).toMatch(/qwen3_torch\.node$/);
  });

  it('prints a readable summary', () => {
    const r = qwen3('info');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/libtorch: 2\.\d+/);
    expect(r.stdout).toMatch(/devices: .*cpu/);
  });
});

describe('qwen3 generate', () => {
  const fx = loadFixture('tiny-gqa4');
  const base = ['generate', '--model', fx.modelPath, '--config', fx.configPath, '--prompt-ids', fx.prompt.join(','), '--device', 'cpu', '--dtype', 'float32', '--json'];

  it('prints the greedy ids Hugging Face produces, with stats', () => {
    const r = qwen3(...base, '--max-new-tokens', '20');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.ids).toEqual(fx.runs.float32.hf_greedy.slice(0, 20));
    expect(out.stats.device).toBe('cpu');
    expect(out.stats.seconds).toBeGreaterThan(0);
    expect(out.stats.tokensPerSecond).toBeGreaterThan(0);
    expect(out.stats.prefillSeconds).toBeGreaterThan(0);
    expect(out.stats.decodeTokensPerSecond).toBeGreaterThan(0);
    expect(out.stats.peakMemoryBytes).toBeNull();
  });

  it('--no-cache gives the same ids', () => {
    const r = qwen3(...base, '--max-new-tokens', '12', '--no-cache');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).ids).toEqual(fx.runs.float32.hf_greedy_nocache.slice(0, 12));
  });

  it('stops at --eos-token-id unless --ignore-eos', () => {
    const eos = fx.runs.float32.hf_greedy[4]!;
    const first = fx.runs.float32.hf_greedy.indexOf(eos);
    const stopped = JSON.parse(qwen3(...base, '--max-new-tokens', '20', '--eos-token-id', String(eos)).stdout);
    expect(stopped.ids).toEqual(fx.runs.float32.hf_greedy.slice(0, first));
    const ignored = JSON.parse(qwen3(...base, '--max-new-tokens', '20', '--eos-token-id', String(eos), '--ignore-eos').stdout);
    expect(ignored.ids).toHaveLength(20);
  });

  it('fails with a clear message and a non-zero exit code on bad input', () => {
    const cases: [string[], RegExp][] = [
      [['generate', '--model', 'nope.pth', '--size', '0.6B', '--prompt-ids', '1,2'], /Model file not found: nope\.pth/],
      [[...base, '--max-new-tokens', '0'], /Expected integer between 1 and 96 for maxNewTokens but received 0/],
      [[...base, '--max-new-tokens', 'ten'], /Expected integer for --max-new-tokens but received "ten"/],
      [['generate', '--model', fx.modelPath, '--config', fx.configPath, '--prompt-ids', '1,x'], /comma-separated token ids/],
      [['generate', '--model', fx.modelPath, '--config', fx.configPath, '--prompt-ids', '1,512', '--device', 'cpu'], /between 0 and 511 for token id/],
      [[...base, '--device', 'tpu'], /for device but received "tpu"/],
      [['generate', '--model', fx.modelPath, '--size', '7B', '--prompt-ids', '1'], /Allowed choices are 0\.6B/],
    ];
    for (const [args, message] of cases) {
      const r = qwen3(...args);
      expect(r.status, args.join(' ')).not.toBe(0);
      expect(r.stderr).toMatch(message);
    }
  });
});
